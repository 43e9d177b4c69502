"""`pdasgd demo`: the built-in default, end to end on this machine, with no input needed.

It runs `compare` for sequential, async-bu and async-lu on the built-in scenario (an MLP on digits, one
forward and two backward workers): each network profile, real run and simulation of the same schedule,
then prints predicted vs measured throughput and staleness and writes a report with Gantt charts and
staleness plots to a folder whose path it prints. The sequential run is the speed-up reference of the two
others. `--show-scenario` prints the scenario so it can be copied and edited.
"""

from __future__ import annotations

import argparse

from pdasgd.cli.common import add_json_flag, eprint, format_table, output_dir, print_json, with_batches
from pdasgd.demo import DEMO_METHODS, DEMO_TOML, demo_scenario


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="run the built-in default scenario end to end (about a minute)",
        description="Profile, simulate and really run the built-in scenario (an MLP on digits) with "
        "sequential, async-bu and async-lu, and report predicted vs measured side by side.",
    )
    parser.add_argument("--out", metavar="DIR", default="pdasgd-demo", help="report folder (pdasgd-demo)")
    parser.add_argument("--batches", type=int, metavar="N", help="override run.batches (default 300)")
    parser.add_argument("--show-scenario", action="store_true", help="print the built-in scenario and exit")
    parser.add_argument("--no-progress", action="store_true", help="never show a progress bar")
    add_json_flag(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pdasgd.cli.compare import compare_one, write_outputs
    from pdasgd.report import SUMMARY_COLUMNS, summary_rows

    if args.show_scenario:
        print(DEMO_TOML, end="")
        return 0
    scenario = with_batches(demo_scenario(), args.batches)
    out_dir = output_dir(args.out, "--out")
    progress = not args.no_progress and not args.json
    comparisons, sequential_s = [], None
    for method in DEMO_METHODS:
        if progress:
            eprint(f"{method}: profile, run, simulate")
        item = compare_one(scenario.with_overrides({"method": method}), sequential_s, progress)
        sequential_s = sequential_s or item.sequential_batch_s
        comparisons.append(item)
    notes = [
        "built-in scenario (`pdasgd demo --show-scenario`)",
        "theory: one device per worker, fixed times",
    ]
    report = write_outputs(out_dir, f"pdasgd demo: {scenario.name}", comparisons, notes)
    documents = {item.label: item.document for item in comparisons}
    if args.json:
        print_json({"report": str(report), "comparisons": documents})
        return 0
    print(format_table(SUMMARY_COLUMNS, summary_rows(documents)))
    print(f"\nreport with Gantt charts and staleness plots: {report.resolve()}")
    return 0
