"""`pdasgd validate`: print the resolved scenario (every default filled in) or the one-line error."""

from __future__ import annotations

import argparse

from pdasgd.cli.common import add_json_flag, print_json
from pdasgd.scenario import load_scenario


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "validate",
        help="check a scenario file and print it resolved",
        description="Check SCENARIO.toml and print it with every default filled in and the uniform model "
        "expanded into explicit layers (as TOML, or as JSON with --json).",
    )
    parser.add_argument("scenario", help="scenario TOML file")
    add_json_flag(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    scenario = load_scenario(args.scenario)
    if args.json:
        print_json(scenario.to_dict())
    else:
        print(scenario.to_toml(), end="")
    return 0
