"""What every command shares: the argument parser that fails in one line, user errors, JSON output.

A user error (bad flag, bad scenario, bad trace) prints one line `pdasgd: error: ...` to stderr and exits with
status 2, without a traceback. Command modules import engines (simulator, executor, torch) inside their `run`
function only, so `pdasgd --help` stays fast.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

from pdasgd.io import writable_folder
from pdasgd.scenario import Scenario, ScenarioError

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
    print(json.dumps(finite(data), indent=2))


def finite(data: Any) -> Any:
    """`data` with every non-finite float (nan, inf) replaced by None, as JSON has no such numbers."""
    if isinstance(data, float) and not math.isfinite(data):
        return None
    if isinstance(data, dict):
        return {key: finite(value) for key, value in data.items()}
    if isinstance(data, list | tuple):
        return [finite(value) for value in data]
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


def one_line(error: BaseException | str) -> str:
    """An error's message on one line: line breaks and other control characters shown as escapes."""
    text = str(error)
    return "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in text) or type(error).__name__


# --- output paths, checked before any work ---------------------------------------------------------


def output_file(text: str | None, flag: str) -> Path | None:
    """The file `flag` names, once it is clear it can be written (UsageError naming the flag if not)."""
    if text is None:
        return None
    path = _path(text, flag)
    if path.is_dir():
        fail(f"{flag}: {path} is a folder; give a file name")
    if path.name in ("", ".", ".."):
        fail(f"{flag}: {text!r} names no file")
    problem = writable_folder(path.parent)
    if problem:
        fail(f"{flag}: cannot write {path}: {problem}")
    return path


def output_dir(text: str | os.PathLike, flag: str) -> Path:
    """The folder `flag` names, once it is clear files can be created in it (UsageError if not)."""
    path = _path(str(text), flag)
    if path.exists() and not path.is_dir():
        fail(f"{flag}: {path} is a file, not a folder")
    problem = writable_folder(path)
    if problem:
        fail(f"{flag}: cannot write in {path}: {problem}")
    return path


def _path(text: str, flag: str) -> Path:
    if not text:
        fail(f"{flag}: must not be empty")
    if "\0" in text:
        fail(f"{flag}: a path cannot hold a NUL character")
    return Path(text)


def folder_name(name: str) -> str:
    """`name` as one safe path component for a default output folder: letters, digits, `.`, `_` and `-`
    kept, anything else (path separators, `..`, control characters) becomes `_`."""
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", name).lstrip(".-")[:100]
    return safe or "scenario"


def int_between(low: int, high: int) -> Callable[[str], int]:
    """An argparse type: an integer from `low` to `high`, else a one-line error."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be an integer, got {text!r}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be between {low} and {high}, got {value}")
        return value

    return parse


def check_range(flag: str, value: int | float, low: int | float, high: int | float) -> None:
    """UsageError naming the flag unless low <= value <= high."""
    if value < low:
        fail(f"{flag}: must be >= {low}, got {value}")
    if value > high:
        fail(f"{flag}: must be <= {high}, got {value}")


def with_batches(scenario: Scenario, batches: int | None, flag: str = "--batches") -> Scenario:
    """`scenario` with `run.batches` set from `flag`, the warm-up lowered to a tenth when it would not be
    below the new count; a bad value is an error naming the flag."""
    if batches is None:
        return scenario
    overrides: dict[str, Any] = {"run.batches": batches}
    if scenario.run.warmup >= batches:
        overrides["run.warmup"] = max(batches, 0) // 10
    try:
        return scenario.with_overrides(overrides)
    except ScenarioError as error:
        field, _, problem = str(error).partition(": ")
        if field in ("run.batches", "run.warmup"):
            fail(f"{flag}: {problem}")
        raise
