"""`pdasgd compare`: profile -> simulate -> run for real -> predicted vs measured, side by side, with errors.

For each method compared:
1. the network's per-layer costs are measured on the executor's own code path (`executor.profile`), unless
   the scenario gives them (`--profile` measures anyway): one worker alone for sequential, a short
   forward + backward pipeline for the other methods (ops run slower there);
2. the real run (`executor.run`) gives the measured trace; a sequential run on the same batches gives the
   measured speed-up's reference;
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
import statistics
from pathlib import Path
from typing import Any

from pdasgd.cli.common import (
    add_json_flag,
    eprint,
    folder_name,
    format_table,
    output_dir,
    print_json,
    with_batches,
)
from pdasgd.comparison import COLUMNS, compare_summaries, comparison_rows
from pdasgd.io import atomic_write_text
from pdasgd.scenario import Model, Scenario, load_scenario, save_scenario


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
    parser.add_argument("--batches", type=int, metavar="N", help="override run.batches")
    parser.add_argument("--no-progress", action="store_true", help="never show a progress bar")
    add_json_flag(parser)
    parser.set_defaults(func=run)


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


@dataclasses.dataclass(frozen=True)
class Profiled:
    """The scenario with the layer costs its method pays, and what the profiler measured besides."""

    scenario: Scenario
    jitter_cv: float  # op-time noise matching the measured batch-to-batch variation
    sequential_batch_s: float  # the costs of one batch by one worker alone, summed
    pipelined: bool  # whether the costs come from a pipelined run (executor.profile.measure_pipelined)


def profiled(scenario: Scenario, force: bool = False) -> Profiled:
    """Measure the scenario's layer costs, unless it gives some and not `force`.

    Sequential runs pay the costs of one worker alone; the pipelined methods the costs measured in a
    forward + backward pipeline, which are higher and about twice as variable (executor.profile). The op-time
    noise (`batch_matched_cv`) comes from the same measurement as the costs."""
    from executor.profile import measure, measure_pipelined

    samples = measure(scenario)
    sequential_s = sum(layer.cost(op) for layer in samples for op in ("forward", "backward", "update"))
    if scenario.model is not None and not force:
        return Profiled(scenario, batch_matched_cv(samples), sequential_s, pipelined=False)
    pipelined = len(scenario.worker_names()) > 1
    if pipelined:
        samples = measure_pipelined(scenario, samples)
    model = Model(tuple(layer.layer("mean") for layer in samples))
    return Profiled(
        dataclasses.replace(scenario, model=model), batch_matched_cv(samples), sequential_s, pipelined
    )


def batch_matched_cv(samples: list) -> float:
    """The op-time noise that gives the measured batch-to-batch variation.

    The simulator draws each op's noise independently; measured op times are correlated within a batch (a
    slow batch is slow in most of its ops), so the per-op CV understates how much whole forwards and
    backwards vary, and the simulated workers fall into lockstep. For the forward ops and for the backward
    and update ops of a batch, with per-op means c_i and batch totals of CV v, independent noise of CV
    v sum(c_i) / sqrt(sum(c_i^2)) gives totals of CV v; the mean of the two roles' values is returned."""
    roles = (("forward",), ("backward", "update"))
    values = []
    for ops in roles:
        series = [layer.samples[op] for layer in samples for op in ops if layer.samples[op]]
        count = min((len(times) for times in series), default=0)
        if count < 2:
            continue
        totals = [sum(times[i] for times in series) for i in range(count)]
        means = [statistics.fmean(times) for times in series]
        if sum(means) > 0:
            batch_cv = statistics.pstdev(totals) / statistics.fmean(totals)
            values.append(batch_cv * sum(means) / sum(m * m for m in means) ** 0.5)
    return statistics.fmean(values) if values else 0.0


def compare_one(
    scenario: Scenario, sequential_batch_s: float | None = None, progress: bool = False, force: bool = False
) -> Comparison:
    """Profile, run, simulate and compare one scenario; `sequential_batch_s` skips the baseline run."""
    import executor
    import simulator
    from pdasgd.closed_forms import theory_for
    from pdasgd.machine import on_machine
    from pdasgd.metrics import steady_time_per_batch_s, summarize

    costs = profiled(scenario, force)
    scenario = costs.scenario
    alone = len(scenario.worker_names()) == 1
    baseline = sequential_batch_s is None and not alone
    measured = executor.run(scenario, progress=progress, baseline=baseline).trace
    if alone:  # this run is its own sequential reference
        sequential_batch_s = steady_time_per_batch_s(measured)
    machine = on_machine(scenario, measured.device_slots, costs.jitter_cv)
    predicted = simulator.simulate(machine, progress=progress)
    summaries = {
        "predicted": summarize(predicted, sequential_batch_s=costs.sequential_batch_s),
        "measured": summarize(measured, sequential_batch_s=sequential_batch_s),
    }
    document = compare_summaries(
        summaries["predicted"].to_dict(), summaries["measured"].to_dict(), theory_for(scenario)
    )
    document["machine"] = {
        "device_slots": measured.device_slots,
        "jitter_cv": costs.jitter_cv,
        "pipelined_costs": costs.pipelined,
    }
    reference_s = sequential_batch_s if sequential_batch_s is not None else measured.sequential_batch_s
    return Comparison(scenario.method, scenario, document, predicted, measured, summaries, reference_s)


def write_outputs(out_dir: Path, title: str, comparisons: list[Comparison], notes: list[str]) -> Path:
    """Traces, plots, JSON and report.md for the comparisons; returns the report's path."""
    from pdasgd.plots import gantt, staleness_plot
    from pdasgd.report import write_report

    plots: dict[str, str] = {}
    runs: dict[str, dict] = {}
    for item in comparisons:
        tag = item.label
        save_scenario(item.scenario, out_dir / f"{tag}.scenario.toml")
        item.predicted.save(out_dir / f"{tag}.predicted.trace.json")
        item.measured.save(out_dir / f"{tag}.measured.trace.json")
        item.measured.save_chrome(out_dir / f"{tag}.measured.chrome.json")
        for side, trace in (("predicted", item.predicted), ("measured", item.measured)):
            gantt(trace, out_dir / f"{tag}.gantt.{side}.png", title=f"{tag}: {side}")
            plots[f"{tag}: Gantt chart, {side}"] = f"{tag}.gantt.{side}.png"
            runs[f"{tag} {side}"] = item.summaries[side]
    staleness_plot(runs, out_dir / "staleness.png", title="per-layer staleness, predicted vs measured")
    plots["Per-layer staleness, predicted vs measured"] = "staleness.png"
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
    out_dir = output_dir(args.out or Path("pdasgd-compare") / folder_name(scenario.name), "--out")
    progress = not args.no_progress and not args.json
    item = compare_one(scenario, progress=progress, force=args.profile)
    notes = [f"scenario: {args.scenario}", "theory: one device per worker, fixed op times"]
    report = write_outputs(out_dir, f"pdasgd compare: {scenario.name}", [item], notes)
    if args.json:
        print_json(item.document)
    else:
        print_tables([item])
        eprint(f"\nreport: {report}")
    return 0
