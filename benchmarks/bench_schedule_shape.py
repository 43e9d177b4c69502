"""Diagnosis: where a predicted schedule's shape departs from the real one (the async-bu staleness lean).

Runs `pdasgd compare`'s own path (`compare_one`: profile, real run, the simulator on that run's machine) on
one scenario, async-bu 1F+2B on the digits MLP 4x1024 at batch 64 by default (the case of
benchmarks/replay.md whose staleness the simulator predicts 0.4-0.6 versions high), and prints, for the
predicted and the measured trace side by side:

- throughput and per-layer staleness;
- how often batch i's forward starts within 0.5 ms of batch i - max_in_flight's end (the window binds),
  and the median of that gap;
- median op durations per layer (forward, backward, update);
- per steady batch, the forward's wall time and the sum of its ops, and the forward worker's idle time
  between two batches.

    .venv/bin/python benchmarks/bench_schedule_shape.py [--method async-bu] [--backward 2] [--batches 300]
"""

from __future__ import annotations

import argparse
import statistics
from collections import defaultdict

from pdasgd.cli.compare import compare_one
from pdasgd.metrics import summarize
from pdasgd.scenario import Scenario, parse_scenario
from pdasgd.trace import Trace

BOUND_S = 0.0005  # a forward that starts this close to the window's opening waited for it


def scenario(method: str, backward: int, batches: int) -> Scenario:
    return parse_scenario(
        {
            "name": "schedule-shape",
            "method": method,
            "workers": {"forward": 1, "backward": backward, "max_in_flight": 4},
            "train": {
                "network": "mlp",
                "width": 1024,
                "depth": 4,
                "batch_size": 64,
                "dataset": "digits",
                "lr": 0.02,
                "momentum": 0.9,
            },
            "run": {"batches": batches, "warmup": batches // 10, "seed": 0},
        }
    )


def shape(trace: Trace, max_in_flight: int, warmup: int) -> list[str]:
    """The lines describing one trace's schedule (module docstring)."""
    summary = summarize(trace)
    end: dict[int, float] = defaultdict(float)
    forwards: dict[int, list] = defaultdict(list)
    durations: dict[str, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    for span in trace.spans:
        if span.batch is None:
            continue
        end[span.batch] = max(end[span.batch], span.end_s)
        if span.op in ("forward", "backward", "update"):
            durations[span.op][span.layer].append(span.duration_s)
        if span.op == "forward" and span.batch >= warmup:
            forwards[span.batch].append(span)
    start = {b: min(s.start_s for s in spans) for b, spans in forwards.items()}
    forward_end = {b: max(s.end_s for s in spans) for b, spans in forwards.items()}
    gaps = [start[b] - end[b - max_in_flight] for b in start if b - max_in_flight in end]
    idle = [start[b] - forward_end[b - 1] for b in start if b - 1 in forward_end]
    wall = [forward_end[b] - start[b] for b in start]
    ops = [sum(s.duration_s for s in spans) for spans in forwards.values()]
    bound = sum(g < BOUND_S for g in gaps) / len(gaps)
    lines = [
        f"  throughput {summary.throughput_batches_per_s:.1f} batches/s, staleness per layer "
        f"{[round(x, 2) for x in summary.staleness.per_layer_mean]}",
        f"  forward starts within {1000 * BOUND_S:.1f} ms of batch i-Q's end: {bound:.0%}; "
        f"gap median {1000 * statistics.median(gaps):.2f} ms",
    ]
    for op, per_layer in durations.items():
        medians = [round(1000 * statistics.median(v), 2) for _, v in sorted(per_layer.items())]
        lines.append(f"  {op} ms per layer (median) {medians}")
    lines.append(
        f"  forward of a batch: wall {1000 * statistics.median(wall):.2f} ms, its ops "
        f"{1000 * statistics.median(ops):.2f} ms; forward worker idle between batches "
        f"{1000 * statistics.median(idle):.2f} ms (medians)"
    )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--method", default="async-bu")
    parser.add_argument("--backward", type=int, default=2)
    parser.add_argument("--batches", type=int, default=300)
    args = parser.parse_args()
    sc = scenario(args.method, args.backward, args.batches)
    item = compare_one(sc, fresh=True, baseline=False)
    for label, trace in (("predicted", item.predicted), ("measured", item.measured)):
        print(label)
        print("\n".join(shape(trace, sc.workers.max_in_flight, sc.run.warmup)))
    print("profile:", "; ".join(item.document["profile"]["notes"]))


if __name__ == "__main__":
    main()
