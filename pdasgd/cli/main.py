"""The `pdasgd` console script: one subcommand per module in this package.

Each command module defines `add_parser(subparsers)`; its parser's `func` runs the command and returns an
exit status. Modules are found by name, so adding a command is adding a module. User errors (ScenarioError,
TraceError, UsageError, ValueError from theory arguments) become one line on stderr and exit status 2;
Ctrl-C, SIGTERM and SIGHUP stop a command once and exit with 128 + the signal's number
(`pdasgd.cli.signals`).
"""

from __future__ import annotations

import importlib
import os
import pkgutil
import sys

from pdasgd.cli import __path__, signals
from pdasgd.cli.common import EXIT_USAGE, OneLineParser, UsageError, eprint, one_line
from pdasgd.scenario import ScenarioError
from pdasgd.trace import TraceError

# Order in --help; modules not listed here follow alphabetically.
PREFERRED_ORDER = (
    "demo",
    "validate",
    "methods",
    "theory",
    "simulate",
    "profile",
    "run",
    "replay",
    "compare",
    "sweep",
)
NOT_COMMANDS = {"common", "main", "prediction", "signals"}


def command_names() -> list[str]:
    """Command modules in pdasgd/cli, in help order."""
    found = {info.name for info in pkgutil.iter_modules(__path__)} - NOT_COMMANDS
    listed = [name for name in PREFERRED_ORDER if name in found]
    return listed + sorted(found - set(listed))


def build_parser() -> OneLineParser:
    parser = OneLineParser(
        prog="pdasgd",
        description="Decoupled asynchronous backpropagation with layer-wise updates (Async LU / PD-ASGD): "
        "simulate a schedule, run it in real PyTorch training, and compare both with the theory.",
        epilog="Scenario keys and their defaults: README.md, 'Scenario files' (delays.handoff_s, "
        "delays.visibility_s, delays.allreduce_s, delays.jitter_cv, [[delays.straggler]] with kind = sleep "
        "or busy, ...). What each method and each delay means, the same in both engines: docs/design.md; "
        "`pdasgd methods` prints the methods' per-batch steps.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=OneLineParser)
    subparsers.required = True
    for name in command_names():
        importlib.import_module(f"pdasgd.cli.{name}").add_parser(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    with signals.stoppable():
        try:
            return int(args.func(args) or 0)
        except (ScenarioError, TraceError, UsageError, ValueError) as error:
            eprint(f"pdasgd {args.command}: error: {one_line(error)}")
            return EXIT_USAGE
        except KeyboardInterrupt:
            eprint(f"pdasgd {args.command}: stopped by {signals.describe()}")
            return signals.exit_status()


RANK_ENV = ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")  # set by torchrun (executor.world)


def entry() -> None:
    """The console script: `main`, then exit with its status. After a stop signal it leaves at once
    (os._exit, once the output is flushed): the partial results are written by then, and the interpreter's
    own shutdown restores the default signal handlers, so a signal arriving while it shuts down (a second
    Ctrl-C) would otherwise end the process with a raw signal status instead. A rank of an outside torchrun
    leaves the same way, as `executor.ranks` does for its own ranks: the interpreter's teardown sometimes
    destroys gloo's still-joinable thread and aborts a finished rank (SIGABRT, "terminate called without
    an active exception"), which torchrun reports as the whole run failing."""
    status = main()
    if signals.stopped() or all(key in os.environ for key in RANK_ENV):
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(status)
    sys.exit(status)


if __name__ == "__main__":
    entry()
