"""Benchmark: what a replay costs against plain sequential training of the same batches, and its memory.

Speed. For each network (the digits MLP, the benchmark MLP 8x1024, a ResNet-20 with BatchNorm, the LSTM
classifier on synthetic tokens; batch 32), N batches trained on the same device (the CPU, one thread, as
each executor worker): by the executor's sequential run (`executor.run`, its traced time), by a plain
PyTorch loop (nn.Sequential of the same blocks, `loss.backward()`, `torch.optim.SGD` with momentum), and by
`executor.replay` of the simulated trace of sequential, async-lu 1F+2B, async-bu 1F+2B and hogwild (2
workers) on the same scenario, with no accuracy evaluations (`eval_points=0`), so every side does only the
training arithmetic. Target: replay <= 1.2x sequential training. Medians of --rounds rounds, every
configuration once per round in turn, ratios taken within the round.

Memory. The versions a replay keeps at once (`peak_versions`) and the peak RSS of a fresh process replaying
N and 8N batches of async-bu 1F+2B (max_in_flight 4) and of async-lu 1F+2B with a visibility delay of five
forwards (later batches read older versions, which the replay must keep): bounded by the versions in
flight, not by the run's length.

Usage:
    .venv/bin/python benchmarks/bench_replay.py [--batches 200] [--rounds 3]
"""

from __future__ import annotations

import argparse
import gc
import json
import resource
import statistics
import subprocess
import sys
import time

import torch
import torch.nn.functional as F

from executor.data import batch_stream, load_dataset
from executor.networks import build_network
from executor.replay import replay
from executor.runtime import run
from pdasgd.scenario import Scenario, parse_scenario
from simulator import simulate

NETWORKS = {
    "mlp 4x256 (digits)": {"network": "mlp", "width": 256, "depth": 4, "dataset": "digits"},
    "mlp 8x1024 (synthetic)": {"network": "mlp", "width": 1024, "depth": 8, "dataset": "synthetic"},
    "resnet-20 8ch (digits)": {"network": "resnet", "depth": 20, "channels": 8, "dataset": "digits"},
    "lstm 64 (synthetic)": {"network": "lstm", "hidden": 64, "dataset": "synthetic"},
}
SCHEDULES = {
    "sequential": {"method": "sequential"},
    "async-lu 1F+2B": {"method": "async-lu", "workers": {"forward": 1, "backward": 2, "max_in_flight": 4}},
    "async-bu 1F+2B": {"method": "async-bu", "workers": {"forward": 1, "backward": 2, "max_in_flight": 4}},
    "hogwild x2": {"method": "hogwild", "workers": {"replicas": 1, "per_replica": 2}},
}


def scenario(train: dict, schedule: dict, batches: int, layers: int) -> Scenario:
    return parse_scenario(
        {
            **schedule,
            "model": {"layers": layers, "forward_s": 0.01, "beta": 2.0},
            "train": {**train, "batch_size": 32, "lr": 0.05, "momentum": 0.9},
            "run": {"batches": batches, "warmup": 0},
        }
    )


def block_count(train: dict) -> int:
    sc = parse_scenario({"train": train})
    dataset = load_dataset(sc.train, 0)
    return len(build_network(sc.train, dataset.input_shape, dataset.num_classes, dataset.vocab_size))


def plain_loop_s(sc: Scenario) -> float:
    """N batches of the plain PyTorch loop on the same blocks, data and optimizer settings."""
    torch.set_num_threads(sc.train.threads_per_worker)
    dataset = load_dataset(sc.train, sc.run.seed)
    torch.manual_seed(sc.run.seed)
    blocks = build_network(sc.train, dataset.input_shape, dataset.num_classes, dataset.vocab_size)
    model = torch.nn.Sequential(*blocks).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=sc.train.lr, momentum=sc.train.momentum)
    stream = batch_stream(dataset, sc.train.batch_size, sc.run.seed)
    data = [next(stream) for _ in range(sc.run.batches)]
    gc.collect()
    started = time.perf_counter()
    for x, y in data:
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        optimizer.step()
    return time.perf_counter() - started


def executor_s(sc: Scenario) -> float:
    """The executor's sequential run of the same batches: its traced time (setup and evaluation left out)."""
    gc.collect()
    spans = run(sc, curve_points=0).trace.spans
    return max(span.end_s for span in spans) - min(span.start_s for span in spans)


def replay_s(sc: Scenario, trace) -> float:
    gc.collect()
    result = replay(sc, trace, eval_points=0)
    return result.wall_s


def speed(batches: int, rounds: int) -> None:
    print(f"speed: {batches} batches, median of {rounds} rounds (ratios within each round)")
    print(
        f"{'network':24} {'schedule':16} {'executor s':>10} {'plain s':>8} {'replay s':>9} "
        f"{'/executor':>9} {'/plain':>7}"
    )
    for label, train in NETWORKS.items():
        layers = block_count(train)
        cases = {name: scenario(train, schedule, batches, layers) for name, schedule in SCHEDULES.items()}
        traces = {name: simulate(sc) for name, sc in cases.items()}
        executor, plain, times = [], [], {name: [] for name in cases}
        for _ in range(rounds):
            executor.append(executor_s(cases["sequential"]))
            plain.append(plain_loop_s(cases["sequential"]))
            for name, sc in cases.items():
                times[name].append(replay_s(sc, traces[name]))
        for name in cases:
            to_executor = [t / e for t, e in zip(times[name], executor, strict=True)]
            to_plain = [t / p for t, p in zip(times[name], plain, strict=True)]
            print(
                f"{label:24} {name:16} {statistics.median(executor):10.3f} {statistics.median(plain):8.3f} "
                f"{statistics.median(times[name]):9.3f} {statistics.median(to_executor):9.2f} "
                f"{statistics.median(to_plain):7.2f}"
            )


MEMORY_CASES = {
    "async-bu 1F+2B": ("async-bu 1F+2B", {}),
    "async-lu 1F+2B, visibility 5F": ("async-lu 1F+2B", {"visibility_s": 0.05}),
}


def memory_one(case: str, batches: int) -> dict:
    """Replay one memory case in this (fresh) process: versions kept and peak RSS."""
    schedule, delays = MEMORY_CASES[case]
    train = NETWORKS["mlp 8x1024 (synthetic)"]
    sc = scenario(train, {**SCHEDULES[schedule], "delays": delays}, batches, block_count(train))
    result = replay(sc, simulate(sc), eval_points=0)
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"peak_versions": result.peak_versions, "layers": result.layers, "peak_rss_mib": peak_mib}


def memory(batches: int) -> None:
    print("\nmemory: the MLP 8x1024 (4 MiB of parameters per hidden layer), each replay in a fresh process")
    for case in MEMORY_CASES:
        for count in (batches, 8 * batches):
            out = subprocess.run(
                [sys.executable, __file__, "--memory-one", case, "--batches", str(count)],
                capture_output=True,
                text=True,
                check=True,
            )
            got = json.loads(out.stdout)
            print(
                f"  {case:32} {count:6} batches: versions kept at most {got['peak_versions']} "
                f"({got['layers']} layers), peak RSS {got['peak_rss_mib']:.0f} MiB"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--memory-one", choices=list(MEMORY_CASES), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_one:
        print(json.dumps(memory_one(args.memory_one, args.batches)))
        return
    speed(args.batches, args.rounds)
    memory(args.batches)
    print("target: replay <= 1.2x sequential training; versions kept independent of the run's length")


if __name__ == "__main__":
    main()
