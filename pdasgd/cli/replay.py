"""`pdasgd replay`: the accuracy a schedule reaches, by replaying its trace on the real network.

Without --trace, the scenario is simulated first and its predicted trace replayed: the accuracy and loss
the schedule would give on whatever hardware the scenario describes. With --trace, a saved trace (of
`pdasgd simulate --trace` or `pdasgd run --trace`) is replayed on the scenario's [train]. Each batch's
forward reads the versions the trace says, the updates apply in the trace's order with the executor's SGD
(`executor.replay`). Prints the final accuracy, the time and batches to --target on the trace's time axis,
and writes the curves as a plot (--plot) and everything as JSON (--json or --out).
"""

from __future__ import annotations

import argparse
import statistics
import sys

from pdasgd.cli.common import (
    add_json_flag,
    check_range,
    fail,
    format_table,
    int_between,
    output_file,
    print_json,
    with_batches,
)
from pdasgd.scenario import Scenario, load_scenario

MAX_EVAL_POINTS = 1000
DEFAULT_TARGET = 0.95
ACCURACY_SCHEDULES = 5  # predicted schedules replayed: the nominal one and four more op-noise seeds
MAX_SCHEDULES = 50


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "replay",
        help="predicted accuracy: replay a schedule's trace on the real network",
        description="Train [train]'s network on one device by executing a trace's events in order: each "
        "forward reads the layer versions the trace says, updates apply in the trace's order. Without "
        "--trace the scenario is simulated first, so this predicts the accuracy curve and the time to "
        "--target of the schedule on the scenario's hardware.",
        epilog="Replay covers the methods with one shared parameter copy (sequential, async-lu, async-bu, "
        "hogwild) and synchronous ddp (one update per step with the mean of the ranks' gradients); "
        "lapsgd and lppsgd are refused. A measured trace replays to the run's own final parameters "
        "(tests/test_replay.py).",
    )
    parser.add_argument("scenario", help="scenario TOML file ([train] says the network and the data)")
    parser.add_argument("--trace", metavar="T.json", help="replay this trace instead of simulating")
    parser.add_argument(
        "--target", type=float, default=DEFAULT_TARGET, metavar="A", help="target test accuracy (0.95)"
    )
    parser.add_argument(
        "--eval-points", type=int, default=20, metavar="N", help="test-accuracy evaluations on the curve (20)"
    )
    parser.add_argument("--batches", type=int, metavar="N", help="override run.batches (without --trace)")
    parser.add_argument("--plot", metavar="F.png", help="write the accuracy and loss curves")
    parser.add_argument("--out", metavar="F.json", help="write the result (curves included) as JSON")
    add_json_flag(parser)
    parser.add_argument("--no-progress", action="store_true", help="never show a progress bar")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    check_range("--target", args.target, 0.0, 1.0)
    check_range("--eval-points", args.eval_points, 1, MAX_EVAL_POINTS)
    plot, out = output_file(args.plot, "--plot"), output_file(args.out, "--out")
    scenario = load_scenario(args.scenario)
    if args.trace and args.batches is not None:
        fail("--batches: a trace has its own batches; give one or the other")
    scenario = with_batches(scenario, args.batches)
    _check_replayable(scenario)
    trace = _trace(scenario, args.trace)
    result = _replay(scenario, trace, args)
    data = {"scenario": scenario.name, "trace_makespan_s": _makespan(trace), **result.to_dict(args.target)}
    _write(data, plot, out, scenario, args.target)
    if args.json:
        print_json(data)
    else:
        print(_report(data))
        for path in (plot, out):
            if path:
                print(f"wrote {path}")
    return 0


def _check_replayable(scenario: Scenario, prefix: str = "replay") -> None:
    """One line before any work unless the scenario's method and network can be replayed."""
    if scenario.train.network == "timed":
        fail("train.network: timed only sleeps its [model] costs; replay needs a network that learns")
    from executor.replay import replay_problem

    problem = replay_problem(scenario)
    if problem:
        fail(f"{prefix}: {problem}")


# --- time to accuracy for compare --accuracy and sweep --accuracy ------------------------------------


