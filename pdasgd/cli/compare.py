"""`pdasgd compare`: profile -> simulate -> run for real -> predicted vs measured, side by side, with errors.

For each method compared:
1. the network's per-layer costs are measured on the executor's own code path (`executor.profile`), unless
   the scenario gives them (`--profile` measures anyway): one worker alone for sequential, a short
   forward + backward pipeline for the other methods (ops run slower there);
2. the real run (`executor.run`) gives the measured trace; a sequential run on the same batches gives the
   measured speed-up's reference; with `--runs N` the scenario runs N times, the measurement is the mean
   over the runs (`pdasgd.metrics.mean_summary`) and its interval one over the runs;
3. the simulator predicts the same schedule on the machine the run used (`pdasgd.machine.on_machine`: all
   workers share the run's device and its slots, with the op-time noise the profile saw); its speed-up is
   relative to the solo costs;
4. the closed forms (`pdasgd.closed_forms`) give the ideal one-device-per-worker figures.
Both traces go through `pdasgd.metrics.summarize`; `pdasgd.comparison` computes the errors. The output folder
gets report.md, compare.json, the resolved scenario with its measured costs, both traces, Gantt charts and a
staleness plot.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path
from typing import Any

from pdasgd.cli.common import (
    add_json_flag,
    eprint,
    folder_name,
    format_table,
    int_between,
    output_dir,
    print_json,
    with_batches,
)
from pdasgd.cli.prediction import Profiled, judge, measured_over_runs, predict, profiled
from pdasgd.cli.replay import (
    ACCURACY_SCHEDULES,
    accuracy_error,
    accuracy_of,
    add_accuracy_flags,
    check_accuracy_args,
    median_accuracy,
    noise_schedules,
)
from pdasgd.comparison import COLUMNS, compare_summaries, comparison_rows
from pdasgd.io import atomic_write_text
from pdasgd.scenario import Scenario, load_scenario, save_scenario


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "compare",
        help="predicted vs measured (and theory), side by side with errors, plus a report",
        description="Profile the scenario's network (unless it gives layer costs), simulate it on this "
        "machine, run it for real, and report predicted vs measured throughput, speed-up, staleness, "
        "utilisation and memory with their errors, beside the closed-form theory.",
    )
    parser.add_argument("scenario", help="scenario TOML file")
    parser.add_argument(
        "--out", metavar="DIR", help="output folder (default pdasgd-compare/<name>, the name made path-safe)"
    )
    parser.add_argument("--profile", action="store_true", help="measure layer costs even if given")
    parser.add_argument(
        "--fresh-profile",
        action="store_true",
        help="profile anew even if the same network was profiled in the last 15 minutes",
    )
    parser.add_argument("--batches", type=int, metavar="N", help="override run.batches")
    parser.add_argument(
        "--runs",
        type=int_between(1, 20),
        default=1,
        metavar="N",
        help="real runs to measure (default 1): the measurement is their mean and its interval the 95%% "
        "t-interval over them, which holds what changes from run to run on a shared machine; one run's "
        "interval is a bootstrap over its batches and does not (the accuracy: the median over the runs)",
    )
    add_accuracy_flags(parser, "the predicted trace replayed, beside the measured run's")
    parser.add_argument("--no-progress", action="store_true", help="never show a progress bar")
    add_json_flag(parser)
    parser.set_defaults(func=run)


@dataclasses.dataclass
class Measurement:
    """The real runs of one scenario: their traces and summaries, and the sequential time per batch
    their speed-ups divide by."""

    traces: list  # Trace, the first one first
    summaries: list  # Summary, one per run
    sequential_batch_s: float | None

    def over_runs(self) -> dict[str, Any]:
        """The measured intervals (`pdasgd.cli.prediction.measured_over_runs`)."""
        return measured_over_runs(self.summaries, self.traces[0])


@dataclasses.dataclass
class Comparison:
    """One method compared: the document of `pdasgd.comparison`, the two traces and summaries behind it,
    and the measured sequential time per batch its speed-ups divide by."""

    label: str
    scenario: Scenario
    document: dict[str, Any]
    predicted: Any  # Trace
    measured: Any  # Trace
    summaries: dict[str, Any]  # "predicted" / "measured" -> Summary
    sequential_batch_s: float | None
    machine: Scenario | None = None  # what the simulator predicted: the scenario on the run's machine
    measurement: Measurement | None = None  # every real run (--runs), `measured` the first

    def runs(self) -> list:
        """Every measured trace, the first (`measured`, whose Gantt chart the report shows) first."""
        return self.measurement.traces if self.measurement else [self.measured]


def compare_one(
    scenario: Scenario,
    sequential_batch_s: float | None = None,
    progress: bool = False,
    force: bool = False,
    fresh: bool = False,
    baseline: bool = True,
    runs: int = 1,
) -> Comparison:
    """Profile, run, simulate and compare one scenario; `sequential_batch_s` (or `baseline=False`, which
    leaves the measured speed-up out) skips the baseline run; `fresh` profiles anew even if a recent
    profile of the same network exists; `runs` real runs make the measurement their mean, with an
    interval over them (`pdasgd.cli.prediction.measured_over_runs`)."""
    costs = profiled(scenario, force, fresh)
    return compared(costs, measure(costs.scenario, runs, sequential_batch_s, baseline, progress), progress)


def measure(
    scenario: Scenario,
    runs: int = 1,
    sequential_batch_s: float | None = None,
    baseline: bool = True,
    progress: bool = False,
) -> Measurement:
    """`runs` real runs of `scenario` (`compare_one` says what the other arguments do)."""
    import executor
    from pdasgd.metrics import steady_time_per_batch_s, summarize

    alone = len(scenario.worker_names()) == 1
    baseline = baseline and sequential_batch_s is None and not alone
    first = executor.run(scenario, progress=progress, baseline=baseline).trace
    if alone:  # this run is its own sequential reference
        sequential_batch_s = steady_time_per_batch_s(first)
    reference_s = sequential_batch_s if sequential_batch_s is not None else first.sequential_batch_s
    more = [executor.run(scenario, progress=progress).trace for _ in range(runs - 1)]
    summaries = [summarize(first, sequential_batch_s=sequential_batch_s)]
    summaries += [summarize(t, sequential_batch_s=_reference(t, alone, reference_s)) for t in more]
    return Measurement([first, *more], summaries, reference_s)


def compared(costs: Profiled, measurement: Measurement, progress: bool = False) -> Comparison:
    """The prediction from `costs` (`predict_beside`, on the machine of the measurement's first run)
    against the measurement: the document with errors, intervals and verdicts."""
    from pdasgd.closed_forms import theory_for
    from pdasgd.metrics import mean_summary

    scenario, first = costs.scenario, measurement.traces[0]
    prediction = predict_beside(costs, first, progress)
    summaries = {"predicted": prediction["summary"], "measured": mean_summary(measurement.summaries)}
    document = compare_summaries(
        summaries["predicted"].to_dict(), summaries["measured"].to_dict(), theory_for(scenario)
    )
    document["machine"] = {
        "device_slots": first.device_slots,
        "jitter_cv": costs.jitter_cv,
        "pipelined_costs": costs.pipelined,
        "speeds": list(costs.speeds),
    }
    document["profile"] = {
        "precision": costs.precision.to_dict() if costs.precision else None,
        "reused_age_s": costs.reused_age_s,
        "notes": costs.notes(),
    }
    document["intervals"] = judge(prediction, measurement.over_runs(), first.batches - first.warmup)
    document["measured_runs"] = [
        {"throughput_batches_per_s": s.throughput_batches_per_s, "staleness_mean": s.staleness.mean}
        for s in measurement.summaries
    ]
    return Comparison(
        scenario.method,
        scenario,
        document,
        prediction["trace"],
        first,
        summaries,
        measurement.sequential_batch_s,
        prediction["machine"],
        measurement,
    )


def _reference(trace: Any, alone: bool, reference_s: float | None) -> float | None:
    """A later run's sequential time per batch: its own for one worker, else the first run's."""
    from pdasgd.metrics import steady_time_per_batch_s

    return steady_time_per_batch_s(trace) if alone else reference_s


def predict_beside(costs: Profiled, measured_trace: Any, progress: bool = False) -> dict[str, Any]:
    """The simulator's prediction of the profiled scenario on the machine the measured run used: its
    device and slots, the profile's op noise and role speeds, the network the ranks probed."""
    from pdasgd.machine import on_machine, with_network

    machine = on_machine(costs.scenario, measured_trace.device_slots, costs.jitter_cv, costs.speeds)
    machine = with_network(machine, measured_trace.info.get("allreduce_probe"))
    return {"machine": machine, **predict(machine, costs.precision, costs.sequential_batch_s, progress)}


def write_outputs(out_dir: Path, title: str, comparisons: list[Comparison], notes: list[str]) -> Path:
    """Traces, plots, JSON and report.md for the comparisons; returns the report's path."""
    from pdasgd.plots import gantt, staleness_plot
    from pdasgd.report import write_report

    plots: dict[str, str] = {}
    runs: dict[str, dict] = {}
    for item in comparisons:
        tag = item.label
        save_scenario(item.scenario, out_dir / f"{tag}.scenario.toml")
        if item.machine is not None:  # what was simulated: `pdasgd simulate` on it gives the prediction
            save_scenario(item.machine, out_dir / f"{tag}.machine.scenario.toml")
        item.predicted.save(out_dir / f"{tag}.predicted.trace.json")
        item.measured.save(out_dir / f"{tag}.measured.trace.json")
        for number, trace in enumerate(item.runs()[1:], start=2):
            trace.save(out_dir / f"{tag}.measured.run{number}.trace.json")
        item.measured.save_chrome(out_dir / f"{tag}.measured.chrome.json")
        for side, trace in (("predicted", item.predicted), ("measured", item.measured)):
            gantt(trace, out_dir / f"{tag}.gantt.{side}.png", title=f"{tag}: {side}")
            plots[f"{tag}: Gantt chart, {side}"] = f"{tag}.gantt.{side}.png"
            runs[f"{tag} {side}"] = item.summaries[side]
    staleness_plot(runs, out_dir / "staleness.png", title="per-layer staleness, predicted vs measured")
    plots["Per-layer staleness, predicted vs measured"] = "staleness.png"
    for item in comparisons:
        if "accuracy" in item.document:
            plots[f"{item.label}: test accuracy, predicted vs measured (both replayed)"] = "accuracy.png"
    documents = {item.label: item.document for item in comparisons}
    atomic_write_text(out_dir / "compare.json", json.dumps(documents, indent=2, default=_jsonable))
    return write_report(out_dir, title, documents, plots, notes)


def _jsonable(value: Any) -> Any:
    return None if value != value else str(value)  # NaN -> null


def print_tables(comparisons: list[Comparison]) -> None:
    for item in comparisons:
        print(f"\n{item.label}:")
        print(format_table(COLUMNS, comparison_rows(item.document)))


def run(args: argparse.Namespace) -> int:
    scenario = with_batches(load_scenario(args.scenario), args.batches)
    check_accuracy_args(args, [scenario])
    out_dir = output_dir(args.out or Path("pdasgd-compare") / folder_name(scenario.name), "--out")
    progress = not args.no_progress and not args.json
    item = compare_one(
        scenario, progress=progress, force=args.profile, fresh=args.fresh_profile, runs=args.runs
    )
    notes = [f"scenario: {args.scenario}", "theory: one device per worker, fixed op times"]
    if args.runs > 1:
        notes.append(f"measured: the mean over {args.runs} real runs (the Gantt chart shows the first)")
    if args.accuracy:
        add_accuracy(item, args.target, args.eval_points, out_dir, args.schedules)
        notes.append("accuracy: the predicted and the measured trace, each replayed on the real network")
    report = write_outputs(out_dir, f"pdasgd compare: {scenario.name}", [item], notes)
    if args.json:
        print_json(item.document)
    else:
        print_tables([item])
        if args.accuracy:
            print(format_table(ACCURACY_COLUMNS, accuracy_rows(item.document["accuracy"])))
        eprint(f"\nreport: {report}")
    return 0


ACCURACY_COLUMNS = ["accuracy", "predicted", "measured", "error"]


def add_accuracy(
    item: Comparison, target: float, eval_points: int, out_dir: Path, schedules: int = ACCURACY_SCHEDULES
) -> None:
    """Time to `target` from the predicted schedules replayed (`predicted_schedules`; their medians,
    `median_accuracy`), beside the measured run's (its trace replayed, which gives the run's own
    parameters; with several runs the medians over them), with the errors, into the document; the curves
    as a plot."""
    from pdasgd.plots import accuracy_plot

    runs = item.runs()
    sides = {
        "predicted": median_accuracy(
            item.scenario, predicted_schedules(item, schedules), target, eval_points
        ),
        "measured": median_accuracy(item.scenario, runs, target, eval_points)
        if len(runs) > 1
        else accuracy_of(item.scenario, item.measured, target, eval_points),
    }
    accuracy_plot(sides, out_dir / "accuracy.png", target, f"{item.label}: predicted vs measured accuracy")
    brief = {
        side: {k: v for k, v in data.items() if k not in ("curve", "losses")} for side, data in sides.items()
    }
    item.document["accuracy"] = {
        "target": target,
        **brief,
        "error": accuracy_error(brief["predicted"], brief["measured"]),
        "plot": "accuracy.png",
    }


def predicted_schedules(item: Comparison, count: int = ACCURACY_SCHEDULES) -> list:
    """The predicted trace and `count` - 1 op-noise variants on the machine it was simulated on
    (`pdasgd.cli.replay.noise_schedules`)."""
    if item.machine is None:
        return [item.predicted]
    return noise_schedules(item.machine, item.predicted, count)


def accuracy_rows(accuracy: dict) -> list[list[Any]]:
    predicted, measured_, error = accuracy["predicted"], accuracy["measured"], accuracy["error"]
    target = accuracy["target"]

    def percent(value: float | None) -> str:
        return "-" if value is None else f"{100 * value:+.1f}%"

    return [
        [
            f"time to {target:g} (s)",
            predicted["time_to_target_s"],
            measured_["time_to_target_s"],
            percent(error["time_to_target"]),
        ],
        [
            f"batches to {target:g}",
            predicted["batches_to_target"],
            measured_["batches_to_target"],
            percent(error["batches_to_target"]),
        ],
        [
            "final accuracy",
            predicted["final_accuracy"],
            measured_["final_accuracy"],
            f"{error['final_accuracy']:+.3f}",
        ],
        *_spread_rows(predicted, target),
    ]


def _spread_rows(predicted: dict, target: float) -> list[list[Any]]:
    """The range of the predicted schedules' batches to the target (the rows above give medians)."""
    count = predicted.get("schedules", 1)
    if count < 2:
        return []
    span = predicted["batches_to_target_range"]
    reached = f"{predicted['schedules_reaching_target']} of {count} predicted schedules reach it"
    where = f"{span[0]}-{span[1]}, {reached}" if span else reached
    return [[f"batches to {target:g}: range", where, "-", ""]]
