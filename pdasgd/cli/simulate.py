"""`pdasgd simulate`: predict a scenario's throughput, staleness, utilisation and memory with the simulator.

Prints a summary table (or `pdasgd.metrics.summarize` of the predicted trace as JSON with --json) and, on
request, writes the trace (JSON), a Chrome trace, a Gantt chart and a per-layer staleness plot. The full span
list is only built when a trace, Chrome trace or Gantt chart is asked for; otherwise fixed-time runs are
summarised straight from the fast path's arrays, so `--batches 1000000` is fine.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from pdasgd.cli.common import add_json_flag, fail, format_table, output_file, print_json, with_batches
from pdasgd.scenario import Scenario, ScenarioError, load_scenario

OUTPUTS = ("trace", "chrome", "gantt", "staleness_plot")


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "simulate",
        help="predict throughput, staleness and memory of a scenario",
        description="Simulate SCENARIO.toml (SimPy, or the exact fast path for fixed-time schedules with a "
        "device per worker) and print the predicted summary.",
    )
    parser.add_argument("scenario", help="scenario TOML file")
    add_json_flag(parser)
    parser.add_argument("--trace", metavar="F.json", help="write the predicted trace (pdasgd trace JSON)")
    parser.add_argument(
        "--chrome", metavar="F.json", help="write a Chrome trace (Perfetto, chrome://tracing)"
    )
    parser.add_argument("--gantt", metavar="F.png", help="write a Gantt chart of the first batches")
    parser.add_argument(
        "--gantt-batches",
        type=_gantt_batches,
        default=12,
        metavar="N",
        help="batches in the Gantt chart (12)",
    )
    parser.add_argument(
        "--staleness-plot",
        metavar="F.png",
        help="write per-layer staleness (async methods: layer-wise against block updates)",
    )
    parser.add_argument("--batches", type=_positive, metavar="N", help="override run.batches")
    parser.add_argument("--seed", type=_natural, metavar="N", help="override run.seed")
    parser.add_argument(
        "--engine", choices=("auto", "fast", "simpy"), default="auto", help="simulation engine (auto)"
    )
    parser.add_argument("--no-progress", action="store_true", help="never show a progress bar")
    parser.set_defaults(func=run)


def _gantt_batches(text: str) -> int:
    value = _positive(text)
    if value > 1000:
        raise argparse.ArgumentTypeError(f"must be <= 1000, got {value}")
    return value


def _positive(text: str) -> int:
    value = _natural(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _natural(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def run(args: argparse.Namespace) -> int:
    from simulator import choose_engine, simulate, simulate_summary

    scenario = _with_overrides(load_scenario(args.scenario), args)
    outputs = {flag: output_file(getattr(args, flag), f"--{flag.replace('_', '-')}") for flag in OUTPUTS}
    engine = choose_engine(scenario, args.engine)
    progress = False if args.no_progress else None
    trace = None
    # A Gantt chart needs only its first batches; on the fast path they do not depend on later ones.
    if args.trace or args.chrome or (args.gantt and engine == "simpy"):
        from pdasgd.metrics import summarize

        trace = simulate(scenario, engine=engine, progress=progress)
        summary = summarize(trace)
    else:
        summary = simulate_summary(scenario, engine=engine, progress=progress)
    written = _write_files(args, outputs, scenario, trace, summary, progress)
    if args.json:
        print_json(summary.to_dict())
    else:
        print(_report(scenario, summary, engine))
        for path in written:
            print(f"wrote {path}")
    return 0


def _with_overrides(scenario: Scenario, args: argparse.Namespace) -> Scenario:
    scenario = with_batches(scenario, args.batches)
    if args.seed is None:
        return scenario
    try:
        return scenario.with_overrides({"run.seed": args.seed})
    except ScenarioError as error:
        fail(f"--seed: {str(error).partition(': ')[2]}")


def _write_files(args, outputs: dict, scenario: Scenario, trace, summary, progress) -> list[Path]:
    written = []
    try:
        if outputs["trace"]:
            written.append(trace.save(outputs["trace"]))
        if outputs["chrome"]:
            written.append(trace.save_chrome(outputs["chrome"]))
        if outputs["gantt"]:
            written.append(_gantt(args, outputs["gantt"], scenario, trace))
        if outputs["staleness_plot"]:
            written.append(_staleness_plot(outputs["staleness_plot"], scenario, summary, progress))
    except OSError as error:
        fail(f"cannot write {error.filename or 'output'}: {error.strerror or error}")
    return written


def _gantt(args, path: Path, scenario: Scenario, trace) -> Path:
    from pdasgd.plots import gantt
    from simulator import simulate

    if trace is None:  # fast path: simulate just the batches shown
        shown = min(args.gantt_batches, scenario.run.batches)
        trace = simulate(scenario.with_overrides({"run.batches": shown, "run.warmup": 0}), engine="fast")
    title = f"{scenario.name}: {scenario.method} (predicted), first {args.gantt_batches} batches"
    return gantt(trace, path, batches=args.gantt_batches, title=title)


def _staleness_plot(path: Path, scenario: Scenario, summary, progress) -> Path:
    """This scenario's staleness; for async-lu/async-bu the other update rule on the same costs beside it."""
    from pdasgd.plots import staleness_plot
    from simulator import simulate_summary

    runs = {scenario.method: summary}
    other = scenario.definition.contrast
    if other:
        runs[other] = simulate_summary(scenario.with_overrides({"method": other}), progress=progress)
    return staleness_plot(runs, path, title=f"{scenario.name}: per-layer staleness (predicted)")


def _report(scenario: Scenario, summary, engine: str) -> str:
    staleness = summary.staleness
    overview = [
        ["method", summary.method],
        ["engine", engine],
        ["batches", summary.batches],
        ["makespan (s)", summary.makespan_s],
        ["throughput (batches/s)", summary.throughput_batches_per_s],
        ["speed-up vs sequential", summary.speedup_vs_sequential],
        ["staleness mean / max", f"{staleness.mean:.3g} / {staleness.max}"],
        ["memory peak", _bytes(summary.memory_peak_bytes)],
    ]
    layers = [
        [layer, mean, top, seconds]
        for layer, (mean, top, seconds) in enumerate(
            zip(
                staleness.per_layer_mean,
                staleness.per_layer_max,
                summary.time_staleness_s.per_layer_mean,
                strict=True,
            )
        )
    ]
    devices = [[device, value] for device, value in summary.utilization.items()]
    return "\n\n".join(
        [
            f"predicted: {scenario.name} ({scenario.method}), warmup {scenario.run.warmup} batches",
            format_table(["quantity", "value"], overview),
            format_table(["layer", "staleness mean", "staleness max", "time staleness (s)"], layers),
            format_table(["device", "utilisation"], devices),
        ]
    )


def _bytes(count: int | None) -> str | None:
    if count is None:
        return "- (no layer sizes)"
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if count >= size:
            return f"{count / size:.3g} {unit} ({count} bytes)"
    return f"{count} bytes"