def add_accuracy_flags(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument(
        "--accuracy",
        action="store_true",
        help=f"also predict the time to --target accuracy: {what} (pdasgd replay)",
    )
    parser.add_argument(
        "--target", type=float, default=DEFAULT_TARGET, metavar="A", help="target test accuracy (0.95)"
    )
    parser.add_argument(
        "--eval-points", type=int, default=20, metavar="N", help="accuracy evaluations per replay (20)"
    )
    parser.add_argument(
        "--schedules",
        type=int_between(1, MAX_SCHEDULES),
        default=ACCURACY_SCHEDULES,
        metavar="N",
        help=f"predicted schedules replayed when op times are noisy: the predicted one and N - 1 more "
        f"noise seeds, whose medians are the prediction ({ACCURACY_SCHEDULES}; more narrow the median's own "
        "sampling noise, at one replay each)",
    )


def check_accuracy_args(args: argparse.Namespace, scenarios: list[Scenario]) -> None:
    """One line before any work unless every scenario can be replayed to the target."""
    check_range("--target", args.target, 0.0, 1.0)
    check_range("--eval-points", args.eval_points, 1, MAX_EVAL_POINTS)
    if not args.accuracy:
        return
    for scenario in scenarios:
        _check_replayable(scenario, "--accuracy")


def accuracy_of(scenario: Scenario, trace, target: float, eval_points: int) -> dict:
    """Replay `trace` on `scenario`'s network: final accuracy, time and batches to `target`, the curve."""
    from executor.replay import replay

    result = replay(scenario, trace, eval_points).to_dict(target)
    keys = ("final_accuracy", "time_to_target_s", "batches_to_target", "target", "curve", "losses")
    return {key: result[key] for key in keys}


def noise_schedules(scenario: Scenario, nominal, count: int = ACCURACY_SCHEDULES) -> list:
    """The simulated trace `nominal` of `scenario` and, when its op times are noisy, the same scenario
    simulated with `count` - 1 more noise seeds: how many batches a schedule needs to reach a target varies
    with its noise as much as real runs vary (120-190 batches to 95% over six seeds of one async-lu
    prediction, 130-165 over five real runs; benchmarks/replay.md), so one schedule is one sample."""
    import simulator

    if scenario.delays.jitter_cv <= 0:
        return [nominal]
    seeds = range(scenario.run.seed + 1, scenario.run.seed + count)
    more = [simulator.simulate(scenario.with_overrides({"run.seed": seed}), progress=False) for seed in seeds]
    return [nominal, *more]


def median_accuracy(scenario: Scenario, traces: list, target: float, eval_points: int) -> dict:
    """Replay each schedule (`traces`: a predicted one and its op-noise variants, or several real runs of
    one scenario; each one sample of what the schedule does to training): the medians over them of the
    time and the batches to `target`
    (a schedule that never reaches it counts as later than any that does) and of the final accuracy, their
    ranges over the schedules that reached it, and the curve of the schedule with the median time."""
    replays = [accuracy_of(scenario, trace, target, eval_points) for trace in traces]
    late = float("inf")

    def median_of(key: str) -> float | None:
        value = statistics.median_low([late if r[key] is None else r[key] for r in replays])
        return None if value == late else value

    time_s = median_of("time_to_target_s")
    shown = next((r for r in replays if r["time_to_target_s"] == time_s), replays[0])
    reached = [r for r in replays if r["batches_to_target"] is not None]
    return {
        **shown,
        "time_to_target_s": time_s,
        "batches_to_target": median_of("batches_to_target"),
        "final_accuracy": statistics.median([r["final_accuracy"] for r in replays]),
        "schedules": len(replays),
        "schedules_reaching_target": len(reached),
        "time_to_target_range_s": _range([r["time_to_target_s"] for r in reached]),
        "batches_to_target_range": _range([r["batches_to_target"] for r in reached]),
    }


def _range(values: list[float]) -> list[float] | None:
    return [min(values), max(values)] if values else None


def accuracy_error(predicted: dict, measured: dict) -> dict:
    """Relative errors of the predicted time and batches to the target, absolute of the final accuracy."""

    def relative(key: str) -> float | None:
        p, m = predicted[key], measured[key]
        return None if p is None or m is None or m == 0 else (p - m) / m

    return {
        "time_to_target": relative("time_to_target_s"),
        "batches_to_target": relative("batches_to_target"),
        "final_accuracy": predicted["final_accuracy"] - measured["final_accuracy"],
    }


def _trace(scenario: Scenario, path: str | None):
    from pdasgd.trace import Trace

    if path:
        return Trace.load(path)
    from simulator import simulate

    return simulate(scenario, progress=False)


def _replay(scenario: Scenario, trace, args: argparse.Namespace):
    from tqdm import tqdm

    from executor.replay import replay

    bar = tqdm(
        total=len(trace.spans),
        unit="op",
        file=sys.stderr,
        disable=args.no_progress or not sys.stderr.isatty(),
        desc="replay",
    )

    def progress(done: int, total: int) -> None:
        bar.total = total
        bar.update(done - bar.n)

    try:
        return replay(scenario, trace, args.eval_points, progress)
    finally:
        bar.close()


def _makespan(trace) -> float:
    return max((span.end_s for span in trace.spans), default=0.0)


def _write(data: dict, plot, out, scenario: Scenario, target: float) -> None:
    import json

    from pdasgd.io import atomic_write_text

    try:
        if plot:
            from pdasgd.plots import accuracy_plot

            title = f"{scenario.name}: {data['method']} ({data['source']} trace), replayed"
            accuracy_plot({data["method"]: data}, plot, target, title)
        if out:
            from pdasgd.cli.common import finite

            atomic_write_text(out, json.dumps(finite(data), indent=2) + "\n")
    except OSError as error:
        fail(f"cannot write {error.filename or 'output'}: {error.strerror or error}")


def _report(data: dict) -> str:
    reached = data["time_to_target_s"] is not None
    rows = [
        ["method", data["method"]],
        ["trace", f"{data['source']}, {data['batches']} batches, {data['trace_makespan_s']:.4g} s"],
        ["final test accuracy", data["final_accuracy"]],
        ["final training loss", data["final_loss"]],
        [
            f"time to {data['target']:g} accuracy (s)",
            data["time_to_target_s"] if reached else "not reached",
        ],
        [f"batches to {data['target']:g}", data["batches_to_target"] if reached else "not reached"],
        ["versions kept at most", data["peak_versions"]],
        [
            "training loss",
            "finite throughout"
            if data["loss_not_finite_from_batch"] is None
            else f"not finite from batch {data['loss_not_finite_from_batch']} (diverged: try a lower lr)",
        ],
        ["replay wall time (s)", data["replay_wall_s"]],
    ]
    return format_table(["quantity", "value"], rows)
