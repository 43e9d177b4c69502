"""What every command shares: the argument parser that fails in one line, user errors, JSON output.

A user error (bad flag, bad scenario, bad trace) prints one line `pdasgd: error: ...` to stderr and exits with
status 2, without a traceback. Command modules import engines (simulator, executor, torch) inside their `run`
function only, so `pdasgd --help` stays fast.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from typing import Any, NoReturn

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


class UsageError(Exception):
    """Bad input from the user: reported in one line, exit status 2."""


class OneLineParser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line (no usage dump) and exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see --help)\n")


def add_json_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print machine-readable JSON instead of a table")


def print_json(data: Any) -> None:
    """Print JSON; non-finite floats become null so any JSON reader accepts the output."""
    print(json.dumps(_finite(data), indent=2))


def _finite(data: Any) -> Any:
    if isinstance(data, float) and not math.isfinite(data):
        return None
    if isinstance(data, dict):
        return {key: _finite(value) for key, value in data.items()}
    if isinstance(data, list | tuple):
        return [_finite(value) for value in data]
    return data


def format_table(headers: list[str], rows: list[list[Any]]) -> str:
    """A plain aligned text table; floats get 4 significant digits."""
    cells = [[_cell(value) for value in row] for row in [headers, *rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)) for row in cells]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(line.rstrip() for line in lines)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, list):
        return "[" + ", ".join(_cell(item) for item in value) + "]"
    return str(value)


def fail(message: str) -> NoReturn:
    raise UsageError(message)


def eprint(message: str) -> None:
    print(message, file=sys.stderr)
