"""Predicted time to accuracy against real runs: does a replayed simulated schedule reach 95% when the real
runs do?

For sequential, async-lu 1F+2B, async-bu 1F+2B and hogwild (2 threads), on digits with the MLP 4x1024 of
bench_time_to_accuracy.py (batch 64, lr 0.02, momentum 0.9), one scenario each, the same seed throughout:

- predicted: `pdasgd compare --runs`'s own path (`compare_one`: profile, the real runs, the simulator on
  the machine the first run used), then `compare --accuracy`'s: the predicted schedule and four more
  op-noise seeds of it replayed on the real network (`executor.replay`), their medians (`median_accuracy`);
- measured: the compare's --runs real runs of the same scenario, each run's trace replayed with the same
  evaluation grid. A replayed measured trace gives the run's own parameters (tests/test_replay.py), so
  this is the run's accuracy curve, evaluated every `--every` batches instead of the run's 10 snapshots;
  the run's own final accuracy is checked against it.

Reported per method: the predicted batches to the target against the min-max of the real runs' (target:
inside), and the predicted time to the target against the median real one (target: within 15%).

Usage:
    .venv/bin/python benchmarks/bench_replay_fidelity.py [--runs 5] [--target 0.95] [--json F]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys

from executor.replay import replay
from pdasgd.cli.compare import compare_one, predicted_schedules
from pdasgd.cli.replay import ACCURACY_SCHEDULES, median_accuracy
from pdasgd.scenario import parse_scenario

METHODS = {
    "sequential": ("sequential", {}),
    "async-lu 1F+2B": ("async-lu", {"forward": 1, "backward": 2}),
    "async-bu 1F+2B": ("async-bu", {"forward": 1, "backward": 2}),
    "hogwild 2": ("hogwild", {"replicas": 1, "per_replica": 2}),
}
TRAIN = {
    "network": "mlp",
    "width": 1024,
    "depth": 4,
    "dataset": "digits",
    "batch_size": 64,
    "lr": 0.02,
    "momentum": 0.9,
}


def scenario(method: str, workers: dict, batches: int):
    return parse_scenario(
        {
            "name": f"replay-fidelity-{method}",
            "method": method,
            "workers": {"max_in_flight": 4, **workers},
            "train": TRAIN,
            "run": {"batches": batches, "warmup": 20, "seed": 0},
        }
    )


def reached(scenario, trace, target: float, points: int) -> dict:
    result = replay(scenario, trace, eval_points=points)
    point = result.time_to(target)
    return {
        "time_s": point.time_s if point else None,
        "batches": point.batches if point else None,
        "final_accuracy": result.final_accuracy,
    }


def one_method(name: str, method: str, workers: dict, args: argparse.Namespace) -> dict:
    points = args.batches // args.every
    item = compare_one(scenario(method, workers, args.batches), baseline=False, runs=args.runs)
    costed = item.scenario  # with the profiled layer costs
    schedules = predicted_schedules(item, args.schedules)
    predicted = _predicted(median_accuracy(costed, schedules, args.target, points))
    default = _predicted(median_accuracy(costed, schedules[:ACCURACY_SCHEDULES], args.target, points))
    measured = []
    for trace in item.runs():
        figures = reached(costed, trace, args.target, points)
        assert abs(figures["final_accuracy"] - trace.accuracy) < 1e-9, "a replay must give the run's own"
        measured.append(figures)
    row = {
        "predicted": predicted,
        f"predicted_{ACCURACY_SCHEDULES}": default,  # compare --accuracy's default: the first schedules
        "measured": measured,
        "predicted_batches_per_s": item.document["predicted"]["throughput_batches_per_s"],
        "measured_batches_per_s": item.document["measured"]["throughput_batches_per_s"],
    }
    print(f"{name}: {json.dumps(row)}", file=sys.stderr, flush=True)
    return row


def _predicted(figures: dict) -> dict:
    return {
        "time_s": figures["time_to_target_s"],
        "batches": figures["batches_to_target"],
        "final_accuracy": figures["final_accuracy"],
        "batches_range": figures["batches_to_target_range"],
        "schedules_reaching": f"{figures['schedules_reaching_target']}/{figures['schedules']}",
    }


def verdict(row: dict, key: str = "predicted") -> dict:
    """The predicted batches against the real runs' min-max, the predicted time against their median. A
    run that never reaches the target counts as later than any that does (the rule the predicted
    schedules' medians follow, `median_accuracy`): the range is then open above, and the median the
    median_low over all runs."""
    measured = row["measured"]
    batches = [m["batches"] for m in measured if m["batches"] is not None]
    late = float("inf")
    predicted = row[key]
    reached = f"{len(batches)}/{len(measured)}"
    median_s = statistics.median_low([late if m["time_s"] is None else m["time_s"] for m in measured])
    if not batches or predicted["batches"] is None or median_s == late:
        return {"reached": reached, "inside": None, "time_error": None}
    high = max(batches) if len(batches) == len(measured) else late
    return {
        "reached": reached,
        "min": min(batches),
        "max": max(batches) if high != late else "unreached",
        "inside": min(batches) <= predicted["batches"] <= high,
        "median_s": median_s,
        "time_error": (predicted["time_s"] - median_s) / median_s,
    }


def report(rows: dict, target: float) -> None:
    """The table for the prediction from every schedule replayed, then for the first five alone (rows from
    before --schedules have only the first)."""
    keys = ["predicted"]
    if all(f"predicted_{ACCURACY_SCHEDULES}" in row for row in rows.values()):
        keys.append(f"predicted_{ACCURACY_SCHEDULES}")
    for key in keys:
        count = {row[key]["schedules_reaching"].split("/")[1] for row in rows.values()}
        print(f"\npredicted from up to {max(count, key=int)} schedules ({key}):")
        _table(rows, target, key)


def _table(rows: dict, target: float, key: str) -> None:
    print(
        f"\n| method | predicted batches to {target:g}: median (range, reached) | real runs: min-max "
        "(reached) | inside | predicted time (s) | real median (s) | time error | predicted / measured "
        "batches/s |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for name, row in rows.items():
        v, p = verdict(row, key), row[key]
        span = f"{v.get('min')}-{v.get('max')} ({v['reached']})" if v.get("min") is not None else v["reached"]
        error = "-" if v["time_error"] is None else f"{100 * v['time_error']:+.1f}%"
        print(
            f"| {name} | {p['batches']} ({_span(p)}) | {span} | {v['inside']} | {_f(p['time_s'])} | "
            f"{_f(v.get('median_s'))} | {error} | {row['predicted_batches_per_s']:.1f} / "
            f"{row['measured_batches_per_s']:.1f} |"
        )
    errors = [verdict(row, key)["time_error"] for row in rows.values()]
    errors = [abs(e) for e in errors if e is not None]
    if errors:
        print(f"\nmedian |time error| {100 * statistics.median(errors):.1f}% (target <= 15%)")


def _span(predicted: dict) -> str:
    low_high = predicted.get("batches_range")
    reach = predicted.get("schedules_reaching", "")
    return f"{low_high[0]}-{low_high[1]}, {reach}" if low_high else reach


def _f(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="real runs per method (5)")
    parser.add_argument(
        "--schedules",
        type=int,
        default=11,
        help="predicted schedules replayed per method (11; the table also gives the median of the first "
        f"{ACCURACY_SCHEDULES}, compare --accuracy's default)",
    )
    parser.add_argument("--target", type=float, default=0.95)
    parser.add_argument("--batches", type=int, default=300)
    parser.add_argument("--every", type=int, default=5, help="batches between accuracy evaluations (5)")
    parser.add_argument("--json", help="also write the raw figures to this file")
    parser.add_argument("--report", metavar="F.json", help="only print the tables of a --json file")
    args = parser.parse_args()
    if args.report:
        with open(args.report) as handle:
            saved = json.load(handle)
        report(saved["rows"], saved["args"]["target"])
        return
    rows = {name: one_method(name, method, workers, args) for name, (method, workers) in METHODS.items()}
    report(rows, args.target)
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"rows": rows, "args": vars(args)}, handle, indent=1)


if __name__ == "__main__":
    main()
