"""Executor throughput on the MLP 8x1024, batch 128: pipelined methods vs sequential vs a plain PyTorch loop.

Every configuration runs once per round, rounds interleave the configurations (so slow minutes of a shared
machine hit them all alike), and the figures are medians over rounds of steady-state batches/s (from the
trace's summary for the executor, after the same warm-up). Each round prints the 1-minute load average:
the 2-core speed-up needs both cores, so figures taken while other processes run say little. Speed-ups
are ratios inside this one run. The plain loop is the hand-written `nn.Sequential` + `torch.optim.SGD`
training loop a user would write, on the same batches, one thread; the executor's sequential mode must stay
within 5% of it. "2 plain loops" runs two such loops at once in two processes, "2 plain threads" in two
threads of this process (both start their timed parts together and count only the time both run): the
most two cores give this workload with nothing shared but the hardware, and with what threads of one
Python process share besides (the interpreter lock, reference counts, the allocator). Besides the ratio of
medians, the report gives each configuration's ratio to sequential round by round (the two ran minutes
apart, so a slow spell of a shared machine hits both): its median and range say how firm a figure is.
On a machine whose speed drifts by 10-20% over minutes one run's figure moves by about 0.1x; `--combine`
reports the rounds of several runs' `--json` files together (rounds stay paired within their run).

    .venv/bin/python benchmarks/bench_executor.py --rounds 7 --batches 100 --max-in-flight 8 --json run1.json
    .venv/bin/python benchmarks/bench_executor.py --combine run1.json run2.json run3.json
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import statistics
import sys
import threading
import time

import torch
import torch.nn.functional as F
from torch import nn

from executor.data import batch_stream, load_dataset
from executor.networks import build_network
from executor.runtime import run
from pdasgd.scenario import parse_scenario

CONFIGS = {
    "plain loop": None,
    "2 plain loops": None,
    "2 plain threads": None,
    "sequential": ("sequential", 1, 1),
    "async-bu 1F+2B": ("async-bu", 1, 2),
    "async-lu 1F+1B": ("async-lu", 1, 1),
    "async-lu 1F+2B": ("async-lu", 1, 2),
    "hogwild 2": ("hogwild", 1, 2),
}


def scenario(method: str, forward: int, backward: int, batches: int, warmup: int, max_in_flight: int):
    return parse_scenario(
        {
            "name": f"bench-{method}",
            "method": method,
            "workers": {
                "forward": forward,
                "backward": backward,
                "max_in_flight": max_in_flight,
                "replicas": 1,
                "per_replica": backward,
            },
            "train": {
                "network": "mlp",
                "width": 1024,
                "depth": 8,
                "dataset": "synthetic",
                "batch_size": 128,
                "lr": 0.01,
                "threads_per_worker": 1,
            },
            "run": {"batches": batches, "warmup": warmup, "seed": 0},
        }
    )


def plain_loop(batches: int, warmup: int) -> float:
    """Batches/s of a hand-written training loop after `warmup` batches, one thread."""
    finishes = plain_loop_finishes(batches, warmup)
    return (len(finishes) - 1) / (finishes[-1] - finishes[0])


def plain_loop_finishes(batches: int, warmup: int, barrier=None) -> list[float]:
    """The plain loop's clock (perf_counter, the same clock in every process) when its timed part starts,
    then at the end of each batch after `warmup`. With a `barrier`, the timed part starts when every
    party of it is ready."""
    sc = scenario("sequential", 1, 1, batches, warmup, 1)
    torch.set_num_threads(1)
    dataset = load_dataset(sc.train, 0)
    torch.manual_seed(0)
    model = nn.Sequential(*build_network(sc.train, dataset.input_shape, dataset.num_classes))
    optimizer = torch.optim.SGD(model.parameters(), lr=sc.train.lr)
    stream = batch_stream(dataset, sc.train.batch_size, 0)
    finishes: list[float] = []
    for index in range(batches):
        if index == warmup:
            if barrier is not None:
                barrier.wait()
            finishes.append(time.perf_counter())
        x, y = next(stream)
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        optimizer.step()
        if index >= warmup:
            finishes.append(time.perf_counter())
    return finishes


def two_plain_loops(batches: int, warmup: int) -> float:
    """Total batches/s of two independent plain loops in two processes: the machine's 2-core ceiling.

    Both cores run the same kernels side by side with no coordination at all, so what they lose against
    one loop alone is contention for caches and memory bandwidth, which no pipeline can avoid either.
    The loops start their timed parts together (a barrier) and only the batches both finish while both
    run count: summing the two loops' own rates would credit the minutes where one runs alone (start-up
    skew, an early finish) as two-core throughput.
    """
    context = multiprocessing.get_context("spawn")
    with context.Manager() as manager, context.Pool(2) as pool:
        barrier = manager.Barrier(2)
        return overlap_rate(pool.starmap(plain_loop_finishes, [(batches, warmup, barrier)] * 2))


def two_plain_loop_threads(batches: int, warmup: int) -> float:
    """As `two_plain_loops`, in two threads of this process: the ceiling for threads, which share the
    interpreter (its lock, reference counts of shared objects), the allocator and the address space."""
    barrier = threading.Barrier(2)
    runs: list[list[float]] = [[], []]

    def loop(slot: int) -> None:
        runs[slot] = plain_loop_finishes(batches, warmup, barrier)

    threads = [threading.Thread(target=loop, args=(slot,)) for slot in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return overlap_rate(runs)


def overlap_rate(runs: list[list[float]]) -> float:
    """Batches/s of all loops together over the time all of them ran (`plain_loop_finishes` lists)."""
    start_s, end_s = max(run[0] for run in runs), min(run[-1] for run in runs)
    both = sum(1 for run in runs for finish in run[1:] if start_s < finish <= end_s)
    return both / (end_s - start_s)


def measure_fresh(name: str, batches: int, warmup: int, max_in_flight: int) -> tuple[float, float]:
    """`measure` in a fresh process of its own, after an untimed first pass of the same configuration.

    Configurations run in one process leave each other its allocator's state: glibc gives each thread
    an arena, and the next configuration's threads take over the arenas (and the fragmentation) of the
    last one's; executor sequential ran 0.91x of the plain loop right after the two-thread loops, 1.00x
    otherwise. And a first run grows the heap to its working set, page by page (a 1F+2B run of the MLP
    takes ~1500 page faults per batch in its first 50 batches, ~0 after 200 with tuned glibc settings):
    the first pass (`warmup` batches) pays that, as the first minutes of a long run would.
    """
    if name == "2 plain loops":  # spawns its own two fresh processes (a pool's workers cannot)
        return measure(name, batches, warmup, max_in_flight)
    pool = multiprocessing.get_context("spawn").Pool(1)
    try:
        pool.apply(measure, (name, warmup + 1, warmup, max_in_flight))
        return pool.apply(measure, (name, batches, warmup, max_in_flight))
    finally:
        pool.close()  # not terminate(): the worker's exit hooks free what tqdm allocated
        pool.join()


def measure(name: str, batches: int, warmup: int, max_in_flight: int) -> tuple[float, float]:
    """(batches/s, mean staleness) of one configuration."""
    if name == "plain loop":
        return plain_loop(batches, warmup), 0.0
    if name == "2 plain loops":
        return two_plain_loops(batches, warmup), 0.0
    if name == "2 plain threads":
        return two_plain_loop_threads(batches, warmup), 0.0
    method, forward, backward = CONFIGS[name]
    summary = run(scenario(method, forward, backward, batches, warmup, max_in_flight), curve_points=0).summary
    return summary.throughput_batches_per_s, summary.staleness.mean


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--batches", type=int, default=120)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--max-in-flight", type=int, default=8)
    parser.add_argument("--configs", nargs="*", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--json", help="also write the raw figures to this file")
    parser.add_argument("--combine", nargs="+", metavar="JSON", help="report the rounds of these --json runs")
    args = parser.parse_args()
    if args.combine:
        try:
            report_runs(args.combine)
        except (OSError, ValueError, KeyError) as error:  # json.JSONDecodeError is a ValueError
            parser.error(f"--combine: {error}")
        return
    print(f"load average before: {os.getloadavg()[0]:.2f}", file=sys.stderr)
    rates: dict[str, list[float]] = {name: [] for name in args.configs}
    staleness: dict[str, list[float]] = {name: [] for name in args.configs}
    for index in range(args.rounds):
        for name in args.configs:
            rate, stale = measure_fresh(name, args.batches, args.warmup, args.max_in_flight)
            rates[name].append(rate)
            staleness[name].append(stale)
        line = "  ".join(f"{name}: {rates[name][-1]:.2f}" for name in args.configs)
        print(f"round {index + 1}: {line}  (load {os.getloadavg()[0]:.2f})", file=sys.stderr, flush=True)
    report(rates, staleness)
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"rates": rates, "staleness": staleness, "args": vars(args)}, handle, indent=1)


def report(rates: dict[str, list[float]], staleness: dict[str, list[float]]) -> None:
    medians = {name: statistics.median(values) for name, values in rates.items()}
    base = medians.get("sequential")
    plain = medians.get("plain loop")
    print(
        f"{'configuration':<18} {'batches/s':>9} {'vs seq':>7} {'vs plain':>8} {'staleness':>9}"
        f"  {'per round vs seq: median (range)':<32}  rounds"
    )
    for name, median in medians.items():
        vs_seq = f"{median / base:.3f}" if base else "-"
        vs_plain = f"{median / plain:.3f}" if plain else "-"
        stale = statistics.median(staleness[name])
        paired = per_round_ratio(rates[name], rates.get("sequential"))
        values = rates[name]
        spread = " ".join(f"{value:.2f}" for value in values) if len(values) <= 10 else f"{len(values)}"
        print(f"{name:<18} {median:>9.2f} {vs_seq:>7} {vs_plain:>8} {stale:>9.2f}  {paired:<32}  {spread}")


def report_runs(paths: list[str]) -> None:
    """The report over every round of several runs, after one line per run (its ratio of medians)."""
    runs = []
    for path in paths:
        with open(path) as handle:
            runs.append(json.load(handle))
    rates, staleness = combine_runs(runs)
    pair = ("async-lu 1F+2B", "sequential")
    for path, one in zip(paths, runs, strict=True):
        if all(name in one["rates"] for name in pair):
            lu, seq = (statistics.median(one["rates"][name]) for name in pair)
            rounds = len(one["rates"]["sequential"])
            print(f"{path}: async-lu 1F+2B / sequential {lu / seq:.3f} ({rounds} rounds)")
    report(rates, staleness)


def combine_runs(runs: list[dict]) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """Rates and staleness of several `--json` runs, round lists joined run after run.

    Runs must have measured the same configurations with the same batches, warm-up and window.
    """
    same = ("batches", "warmup", "max_in_flight")
    first = runs[0]
    for run_ in runs[1:]:
        if list(run_["rates"]) != list(first["rates"]):
            raise ValueError("runs measured different configurations")
        if any(run_["args"][key] != first["args"][key] for key in same):
            raise ValueError(f"runs differ in {', '.join(same)}")
    return joined(runs, "rates"), joined(runs, "staleness")


def joined(runs: list[dict], key: str) -> dict[str, list[float]]:
    return {name: [value for run_ in runs for value in run_[key][name]] for name in runs[0][key]}


def per_round_ratio(values: list[float], base: list[float] | None) -> str:
    """'median (min-max)' of values[r] / base[r] over rounds r, or '-' without a base."""
    if not base:
        return "-"
    ratios = [value / reference for value, reference in zip(values, base, strict=True)]
    return f"{statistics.median(ratios):.3f} ({min(ratios):.3f}-{max(ratios):.3f})"


if __name__ == "__main__":
    main()
