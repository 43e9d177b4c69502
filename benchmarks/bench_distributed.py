"""Methods across ranks on this machine: ddp, lapsgd and lppsgd on 2 ranks x 1 thread (gloo, a process each)
beside single-process sequential and hogwild (2 threads), real training on digits.

For every method: its throughput (global batches/s, and each rank's own batches/s), the same under a
20 ms compute straggler on rank 1 (`r1/worker:0`, a sleep before every one of its batches) and under a
20 ms communication delay on rank 1 (before each of its communication ops), and the wall time to 96% test
accuracy (from the run's accuracy curve, snapshots evaluated after the run). Rounds interleave the
configurations; figures are medians over rounds, every round's value kept in the JSON.

    .venv/bin/python benchmarks/bench_distributed.py --rounds 3 --json benchmarks/results/distributed.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections import defaultdict

from bench_time_to_accuracy import digits_mlp, time_to_target  # this folder's sibling script

from executor.runtime import run
from pdasgd.ranks import COMM
from pdasgd.scenario import parse_scenario
from pdasgd.trace import Trace

RANKS = {"replicas": 2, "per_replica": 1}
METHODS = {
    "sequential": ("sequential", {}),
    "hogwild 2 threads": ("hogwild", {"replicas": 1, "per_replica": 2}),
    "ddp 2 ranks": ("ddp", RANKS),
    "lapsgd 2 ranks": ("lapsgd", RANKS),
    "lppsgd 2 ranks": ("lppsgd", RANKS),
}
ACROSS_RANKS = ("ddp", "lapsgd", "lppsgd")


def delays_for(condition: str, extra_s: float) -> dict:
    if condition == "straggler":
        return {"straggler": [{"worker": "r1/worker:0", "every": 1, "extra_s": extra_s, "kind": "sleep"}]}
    if condition == "comm delay":
        return {"comm": [{"rank": 1, "extra_s": extra_s}]}
    return {}


def scenario(method: str, workers: dict, condition: str, args: argparse.Namespace, seed: int):
    averaging = {"average_every": args.average_every} if method in ("lapsgd", "lppsgd") else {}
    return parse_scenario(
        {
            "name": f"dist-{method}",
            "method": method,
            "workers": {**workers, **averaging},
            "train": {**digits_mlp(args), "device": "cpu"},
            "delays": delays_for(condition, args.extra_s),
            "run": {"batches": args.batches, "warmup": 4, "seed": seed},
        }
    )


def rank_rates(trace: Trace) -> dict[str, float]:
    """Each rank's own batches per second while it computes: its batches over the time from the first to
    the last span of its workers (its communicator's spans, e.g. a last round waiting for a slow rank,
    left out)."""
    batches: dict[str, set] = defaultdict(set)
    first: dict[str, float] = {}
    last: dict[str, float] = {}
    for span in trace.spans:
        if span.worker.endswith(f"/{COMM}"):
            continue
        rank = span.worker.split("/")[0] if "/" in span.worker else "r0"
        first[rank] = min(first.get(rank, span.start_s), span.start_s)
        last[rank] = max(last.get(rank, span.end_s), span.end_s)
        if span.op == "forward" and span.batch is not None:
            batches[rank].add(span.batch)
    return {rank: len(batches[rank]) / (last[rank] - first[rank]) for rank in sorted(batches)}


def configurations() -> list[tuple[str, str]]:
    rows = [(name, "none") for name in METHODS]
    for name, (method, _) in METHODS.items():
        if method in ACROSS_RANKS:
            rows += [(name, "straggler"), (name, "comm delay")]
    return rows


def measure(name: str, condition: str, args: argparse.Namespace, seed: int) -> dict:
    method, workers = METHODS[name]
    result = run(scenario(method, workers, condition, args, seed), curve_points=args.points)
    return {
        "batches_per_s": result.summary.throughput_batches_per_s,
        "rank_batches_per_s": rank_rates(result.trace),
        "time_to_target_s": time_to_target(result.accuracy_curve, args.target)[0],
        "final_accuracy": result.trace.accuracy,
        "staleness": result.summary.staleness.mean,
    }


def median(values: list) -> float | None:
    known = [v for v in values if v is not None]
    return statistics.median(known) if known else None


def report(rows: dict, args: argparse.Namespace) -> str:
    lines = [
        f"MLP {args.width}x{args.depth}, batch {args.batch_size}, {args.batches} batches, lr {args.lr}, "
        f"momentum {args.momentum}, average_every {args.average_every}; medians of {args.rounds} rounds",
        "",
        "| method | batches/s | r0 / r1 computing | straggler 20 ms on r1: batches/s (change), r0 / r1 "
        "| comm delay 20 ms on r1: batches/s (change), r0 / r1 | time to "
        f"{args.target:.0%} (s) | final accuracy |",
        "|---|---|---|---|---|---|---|",
    ]
    for name in METHODS:
        base = rows[(name, "none")]
        cells = [name, f"{median([r['batches_per_s'] for r in base]):.1f}", _ranks(base)]
        for condition in ("straggler", "comm delay"):
            if (name, condition) not in rows:
                cells.append("-")
                continue
            under = median([r["batches_per_s"] for r in rows[(name, condition)]])
            change = under / median([r["batches_per_s"] for r in base]) - 1
            cells.append(f"{under:.1f} ({change:+.0%}), {_ranks(rows[(name, condition)])}")
        tta = median([r["time_to_target_s"] for r in base])
        reached = sum(r["time_to_target_s"] is not None for r in base)
        cells.append(f"{tta:.2f} ({reached}/{len(base)} reached)" if tta is not None else "not reached")
        cells.append(f"{median([r['final_accuracy'] for r in base]):.3f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _ranks(runs: list[dict]) -> str:
    per_rank = defaultdict(list)
    for run_ in runs:
        for rank, rate in run_["rank_batches_per_s"].items():
            per_rank[rank].append(rate)
    if len(per_rank) < 2:
        return "-"
    return " / ".join(f"{median(per_rank[rank]):.1f}" for rank in sorted(per_rank))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batches", type=int, default=800, help="global batches per run (all ranks)")
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--depth", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=0.02)
    parser.add_argument("--momentum", type=float, default=0.9)
    parser.add_argument("--average-every", type=int, default=8)
    parser.add_argument("--extra-s", type=float, default=0.02, help="the straggler's and the comm delay's")
    parser.add_argument("--target", type=float, default=0.96)
    parser.add_argument("--points", type=int, default=40, help="accuracy-curve points per run")
    parser.add_argument("--json", help="also write every round's figures to this file")
    args = parser.parse_args()
    rows: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for index in range(args.rounds):
        for name, condition in configurations():
            figures = measure(name, condition, args, seed=index)
            rows[(name, condition)].append(figures)
            rate = figures["batches_per_s"]
            print(f"round {index} {name} [{condition}]: {rate:.1f} batches/s", file=sys.stderr)
    print(report(rows, args))
    if args.json:
        raw = {f"{name} [{condition}]": runs for (name, condition), runs in rows.items()}
        with open(args.json, "w") as out:
            json.dump({"args": vars(args), "rows": raw}, out, indent=1)


if __name__ == "__main__":
    main()
