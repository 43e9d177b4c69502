"""The GPU check: the executor's CUDA path run on a real GPU, every figure written to one JSON file.

`make gpu-check` (gpu/check.sh sets up offline, then runs this) does, in order:

1. checks that `torch.cuda.is_available()`, and stops with one line if not;
2. runs every test marked `gpu` (exact gradients across CUDA streams, CUDA-event timing, allocator
   memory), its counts read from pytest's JUnit XML;
3. throughput: sequential against async-lu 1F+2B and async-bu 1F+2B, on ResNet-18 (CIFAR-size input,
   batch 128, the network of the paper's Table 9) and on the MLP 8x1024 (batch 128), in interleaved
   rounds, medians over rounds;
4. ResNet-18's forward and backward-plus-update time per batch, profiled to ±2% (95% interval), beside
   the paper's Table 9 (A100: 4.9 ms and 10.2 ms);
5. `pdasgd compare` of ResNet-18 async-lu 1F+2B: predicted against measured throughput and staleness.

The JSON (`gpu-check.json`) goes into the folder given by `--out` or `PDASGD_GPU_OUT` (default
`gpu-check-out`), rewritten after every step so that a run stopped half-way keeps what it measured;
pytest's log and XML lie beside it. The exit status is 0 when every step ran and every test passed.

`--cpu` is the dry mode the test suite runs: the same steps on the CPU with small networks and short runs
(the `gpu` tests are collected and skip), so the script cannot rot between GPU runs. Sized for a GPU check
of at most 6 minutes; each step's `wall_s` is in the JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
import xml.etree.ElementTree as ElementTree
from pathlib import Path
from typing import Any, NoReturn

RESULT_NAME = "gpu-check.json"
PAPER_TABLE9_A100_MS = {"forward_ms": 4.9, "backward_ms": 10.2}
METHODS = {  # label -> (method, forward workers, backward workers)
    "sequential": ("sequential", 1, 1),
    "async-lu 1F+2B": ("async-lu", 1, 2),
    "async-bu 1F+2B": ("async-bu", 1, 2),
}


def sizes(cpu: bool) -> dict[str, Any]:
    """Networks and run lengths: the issue's on a GPU, small ones for the CPU dry mode."""
    if cpu:
        return {
            "resnet18": {"network": "resnet", "depth": 8, "channels": 8, "batch_size": 16},
            "mlp": {"network": "mlp", "width": 128, "depth": 4, "batch_size": 32},
            "batches": 24,
            "warmup": 6,
            "rounds": 1,
            "profile_cap_s": 5.0,
        }
    return {
        "resnet18": {"network": "resnet", "depth": 18, "channels": 64, "batch_size": 128},
        "mlp": {"network": "mlp", "width": 1024, "depth": 8, "batch_size": 128},
        "batches": 120,
        "warmup": 20,
        "rounds": 3,
        "profile_cap_s": 30.0,
    }


def scenario(method: str, forward: int, backward: int, train: dict, device: str, batches: int, warmup: int):
    from pdasgd.scenario import parse_scenario

    return parse_scenario(
        {
            "name": f"gpu-check-{train['network']}-{method}",
            "method": method,
            "workers": {"forward": forward, "backward": backward, "max_in_flight": 4},
            "train": {**train, "dataset": "synthetic", "device": device},
            "run": {"batches": batches, "warmup": warmup, "seed": 0},
        }
    )


# --- the steps ---------------------------------------------------------------------------------------


def check_device(cpu: bool) -> dict[str, Any]:
    import torch

    facts = {
        "torch": torch.__version__,
        "cuda_available": torch.cuda.is_available(),
        "mode": "cpu" if cpu else "gpu",
    }
    if cpu:
        return facts
    if not torch.cuda.is_available():
        _stop("torch.cuda.is_available() is False (no CUDA device, or a CPU build of torch); try --cpu")
    facts |= {
        "cuda": torch.version.cuda,
        "device_name": torch.cuda.get_device_name(0),
        "device_count": torch.cuda.device_count(),
        "memory_bytes": torch.cuda.get_device_properties(0).total_memory,
    }
    return facts


def gpu_tests(out: Path) -> dict[str, Any]:
    """Every test marked `gpu`, in a pytest of its own; counts from its JUnit XML."""
    xml_path, log_path = out / "pytest-gpu.xml", out / "pytest-gpu.log"
    command = [sys.executable, "-m", "pytest", "-m", "gpu", "-rs", "-p", "no:cacheprovider"]
    command += [f"--junitxml={xml_path}", "tests"]
    with log_path.open("w") as log:
        returncode = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, check=False).returncode
    suite = ElementTree.parse(xml_path).getroot()
    suite = suite.find("testsuite") if suite.tag == "testsuites" else suite
    counts = {key: int(suite.get(key, 0)) for key in ("tests", "failures", "errors", "skipped")}
    counts["passed"] = counts["tests"] - counts["failures"] - counts["errors"] - counts["skipped"]
    return {**counts, "returncode": returncode, "log": log_path.name}


