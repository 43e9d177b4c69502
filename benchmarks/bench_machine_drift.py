"""How this machine's speed drifts: a fixed kernel timed back to back, and what that does to a mean.

Times `--seconds` of a fixed single-threaded kernel (60 products of 256 x 256 matrices, about 35 ms on the
2-core VM) and reports its coefficient of variation, the autocorrelation of its times at several lags,
the integrated autocorrelation time tau (`pdasgd.intervals.autocorrelation_time`) in samples and seconds,
and how much the mean over windows of a few seconds to a minute varies, beside what independent samples
would give. The wall and the thread's CPU time are both taken: if they move together, the machine is
slower in its instructions (another tenant's load, the host's clock), not in waiting for a core.

This is why a profile's interval counts the correlation (executor.profile, `correlated_mean_interval`)
and why two fresh profiles of one network, a minute apart, differ by more than either one's interval
over its batches alone would say (benchmarks/fidelity.md).

    .venv/bin/python benchmarks/bench_machine_drift.py --seconds 240 --json drift.json

Run it with nothing else on the machine.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from pdasgd.intervals import autocorrelation_time

LAGS = (1, 10, 50, 100, 200, 500, 1000, 1500, 2000)
WINDOWS_S = (3.0, 10.0, 30.0, 60.0)


def kernel_times(seconds: float) -> tuple[np.ndarray, np.ndarray]:
    """Wall and thread-CPU seconds of each run of the fixed kernel over `seconds`."""
    torch.set_num_threads(1)
    start = torch.randn(256, 256, generator=torch.Generator().manual_seed(0))
    walls, cpus = [], []
    end_s = time.perf_counter() + seconds
    while time.perf_counter() < end_s:
        a, wall0, cpu0 = start, time.perf_counter(), time.thread_time()
        for _ in range(60):
            b = torch.relu(a @ a)
            a = b / (b.norm() + 1.0)
        walls.append(time.perf_counter() - wall0)
        cpus.append(time.thread_time() - cpu0)
    return np.array(walls), np.array(cpus)


def drift(walls: np.ndarray, cpus: np.ndarray) -> dict:
    """The figures of the module docstring."""
    mean, cv = float(walls.mean()), float(walls.std() / walls.mean())
    centred = walls - mean
    tau = autocorrelation_time(walls)
    windows = {}
    for window_s in WINDOWS_S:
        size = max(1, int(window_s / mean))
        count = len(walls) // size
        if count >= 3:
            means = walls[: count * size].reshape(count, size).mean(axis=1)
            windows[str(window_s)] = {
                "windows": count,
                "cv_of_means": float(means.std() / means.mean()),
                "cv_if_independent": cv / np.sqrt(size),
            }
    return {
        "samples": len(walls),
        "mean_s": mean,
        "cv": cv,
        "cpu_cv": float(cpus.std() / cpus.mean()),
        "wall_cpu_correlation": float(np.corrcoef(walls, cpus)[0, 1]),
        "autocorrelation": {
            str(lag): float((centred[:-lag] * centred[lag:]).mean() / centred.var())
            for lag in LAGS
            if lag < len(walls) // 2
        },
        "tau_samples": tau,
        "tau_s": tau * mean,
        "windows": windows,
    }


def report(figures: dict) -> str:
    lines = [
        f"{figures['samples']} runs of the kernel, mean {1e3 * figures['mean_s']:.1f} ms, "
        f"CV {figures['cv']:.3f} "
        f"(CPU time CV {figures['cpu_cv']:.3f}, wall-CPU correlation {figures['wall_cpu_correlation']:.3f})",
        "autocorrelation at lag (samples): "
        + ", ".join(f"{lag}: {rho:.2f}" for lag, rho in figures["autocorrelation"].items()),
        f"integrated autocorrelation time: {figures['tau_samples']:.0f} samples = {figures['tau_s']:.1f} s",
    ]
    for window_s, row in figures["windows"].items():
        lines.append(
            f"mean over {float(window_s):.0f} s windows ({row['windows']}): CV {row['cv_of_means']:.3f} "
            f"(independent samples would give {row['cv_if_independent']:.3f})"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=120.0, help="how long to time the kernel")
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args()
    figures = drift(*kernel_times(args.seconds))
    print(report(figures))
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1))


if __name__ == "__main__":
    main()
