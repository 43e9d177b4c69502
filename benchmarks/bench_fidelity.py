"""Fidelity of predictions: the simulator's throughput and staleness against real executor runs.

Over a fixed matrix of scenarios (MLP, ResNet, LSTM x sequential / async-bu / async-lu x 1 or 2 backward
threads x with and without a hand-off delay), each point goes through `pdasgd compare`'s own path
(`compare_one`: profile on the executor's code path, real run, simulation on the run's machine) and the
benchmark reports the relative throughput error and the per-layer mean staleness error (versions).
Targets (issue 5): median relative throughput error <= 10%, per-layer mean staleness error <= 0.5 versions.

    .venv/bin/python benchmarks/bench_fidelity.py [--batches 150] [--repeats 1] [--only mlp]

Run it on a quiet machine: another process on one of the two cores changes every measured figure.
"""

from __future__ import annotations

import argparse
import statistics
import time

from pdasgd.cli.compare import compare_one
from pdasgd.scenario import Scenario, scenario_from_toml

NETWORKS = {
    "mlp": 'network = "mlp"\nwidth = 768\ndepth = 6\nbatch_size = 128\nlr = 0.01',
    "resnet": 'network = "resnet"\ndepth = 20\nchannels = 16\nbatch_size = 32\nlr = 0.01',
    "lstm": 'network = "lstm"\nhidden = 256\nbatch_size = 32\nlr = 0.05',
}
# (method, backward threads, hand-off delay in seconds) per network; sequential first (speed-up reference).
MATRIX = {
    "mlp": [
        ("sequential", 1, 0.0),
        ("async-bu", 2, 0.0),
        ("async-lu", 1, 0.0),
        ("async-lu", 2, 0.0),
        ("async-lu", 2, 0.005),
    ],
    "resnet": [("sequential", 1, 0.0), ("async-bu", 2, 0.0), ("async-lu", 2, 0.0)],
    "lstm": [("sequential", 1, 0.0), ("async-lu", 1, 0.0), ("async-lu", 2, 0.01)],
}


def scenario(network: str, method: str, backward: int, handoff_s: float, batches: int) -> Scenario:
    text = f"""
name = "{network}-{method}-{backward}b-{handoff_s * 1e3:g}ms"
method = "{method}"
[workers]
forward = 1
backward = {backward}
max_in_flight = 4
[delays]
handoff_s = {handoff_s}
[train]
{NETWORKS[network]}
dataset = "synthetic"
[run]
batches = {batches}
warmup = {max(10, batches // 6)}
"""
    return scenario_from_toml(text)


def measure_point(point: Scenario, sequential_s: float | None) -> dict:
    started = time.perf_counter()
    item = compare_one(point, sequential_s)
    error = item.document["error"]
    layer_errors = [abs(x) for x in error["staleness_per_layer_abs"]]
    return {
        "name": point.name,
        "predicted": item.document["predicted"]["throughput_batches_per_s"],
        "measured": item.document["measured"]["throughput_batches_per_s"],
        "throughput_rel": error["throughput_rel"],
        "stale_mean_abs": statistics.fmean(layer_errors) if layer_errors else 0.0,
        "stale_max_abs": max(layer_errors, default=0.0),
        "layers_over": sum(x > 0.5 for x in layer_errors),
        "layers": len(layer_errors),
        "sequential_s": item.measured.sequential_batch_s,
        "wall_s": time.perf_counter() - started,
    }


def run_matrix(batches: int, only: list[str]) -> list[dict]:
    rows = []
    for network in only:
        sequential_s = None
        for method, backward, handoff_s in MATRIX[network]:
            row = measure_point(scenario(network, method, backward, handoff_s, batches), sequential_s)
            sequential_s = sequential_s or row["sequential_s"]
            print(
                f"{row['name']:<28} predicted {row['predicted']:7.2f}/s  measured {row['measured']:7.2f}/s  "
                f"error {100 * row['throughput_rel']:+6.1f}%  "
                f"staleness |err| mean {row['stale_mean_abs']:.2f} max {row['stale_max_abs']:.2f}  "
                f"({row['wall_s']:.0f} s)",
                flush=True,
            )
            rows.append(row)
    return rows


def markdown(rows: list[dict]) -> str:
    """One line per point: medians over the repeats of each figure."""
    names = list(dict.fromkeys(row["name"] for row in rows))
    lines = [
        "| point | predicted b/s | measured b/s | throughput error | staleness error, mean over layers "
        "| staleness error, worst layer |",
        "|---|---|---|---|---|---|",
    ]
    for name in names:
        mine = [row for row in rows if row["name"] == name]

        def med(key: str, mine: list[dict] = mine) -> float:
            return statistics.median(row[key] for row in mine)

        errors = ", ".join(f"{100 * row['throughput_rel']:+.1f}%" for row in mine)
        lines.append(
            f"| {name} | {med('predicted'):.2f} | {med('measured'):.2f} | {errors} "
            f"| {med('stale_mean_abs'):.2f} | {max(row['stale_max_abs'] for row in mine):.2f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=150)
    parser.add_argument("--repeats", type=int, default=1, help="repeat the whole matrix")
    parser.add_argument("--only", nargs="+", choices=list(NETWORKS), default=list(NETWORKS))
    args = parser.parse_args()
    rows = [row for _ in range(args.repeats) for row in run_matrix(args.batches, args.only)]
    rel = [abs(row["throughput_rel"]) for row in rows]
    stale = [row for row in rows if "sequential" not in row["name"]]
    print(
        f"\npoints: {len(rows)}  median |throughput error| {100 * statistics.median(rel):.1f}%  "
        f"worst {100 * max(rel):.1f}%"
    )
    print(
        "per-layer mean staleness |error| (async points): mean over layers median "
        f"{statistics.median(row['stale_mean_abs'] for row in stale):.2f}, worst "
        f"{max(row['stale_mean_abs'] for row in stale):.2f}; worst single layer "
        f"{max(row['stale_max_abs'] for row in stale):.2f}; layers over 0.5: "
        f"{sum(row['layers_over'] for row in stale)} of {sum(row['layers'] for row in stale)}"
    )
    print()
    print(markdown(rows))


if __name__ == "__main__":
    main()
