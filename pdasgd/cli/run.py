"""`pdasgd run`: train the scenario's network for real (the executor) and print the summary of its trace.

The summary comes from `pdasgd.metrics.summarize`, as for the simulator. `--trace` writes the trace
(JSON), `--chrome` a Chrome/Perfetto trace, `--gantt` a timeline picture, `--checkpoint DIR` saves and
resumes training state. Ctrl-C stops the run, writes the partial trace where `--trace`/`--chrome` ask for
it, and exits with status 130. A worker failure prints its traceback and one line naming the worker, and
exits with status 1; a NaN or infinite loss is one line and status 2.
"""

from __future__ import annotations

import argparse
import sys
import traceback
from typing import Any

from pdasgd.cli.common import EXIT_INTERRUPTED, add_json_flag, eprint, fail, format_table, print_json
from pdasgd.scenario import load_scenario

EXIT_FAILED = 1


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
    if args.checkpoint_every < 1:
        fail(f"--checkpoint-every: must be >= 1, got {args.checkpoint_every}")
    if args.gantt_batches < 1:
        fail(f"--gantt-batches: must be >= 1, got {args.gantt_batches}")
    if args.curve_points < 0:
        fail(f"--curve-points: must be >= 0, got {args.curve_points}")
    if args.gantt:
        _plotter()  # fail before training, not after
    import executor.runtime as runtime

    runtime.check_method(scenario)
    try:
        result = runtime.run(
            scenario,
            progress=True,
            checkpoint_dir=args.checkpoint,
            checkpoint_every=args.checkpoint_every,
            curve_points=args.curve_points,
            baseline=args.baseline,
        )
    except runtime.RunInterrupted as interrupt:
        _write(args, interrupt.result.trace)
        eprint(f"pdasgd run: interrupted after {interrupt.result.trace.batches} batches")
        return EXIT_INTERRUPTED
    except runtime.WorkerError as error:
        traceback.print_exception(error.__cause__, file=sys.stderr)
        eprint(f"pdasgd run: error: {error}")
        return EXIT_FAILED
    _write(args, result.trace)
    _print(args, result)
    return 0


def _write(args: argparse.Namespace, trace: Any) -> None:
    if args.trace:
        trace.save(args.trace)
    if args.chrome:
        trace.save_chrome(args.chrome)
    if args.gantt:
        title = f"{trace.method} (measured), first {args.gantt_batches} batches"
        _plotter()(trace, args.gantt, batches=args.gantt_batches, title=title)


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
