"""Every way of stopping a run keeps its partial trace and prints one line; a hung op is stopped by the
watchdog; files are written with the umask's permissions, temporaries of killed writers are removed, and
a scenario's name cannot send output outside the folder the user chose. The signal tests start real
`pdasgd` processes and signal them by their own id; each ends by itself within its time limit."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hostile import run_cli

from pdasgd.io import atomic_write_text
from pdasgd.trace import Trace

RUN = """
[train]
width = 16
depth = 2
dataset = "digits"
batch_size = 16
[run]
batches = 10000000
warmup = 0
"""


def start(tmp_path: Path, trace: Path) -> subprocess.Popen:
    scenario = tmp_path / "s.toml"
    scenario.write_text(RUN)
    checkpoints = tmp_path / "checkpoints"
    command = [sys.executable, "-m", "pdasgd.cli.main", "run", str(scenario), "--trace", str(trace)]
    command += ["--checkpoint", str(checkpoints), "--checkpoint-every", "5"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.monotonic() + 60
    while not (checkpoints / "checkpoint.pt").exists() and time.monotonic() < deadline:
        time.sleep(0.05)  # training has started once the first checkpoint is there
    return process


def stop(process: subprocess.Popen, signals: list[int], gap_s: float) -> tuple[int, str]:
    try:
        for signum in signals:
            process.send_signal(signum)
            time.sleep(gap_s)
        _, err = process.communicate(timeout=30)
    finally:
        process.kill()
        process.wait(timeout=10)
    return process.returncode, err


@pytest.mark.parametrize(
    ("signals", "status", "name"),
    [
        ([signal.SIGINT, signal.SIGINT], 130, "Ctrl-C"),  # the second within a second of the first
        ([signal.SIGTERM], 143, "SIGTERM"),
        ([signal.SIGHUP], 129, "SIGHUP"),
        ([signal.SIGTERM, signal.SIGINT, signal.SIGHUP], 143, "SIGTERM"),
    ],
)
def test_every_stop_signal_keeps_a_valid_partial_trace(tmp_path, signals, status, name) -> None:
    trace_path = tmp_path / "partial.json"
    process = start(tmp_path, trace_path)
    returncode, err = stop(process, signals, gap_s=0.05)
    assert returncode == status, err
    lines = err.strip().splitlines()
    assert lines[-1].startswith(f"pdasgd run: stopped by {name} after"), err
    assert "Traceback" not in err
    trace = Trace.load(trace_path)
    trace.validate()
    assert trace.info["interrupted"] and trace.batches > 0 and trace.spans


def test_a_hung_op_is_stopped_by_the_watchdog(tmp_path, monkeypatch) -> None:
    (tmp_path / "pdasgd_user_hang.py").write_text(
        "import math, threading, torch\n"
        "class Hang(torch.nn.Module):\n"
        "    def __init__(self):\n        super().__init__()\n        self.calls = 0\n"
        "    def forward(self, x):\n"
        "        self.calls += 1\n"
        "        if self.calls > 3:\n"
        "            threading.Event().wait(60)  # a user network that blocks\n"
        "        return x\n"
        "def blocks(input_shape, num_classes):\n"
        "    return [torch.nn.Flatten(), torch.nn.Linear(math.prod(input_shape), num_classes), Hang()]\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    scenario = tmp_path / "s.toml"
    scenario.write_text(
        '[train]\nnetwork = "pdasgd_user_hang:blocks"\ndataset = "digits"\nbatch_size = 8\n'
        "[run]\nbatches = 50\nwarmup = 0\nop_timeout_s = 1.0\n"
    )
    trace = tmp_path / "t.json"
    started = time.monotonic()
    outcome = run_cli(["run", str(scenario), "--trace", str(trace)], tmp_path)
    assert time.monotonic() - started < 20
    assert outcome.status == 1
    line = outcome.err.strip().splitlines()[-1]
    assert "forward of layer 2 for batch" in line and "run.op_timeout_s = 1 s" in line, line
    assert "worker" in line and "Traceback" not in outcome.err
    assert Trace.load(trace).batches >= 1  # the partial trace was kept


def test_outputs_honour_the_umask(tmp_path) -> None:
    previous = os.umask(0o027)
    try:
        import importlib

        import pdasgd.io

        importlib.reload(pdasgd.io)  # the umask is read once, at import
        path = pdasgd.io.atomic_write_text(tmp_path / "f.txt", "x")
        assert path.stat().st_mode & 0o777 == 0o640
    finally:
        os.umask(previous)
        importlib.reload(pdasgd.io)
    assert atomic_write_text(tmp_path / "g.txt", "x").stat().st_mode & 0o777 == 0o666 & ~previous


def test_temporaries_left_by_a_killed_writer_are_removed_by_the_next_write(tmp_path) -> None:
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    stale = tmp_path / f".trace.json.{int(dead.stdout)}.abc123.tmp"
    stale.write_bytes(b"x" * 1000)
    mine = tmp_path / f".trace.json.{os.getpid()}.def456.tmp"  # a write of this very process: kept
    mine.write_bytes(b"y")
    other = tmp_path / f".other.json.{int(dead.stdout)}.ghi789.tmp"  # another file's: not ours to judge
    other.write_bytes(b"z")
    atomic_write_text(tmp_path / "trace.json", "{}")
    assert not stale.exists() and mine.exists() and other.exists()
    assert (tmp_path / "trace.json").read_text() == "{}"


@pytest.mark.parametrize("name", ["../../escape", "/absolute/escape", "..", "a/../../b", "\x01\x7f"])
def test_a_scenario_name_never_writes_outside_the_working_folder(tmp_path, name) -> None:
    work = tmp_path / "a" / "b" / "work"
    work.mkdir(parents=True)
    scenario = work / "s.toml"
    from pdasgd.tomlwrite import dumps

    scenario.write_text(dumps({"name": name, "model": {"layers": 2, "forward_s": 1.0, "beta": 2.0}}))
    outcome = run_cli(["sweep", str(scenario), "--vary", "workers.backward=1,2", "--jobs", "1"], work)
    assert outcome.status == 0, outcome.err
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert written and all(work in p.parents for p in written), written
    assert not Path("/absolute").exists()