def throughput(size: dict, device: str) -> dict[str, Any]:
    """Each method on each network once per round, rounds interleaved; medians of steady batches/s."""
    from executor.runtime import run

    rates: dict[str, dict[str, list[float]]] = {
        net: {label: [] for label in METHODS} for net in ("resnet18", "mlp")
    }
    for _ in range(size["rounds"]):
        for net, by_label in rates.items():
            for label, (method, forward, backward) in METHODS.items():
                sc = scenario(method, forward, backward, size[net], device, size["batches"], size["warmup"])
                by_label[label].append(run(sc).summary.throughput_batches_per_s)
    return {net: _speedups(by_label) for net, by_label in rates.items()}


def _speedups(by_label: dict[str, list[float]]) -> dict[str, Any]:
    medians = {label: statistics.median(values) for label, values in by_label.items()}
    return {
        label: {
            "batches_per_s": medians[label],
            "rounds": by_label[label],
            "speedup_vs_sequential": medians[label] / medians["sequential"],
        }
        for label in by_label
    }


def profile_resnet18(size: dict, device: str) -> dict[str, Any]:
    """ResNet-18's per-batch forward and backward(+update) time, to ±2% (or the cap), beside Table 9."""
    from executor.profile import measure_precisely

    sc = scenario("sequential", 1, 1, size["resnet18"], device, size["batches"], size["warmup"])
    _, precision = measure_precisely(sc, cap_s=size["profile_cap_s"])
    return {
        "forward_ms": 1e3 * precision.forward.value,
        "backward_ms": 1e3 * precision.backward.value,
        "precision": precision.to_dict(),
        "paper_table9_a100": PAPER_TABLE9_A100_MS,
        "note": "backward_ms includes the layer updates",
    }


def compare_resnet18(size: dict, device: str) -> dict[str, Any]:
    from pdasgd.cli.compare import compare_one

    sc = scenario("async-lu", 1, 2, size["resnet18"], device, size["batches"], size["warmup"])
    document = compare_one(sc, fresh=True).document
    return {
        "predicted_batches_per_s": document["predicted"]["throughput_batches_per_s"],
        "measured_batches_per_s": document["measured"]["throughput_batches_per_s"],
        "throughput_rel": document["error"]["throughput_rel"],
        "staleness_per_layer_abs": document["error"]["staleness_per_layer_abs"],
        "intervals": document["intervals"],
        "profile": document["profile"],
        "machine": document["machine"],
    }


# --- driver ------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--out", default=os.environ.get("PDASGD_GPU_OUT", "gpu-check-out"), help="result folder"
    )
    parser.add_argument("--cpu", action="store_true", help="dry mode: the same steps on the CPU, small sizes")
    args = parser.parse_args(argv)
    out = _result_folder(args.out)
    device = "cpu" if args.cpu else "cuda"
    size = sizes(args.cpu)
    result: dict[str, Any] = {"sizes": size, "steps": {}}
    started = time.perf_counter()
    result["device"] = check_device(args.cpu)
    steps = {
        "tests": lambda: gpu_tests(out),
        "throughput": lambda: throughput(size, device),
        "profile_resnet18": lambda: profile_resnet18(size, device),
        "compare_resnet18_async_lu": lambda: compare_resnet18(size, device),
    }
    ok = True
    for name, step in steps.items():
        ok &= _step(result, name, step)
        result["wall_s"] = time.perf_counter() - started
        _write(out / RESULT_NAME, result)
    tests = result["steps"]["tests"]
    ok &= tests.get("failures", 1) == 0 and tests.get("errors", 1) == 0
    print(
        f"gpu-check: {'ok' if ok else 'FAILED'} in {result['wall_s']:.0f} s; figures in {out / RESULT_NAME}"
    )
    return 0 if ok else 1


def _result_folder(text: str) -> Path:
    from pdasgd.cli.common import UsageError, output_dir

    try:
        out = output_dir(text, "--out")
    except UsageError as error:
        _stop(str(error))
    out.mkdir(parents=True, exist_ok=True)
    return out


def _stop(message: str) -> NoReturn:
    print(f"gpu-check: {message}", file=sys.stderr)
    sys.exit(2)


def _step(result: dict, name: str, step) -> bool:
    """Run one step, record its figures (or its error, on one line) and its wall time."""
    print(f"gpu-check: {name} ...", flush=True)
    started = time.perf_counter()
    try:
        figures, ok = step(), True
    except Exception as error:  # a failed step is recorded, and the later steps still run
        figures, ok = {"error": f"{type(error).__name__}: {' '.join(str(error).split())}"}, False
    figures["wall_s"] = time.perf_counter() - started
    result["steps"][name] = figures
    print(f"gpu-check: {name} {'done' if ok else 'FAILED: ' + figures['error']} ({figures['wall_s']:.0f} s)")
    return ok


def _write(path: Path, result: dict) -> None:
    from pdasgd.io import atomic_write_text

    atomic_write_text(path, json.dumps(result, indent=1, default=str) + "\n")


if __name__ == "__main__":
    sys.exit(main())
