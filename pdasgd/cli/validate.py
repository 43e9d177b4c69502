"""`pdasgd validate`: print the resolved scenario (every default filled in) or the one-line error.

The TOML printed starts with comments saying what the method does and its per-batch steps on the
scenario's layers (as `pdasgd methods` prints them), and reads back as the same scenario.
"""

from __future__ import annotations

import argparse

from pdasgd.cli.common import add_json_flag, print_json
from pdasgd.scenario import Scenario, load_scenario


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "validate",
        help="check a scenario file and print it resolved",
        description="Check SCENARIO.toml and print it with every default filled in and the uniform model "
        "expanded into explicit layers (as TOML, or as JSON with --json), headed by comments with the "
        "method's per-batch steps.",
    )
    parser.add_argument("scenario", help="scenario TOML file")
    add_json_flag(parser)
    parser.set_defaults(func=run)


def schedule_comments(scenario: Scenario) -> str:
    """`# ...` lines: the method's description and, with layer costs, its steps on those layers."""
    definition = scenario.definition
    lines = [f"method {definition.name}: {definition.description}"]
    if scenario.model is not None:
        steps = definition.schedule_text(len(scenario.model.layers), scenario.workers)
        lines += ["steps of one batch (F forward, B backward, U update, P publish, AR all-reduce):"]
        lines += [f"  {line}" for line in steps.splitlines()]
    return "".join(f"# {line}\n" for line in lines)


def run(args: argparse.Namespace) -> int:
    scenario = load_scenario(args.scenario)
    if args.json:
        print_json(scenario.to_dict())
    else:
        print(schedule_comments(scenario) + scenario.to_toml(), end="")
    return 0
