"""The GPU check (`make gpu-check`) in its CPU dry mode, end to end through gpu/check.sh's offline set-up,
so the script cannot rot between the rare runs on a real GPU."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def check(
    tmp_path: Path, *args: str, env: dict | None = None, setup: bool = True
) -> subprocess.CompletedProcess:
    """gpu/check.sh (the offline set-up, then the script) or, without `setup`, the script alone."""
    environment = {**os.environ, "PYTHON": sys.executable, "PDASGD_GPU_SITE": str(tmp_path / "site")}
    environment.pop("PDASGD_GPU_OUT", None)
    command = (
        ["bash", str(ROOT / "gpu" / "check.sh")]
        if setup
        else [sys.executable, str(ROOT / "gpu" / "check.py")]
    )
    return subprocess.run(
        [*command, *args],
        cwd=ROOT,
        env=environment | (env or {}),
        capture_output=True,
        text=True,
        timeout=300,
    )


def gpu_test_count() -> int:
    listed = subprocess.run(
        [sys.executable, "-m", "pytest", "-m", "gpu", "--collect-only", "-q", "-p", "no:cacheprovider"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    # one line per test, or (with pytest's -q twice, as addopts gives) `path: count` per file
    lines = listed.stdout.splitlines()
    per_file = [
        line.rpartition(": ") for line in lines if line.endswith(tuple("0123456789")) and ": " in line
    ]
    return sum("::" in line for line in lines) + sum(int(count) for _, _, count in per_file)


@pytest.mark.slow  # 60-70 s of the default suite's 10 minutes; `make test-all` and the GPU machine run it
def test_dry_mode_runs_every_step_and_writes_every_figure(tmp_path: Path) -> None:
    out = tmp_path / "results"
    done = check(tmp_path, "--cpu", env={"PDASGD_GPU_OUT": str(out)})
    assert done.returncode == 0, done.stdout + done.stderr
    result = json.loads((out / "gpu-check.json").read_text())
    steps = result["steps"]
    assert set(steps) == {"tests", "throughput", "profile_resnet18", "compare_resnet18_async_lu"}
    assert not any("error" in figures for figures in steps.values())
    # every gpu-marked test was collected by the check's own pytest, and on the CPU each one skips
    assert steps["tests"]["tests"] == gpu_test_count() > 0
    assert steps["tests"]["skipped"] == steps["tests"]["tests"]
    for network in ("resnet18", "mlp"):
        rates = steps["throughput"][network]
        assert set(rates) == {"sequential", "async-lu 1F+2B", "async-bu 1F+2B"}
        assert rates["sequential"]["speedup_vs_sequential"] == 1.0
        assert all(rate["batches_per_s"] > 0 for rate in rates.values())
    profile = steps["profile_resnet18"]
    assert profile["forward_ms"] > 0 and profile["backward_ms"] > 0
    assert profile["paper_table9_a100"] == {"forward_ms": 4.9, "backward_ms": 10.2}
    compared = steps["compare_resnet18_async_lu"]
    assert math.isfinite(compared["throughput_rel"]) and compared["measured_batches_per_s"] > 0
    assert len(compared["staleness_per_layer_abs"]) == 5  # stem, 3 residual blocks, head of ResNet-8
    assert result["device"]["mode"] == "cpu" and result["wall_s"] > 0


def test_without_cuda_it_stops_with_one_line_before_any_work(tmp_path: Path) -> None:
    out = tmp_path / "results"
    done = check(tmp_path, "--out", str(out), env={"CUDA_VISIBLE_DEVICES": ""}, setup=False)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "gpu-check: torch.cuda.is_available() is False (no CUDA device, or a CPU build of torch); try --cpu"
    ]
    assert not (out / "gpu-check.json").exists()


def test_an_out_path_that_is_a_file_is_refused_in_one_line(tmp_path: Path) -> None:
    taken = tmp_path / "taken"
    taken.write_text("keep me")
    done = check(tmp_path, "--cpu", "--out", str(taken), setup=False)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [f"gpu-check: --out: {taken} is a file, not a folder"]
    assert taken.read_text() == "keep me"
