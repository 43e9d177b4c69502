"""Time to a target test accuracy on digits: async-lu vs sequential vs hogwild (2 threads), real training.

Each method trains the same network on the same seeded batches; the run's accuracy curve (snapshots of the
parameters taken while it trains, evaluated afterwards, so evaluation costs the run nothing) gives the wall
time and the number of batches at which test accuracy first reaches the target. Rounds interleave the
methods; figures are medians over rounds, with every round's value listed.

    .venv/bin/python benchmarks/bench_time_to_accuracy.py --rounds 5
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys

from executor.runtime import run
from pdasgd.scenario import parse_scenario

METHODS = {
    "sequential": ("sequential", {}),
    "async-lu 1F+2B": ("async-lu", {"forward": 1, "backward": 2}),
    "hogwild 2": ("hogwild", {"replicas": 1, "per_replica": 2}),
}


def digits_mlp(args: argparse.Namespace) -> dict:
    """The [train] table of these benchmarks: the MLP the flags describe, on digits."""
    return {
        "network": "mlp",
        "width": args.width,
        "depth": args.depth,
        "dataset": "digits",
        "batch_size": args.batch_size,
        "lr": args.lr,
        "momentum": args.momentum,
    }


def scenario(method: str, workers: dict, args: argparse.Namespace, seed: int):
    return parse_scenario(
        {
            "name": f"tta-{method}",
            "method": method,
            "workers": {"max_in_flight": args.max_in_flight, **workers},
            "train": digits_mlp(args),
            "run": {"batches": args.batches, "warmup": 5, "seed": seed},
        }
    )


def time_to_target(curve: list[tuple[int, float, float]], target: float) -> tuple[float | None, int | None]:
    for batches, time_s, accuracy in curve:
        if accuracy >= target:
            return time_s, batches
    return None, None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--target", type=float, default=0.96)
    parser.add_argument("--batches", type=int, default=600)
    parser.add_argument("--width", type=int, default=1024)
    parser.add_argument("--depth", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=0.02)
    parser.add_argument("--momentum", type=float, default=0.9)
    parser.add_argument("--max-in-flight", type=int, default=4)
    parser.add_argument("--points", type=int, default=60, help="accuracy-curve points per run")
    parser.add_argument("--json", help="also write the raw figures to this file")
    args = parser.parse_args()
    rows: dict[str, list[dict]] = {name: [] for name in METHODS}
    for index in range(args.rounds):
        for name, (method, workers) in METHODS.items():
            result = run(scenario(method, workers, args, seed=index), curve_points=args.points)
            time_s, batches = time_to_target(result.accuracy_curve, args.target)
            rows[name].append(
                {
                    "time_s": time_s,
                    "batches": batches,
                    "final_accuracy": result.trace.accuracy,
                    "batches_per_s": result.summary.throughput_batches_per_s,
                    "staleness": result.summary.staleness.mean,
                }
            )
            print(f"round {index + 1} {name}: {rows[name][-1]}", file=sys.stderr, flush=True)
    report(rows, args.target)
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"rows": rows, "args": vars(args)}, handle, indent=1)


def _median(values: list) -> float | None:
    values = [value for value in values if value is not None]
    return statistics.median(values) if values else None


def report(rows: dict[str, list[dict]], target: float) -> None:
    base = _median([row["time_s"] for row in rows["sequential"]])
    print(f"time to {target:.0%} test accuracy on digits (medians over rounds)")
    columns = f"{'time_s':>7} {'vs seq':>7} {'batches':>7} {'batches/s':>9} {'staleness':>9} {'final':>6}"
    print(f"{'method':<16} {columns}  reached")
    for name, values in rows.items():
        time_s = _median([row["time_s"] for row in values])
        ratio = f"{base / time_s:.2f}x" if base and time_s else "-"
        batches = _median([row["batches"] for row in values])
        rate = _median([row["batches_per_s"] for row in values])
        stale = _median([row["staleness"] for row in values])
        final = _median([row["final_accuracy"] for row in values])
        reached = sum(row["time_s"] is not None for row in values)
        shown = f"{time_s:.2f}" if time_s is not None else "-"
        batches_shown = f"{batches:.0f}" if batches is not None else "-"
        print(
            f"{name:<16} {shown:>7} {ratio:>7} {batches_shown:>7} {rate:>9.2f} {stale:>9.2f} {final:>6.3f}"
            f"  {reached}/{len(values)}"
        )


if __name__ == "__main__":
    main()
