"""`pdasgd run` and `pdasgd profile`: outputs, files, one-line errors and Ctrl-C."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pdasgd import methods
from pdasgd.cli.main import main
from pdasgd.metrics import SUMMARY_KEYS
from pdasgd.scenario import load_scenario
from pdasgd.trace import Trace

SCENARIO = """
name = "digits-small"
method = "{method}"
[workers]
forward = 1
backward = 2
max_in_flight = 4
[train]
network = "mlp"
width = 32
depth = 2
dataset = "digits"
batch_size = 32
lr = {lr}
[run]
batches = {batches}
warmup = 2
"""


def write(tmp_path: Path, method: str = "async-lu", lr: float = 0.05, batches: int = 20) -> Path:
    path = tmp_path / "scenario.toml"
    path.write_text(SCENARIO.format(method=method, lr=lr, batches=batches))
    return path


def test_run_json_prints_the_summary_and_writes_the_traces(tmp_path, capsys) -> None:
    path = write(tmp_path)
    trace_path, chrome_path, gantt_path = tmp_path / "t.json", tmp_path / "c.json", tmp_path / "g.png"
    files = ["--trace", str(trace_path), "--chrome", str(chrome_path), "--gantt", str(gantt_path)]
    assert main(["run", str(path), "--json", *files]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert list(summary)[: len(SUMMARY_KEYS)] == list(SUMMARY_KEYS)
    assert summary["source"] == "executor" and summary["batches"] == 20
    assert 0 <= summary["accuracy"] <= 1 and summary["memory_peak_bytes"] > 0
    assert summary["accuracy_curve"][-1][0] == 20
    trace = Trace.load(trace_path)
    assert trace.method == "async-lu" and len(trace.spans) >= 20 * 3 * 3
    assert json.loads(chrome_path.read_text())["traceEvents"]
    assert gantt_path.read_bytes().startswith(b"\x89PNG")


def test_run_prints_a_table_with_the_baseline_speedup(tmp_path, capsys) -> None:
    assert main(["run", str(write(tmp_path)), "--baseline"]) == 0
    out = capsys.readouterr().out
    assert "throughput_batches_per_s" in out and "test accuracy" in out
    speedup = next(line for line in out.splitlines() if line.startswith("speedup_vs_sequential"))
    assert float(speedup.split()[-1]) > 0


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--checkpoint-every", "0"], "--checkpoint-every: must be >= 1, got 0"),
        (["--curve-points", "-1"], "--curve-points: must be >= 0"),
        (["--gantt-batches", "0"], "--gantt-batches: must be >= 1"),
    ],
)
def test_bad_flags_are_one_line_errors(tmp_path, capsys, argv, message) -> None:
    assert main(["run", str(write(tmp_path)), *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


def test_methods_outside_the_executor_are_one_line_errors(tmp_path, capsys) -> None:
    hogwild = methods.lookup("hogwild")
    only = dataclasses.replace(hogwild, name="sim-only", engines=("simulator",))
    with methods.registered(only):
        assert main(["run", str(write(tmp_path, method="sim-only"))]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "pdasgd run: error: method sim-only: not in the executor yet (simulator only)"


def test_a_nan_loss_is_a_one_line_error(tmp_path, capsys) -> None:
    assert main(["run", str(write(tmp_path, lr=1e6, batches=1000))]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("pdasgd run: error: worker backward:") and "loss is" in err
    assert len(err.splitlines()) == 1


def test_profile_writes_a_scenario_that_loads_back(tmp_path, capsys) -> None:
    out = tmp_path / "profiled.toml"
    assert main(["profile", str(write(tmp_path)), "-o", str(out), "--batches", "4", "--warmup", "1"]) == 0
    scenario = load_scenario(out)
    layers = scenario.model.layers
    assert [layer.name for layer in layers] == ["fc1", "fc2", "head"]
    assert all(layer.forward_s > 0 and layer.backward_s > 0 and layer.update_s > 0 for layer in layers)
    assert [layer.param_bytes for layer in layers] == [
        (64 * 32 + 32) * 4,
        (32 * 32 + 32) * 4,
        (32 * 10 + 10) * 4,
    ]
    assert all(layer.activation_bytes > 0 for layer in layers)
    assert scenario.train == load_scenario(write(tmp_path)).train
    assert "wrote 3 layers" in capsys.readouterr().err


def test_pipelined_profile_writes_the_same_layers_from_a_pipeline(tmp_path, capsys) -> None:
    out = tmp_path / "pipelined.toml"
    args = ["profile", str(write(tmp_path)), "-o", str(out), "--batches", "4", "--warmup", "1", "--pipelined"]
    assert main(args) == 0
    layers = load_scenario(out).model.layers
    assert [layer.name for layer in layers] == ["fc1", "fc2", "head"]
    assert all(layer.forward_s > 0 and layer.backward_s > 0 and layer.update_s > 0 for layer in layers)


def test_profile_prints_means_and_medians(tmp_path, capsys) -> None:
    assert main(["profile", str(write(tmp_path)), "--batches", "3", "--warmup", "0"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].split()[:3] == ["layer", "forward_s", "(median)"]
    assert len(out.splitlines()) == 2 + 3


def test_ctrl_c_writes_the_partial_trace_and_exits_130(tmp_path) -> None:
    path = write(tmp_path, batches=10**7)
    trace_path = tmp_path / "partial.json"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    checkpoints = tmp_path / "checkpoints"
    command = [sys.executable, "-m", "pdasgd.cli.main", "run", str(path), "--trace", str(trace_path)]
    command += ["--checkpoint", str(checkpoints), "--checkpoint-every", "5"]
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, env=env)
    try:
        deadline = time.monotonic() + 60
        while not (checkpoints / "checkpoint.pt").exists() and time.monotonic() < deadline:
            time.sleep(0.1)  # training has started once the first checkpoint is there
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=30)
    finally:
        process.kill()
    assert process.returncode == 130, err
    assert "stopped by Ctrl-C after" in err
    trace = Trace.load(trace_path)
    assert trace.info["interrupted"] and trace.batches > 0 and trace.spans
