"""The `pdasgd` console script: one subcommand per module in this package.

Each command module defines `add_parser(subparsers)`; its parser's `func` runs the command and returns an exit
status. User errors (ScenarioError, TraceError, UsageError, ValueError from theory arguments) become one line on
stderr and exit status 2; Ctrl-C exits with 130.
"""

from __future__ import annotations

import importlib
import sys

from pdasgd.cli.common import EXIT_INTERRUPTED, EXIT_USAGE, OneLineParser, UsageError, eprint
from pdasgd.scenario import ScenarioError
from pdasgd.trace import TraceError

COMMANDS = ("validate", "theory", "demo")


def build_parser() -> OneLineParser:
    parser = OneLineParser(
        prog="pdasgd",
        description="Decoupled asynchronous backpropagation with layer-wise updates (Async LU / PD-ASGD): "
        "simulate a schedule, run it in real PyTorch training, and compare both with the theory.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=OneLineParser)
    subparsers.required = True
    for name in COMMANDS:
        importlib.import_module(f"pdasgd.cli.{name}").add_parser(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (ScenarioError, TraceError, UsageError, ValueError) as error:
        eprint(f"pdasgd {args.command}: error: {error}")
        return EXIT_USAGE
    except KeyboardInterrupt:
        eprint(f"pdasgd {args.command}: interrupted")
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
