"""Predicted accuracy: three schedules of the same training, simulated, then replayed on the real network.

A forward time of 5 ms per batch and beta = 2 on three simulated devices: sequential backprop on one, and
one forward with two backward workers, layer-wise (async-lu) or block updates (async-bu). The simulator
gives each schedule's timeline, and with it which version of each layer every batch reads; `pdasgd replay`
trains the real network (an MLP of four hidden blocks on digits) by executing that timeline. The picture:
test accuracy against the simulated time and against batches, and the training loss. What to notice:

- per batch, sequential learns fastest (every batch reads the newest parameters); LU's staleness costs
  some batches, BU's (about twice LU's) more;
- per second, the decoupled schedules run three times the batches: whether that outweighs the batches
  their staleness costs is the question the replay answers (the script prints each schedule's time and
  batches to 95%; on this seed LU gets there first and BU last).

Run: `python examples/predicted_accuracy.py [--out DIR] [--small]`. DIR gets predicted_accuracy.png.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import simulator
from executor.replay import replay
from pdasgd.plots import accuracy_plot
from pdasgd.scenario import Scenario, parse_scenario

TARGET = 0.95
SCHEDULES = {
    "sequential": {"method": "sequential"},
    "async-lu 1F:2B": {"method": "async-lu"},
    "async-bu 1F:2B": {"method": "async-bu"},
}


def scenario(schedule: dict, batches: int) -> Scenario:
    return parse_scenario(
        {
            "name": "predicted-accuracy",
            **schedule,
            "model": {"layers": 5, "forward_s": 0.005, "beta": 2.0},
            "workers": {"forward": 1, "backward": 2, "max_in_flight": 4},
            "train": {
                "network": "mlp",
                "width": 256,
                "depth": 4,
                "dataset": "digits",
                "batch_size": 32,
                "lr": 0.05,
                "momentum": 0.9,
            },
            "run": {"batches": batches, "warmup": 0},
        }
    )


def replayed(batches: int, points: int) -> dict[str, dict]:
    """Every schedule simulated and replayed: label -> replay result as a dict (curves included)."""
    results = {}
    for label, schedule in SCHEDULES.items():
        sc = scenario(schedule, batches)
        results[label] = replay(sc, simulator.simulate(sc), eval_points=points).to_dict(TARGET)
    return results


def sentence(label: str, data: dict) -> str:
    if data["time_to_target_s"] is None:
        final = data["final_accuracy"]
        return f"{label}: {TARGET:.0%} not reached in {data['batches']} batches (final {final:.3f})"
    return (
        f"{label}: {TARGET:.0%} after {data['batches_to_target']} batches, {data['time_to_target_s']:.2f} s "
        f"of simulated time; final accuracy {data['final_accuracy']:.3f}"
    )


def main(argv: list[str] | None = None) -> dict[str, dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("predicted-accuracy"), help="folder for the plot")
    parser.add_argument("--small", action="store_true", help="fewer batches (what the tests run)")
    args = parser.parse_args(argv)
    batches = 150 if args.small else 600
    results = replayed(batches, batches // 10)
    for label, data in results.items():
        print(sentence(label, data))
    args.out.mkdir(parents=True, exist_ok=True)
    path = accuracy_plot(
        results,
        args.out / "predicted_accuracy.png",
        TARGET,
        "digits MLP, three simulated schedules replayed (F = 5 ms, beta = 2, 3 devices)",
    )
    print(f"wrote {path}")
    return results


if __name__ == "__main__":
    main()
