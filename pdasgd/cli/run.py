"""`pdasgd run`: train the scenario's network for real (the executor) and print the summary of its trace.

The summary comes from `pdasgd.metrics.summarize`, as for the simulator. `--trace` writes the trace
(JSON), `--chrome` a Chrome/Perfetto trace, `--gantt` a timeline picture, `--checkpoint DIR` saves and
resumes training state; every output path is checked before the run starts. Ctrl-C, SIGTERM or SIGHUP
stops the run, writes the partial trace where `--trace`/`--chrome`/`--gantt` ask for it, and exits with 128
+ the signal's number. A worker failure prints its traceback and one line naming the worker, and exits with
status 1; so does an op that runs longer than `run.op_timeout_s` (the watchdog); a NaN or infinite loss is
one line and status 2. Each writes the partial trace too.
"""

from __future__ import annotations

import argparse
import sys
import traceback
from typing import Any

from pdasgd.cli import signals
from pdasgd.cli.common import (
    EXIT_USAGE,
    add_json_flag,
    check_range,
    eprint,
    fail,
    format_table,
    one_line,
    output_dir,
    output_file,
    print_json,
)
from pdasgd.scenario import load_scenario

EXIT_FAILED = 1
MAX_GANTT_BATCHES = 1000
MAX_CURVE_POINTS = 100  # each point keeps a copy of the parameters until the run ends


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "run",
        help="train the scenario's network for real and summarise its trace",
        description="Train [train]'s network with the scenario's method (sequential, async-lu, async-bu or "
        "hogwild) on this machine's CPU or GPU, trace every layer's forward, backward and update, and print "
        "throughput, staleness, utilisation, memory and test accuracy.",
    )
    parser.add_argument("scenario", help="scenario TOML file")
    add_json_flag(parser)
    parser.add_argument("--trace", metavar="F", help="write the trace as JSON to F")
    parser.add_argument(
        "--chrome", metavar="F", help="write a Chrome trace (Perfetto, chrome://tracing) to F"
    )
    parser.add_argument("--gantt", metavar="F.png", help="write a Gantt chart of the first batches")
    parser.add_argument(
        "--gantt-batches", type=int, default=12, metavar="N", help="batches in the Gantt chart (12)"
    )
    parser.add_argument("--checkpoint", metavar="DIR", help="save training state to DIR; resume from it")
    parser.add_argument(
        "--checkpoint-every", type=int, default=100, metavar="N", help="batches between checkpoints (100)"
    )
    parser.add_argument(
        "--baseline",
        action="store_true",
        help="first run sequential on the same batches, for speedup_vs_sequential",
    )
    parser.add_argument(
        "--curve-points", type=int, default=10, metavar="N", help="points of the accuracy curve (10)"
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    scenario = load_scenario(args.scenario)
    _check_flags(args)
    outputs = _outputs(args)  # every output checked before any work
    if args.gantt:
        _plotter()  # fail before training, not after
    import executor.runtime as runtime

    runtime.check_method(scenario)
    try:
        result = runtime.run(
            scenario,
            progress=True,
            checkpoint_dir=outputs["checkpoint"],
            checkpoint_every=args.checkpoint_every,
            curve_points=args.curve_points,
            baseline=args.baseline,
        )
    except runtime.RunInterrupted as interrupt:
        trace = interrupt.result.trace if interrupt.result else None
        written = _write(args, _of_rank(outputs, trace), trace) if trace else ""
        done = trace.batches if trace else 0
        eprint(f"pdasgd run: stopped by {signals.describe()} after {done} batches{written}")
        return signals.exit_status()
    except runtime.RunFailed as failure:
        trace = failure.result.trace if failure.result else None
        written = _write(args, _of_rank(outputs, trace), trace) if trace else ""
        if isinstance(failure, runtime.WorkerError):
            traceback.print_exception(failure.__cause__, file=sys.stderr)
        eprint(f"pdasgd run: error: {one_line(failure)}{written}")
        return EXIT_USAGE if isinstance(failure, runtime.LossNotFinite) else EXIT_FAILED
    if result.trace.info.get("rank", 0):  # a rank of an outside torchrun: rank 0 reports for all
        return 0
    _write(args, outputs, result.trace)
    _print(args, result)
    return 0


def _of_rank(outputs: dict[str, Any], trace: Any) -> dict[str, Any]:
    """Under an outside torchrun each rank keeps its own partial trace: rank r > 0 writes `name.r<r>.ext`."""
    rank = trace.info.get("rank", 0)
    if not rank:
        return outputs
    return {
        key: path.with_name(f"{path.stem}.r{rank}{path.suffix}")
        if path is not None and key != "checkpoint"
        else path
        for key, path in outputs.items()
    }


def _check_flags(args: argparse.Namespace) -> None:
    check_range("--checkpoint-every", args.checkpoint_every, 1, 10**9)
    check_range("--gantt-batches", args.gantt_batches, 1, MAX_GANTT_BATCHES)
    check_range("--curve-points", args.curve_points, 0, MAX_CURVE_POINTS)


def _outputs(args: argparse.Namespace) -> dict[str, Any]:
    """Every output path, checked (UsageError naming the flag) before the run starts."""
    outputs = {flag: output_file(getattr(args, flag), f"--{flag}") for flag in ("trace", "chrome", "gantt")}
    outputs["checkpoint"] = (
        output_dir(args.checkpoint, "--checkpoint") if args.checkpoint is not None else None
    )
    return outputs


def _write(args: argparse.Namespace, outputs: dict[str, Any], trace: Any) -> str:
    """Write the trace where asked; return `; partial trace in F` for the stop line ('' if none)."""
    if outputs["trace"]:
        trace.save(outputs["trace"])
    if outputs["chrome"]:
        trace.save_chrome(outputs["chrome"])
    if outputs["gantt"]:
        title = f"{trace.method} (measured), first {args.gantt_batches} batches"
        _plotter()(trace, outputs["gantt"], batches=args.gantt_batches, title=title)
    files = [str(path) for key, path in outputs.items() if path is not None and key != "checkpoint"]
    return f"; trace written to {', '.join(files)}" if files else ""


def _plotter():
    try:
        from pdasgd.plots import gantt
    except ImportError as error:
        fail(f"--gantt: plotting is unavailable ({error})")
    return gantt


def _print(args: argparse.Namespace, result: Any) -> None:
    if args.json:
        curve = [list(point) for point in result.accuracy_curve]
        print_json({**result.summary.to_dict(), "accuracy_curve": curve})
        return
    print(format_table(["metric", "value"], summary_rows(result.summary.to_dict())))
    if len(result.accuracy_curve) > 1:
        print()
        rows = [[batches, time_s, accuracy] for batches, time_s, accuracy in result.accuracy_curve]
        print(format_table(["batches", "time_s", "test accuracy"], rows))


def summary_rows(summary: dict) -> list[list[Any]]:
    """The summary as (metric, value) rows, nested keys flattened with dots."""
    rows: list[list[Any]] = []
    for key, value in summary.items():
        if isinstance(value, dict):
            rows += [[f"{key}.{inner}", item] for inner, item in value.items()]
        else:
            rows.append([key, value])
    return rows
