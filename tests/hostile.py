"""Helpers of the hostile-input suite: run a command in-process as a user would, under a time limit, and
check how it failed: exit status 2, one line on stderr naming the field or flag, no traceback, and no file
touched outside the folder the case allows."""

from __future__ import annotations

import contextlib
import io
import os
import signal
from dataclasses import dataclass
from pathlib import Path

from pdasgd.cli.main import main

TIME_LIMIT_S = 60


class TimedOut(Exception):
    pass


@dataclass
class Outcome:
    status: int
    out: str
    err: str


def _alarm(signum, frame):
    raise TimedOut(f"no answer within {TIME_LIMIT_S} s")


def run_cli(argv: list[str], cwd: Path) -> Outcome:
    """`pdasgd argv` in-process with `cwd` as the working folder; a crash (any exception) fails the test."""
    out, err = io.StringIO(), io.StringIO()
    here = os.getcwd()
    previous = signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(TIME_LIMIT_S)
    try:
        os.chdir(cwd)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                status = main(argv)
            except SystemExit as exit_:  # argparse's own errors
                status = exit_.code if isinstance(exit_.code, int) else 1
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
        os.chdir(here)
    return Outcome(status, out.getvalue(), err.getvalue())


def files_under(root: Path, leave_out: Path | None = None) -> dict[str, tuple[int, int]]:
    """Every file below `root` (outside `leave_out`) with its size and modification time."""
    found = {}
    for path in root.rglob("*"):
        if leave_out is not None and (path == leave_out or leave_out in path.parents):
            continue
        if path.is_file():
            stat = path.stat()
            found[str(path.relative_to(root))] = (stat.st_size, stat.st_mtime_ns)
    return found


def assert_one_line_error(outcome: Outcome, command: str, names: str) -> None:
    """Exit 2, one line `pdasgd COMMAND: error: ...` (`pdasgd: error: ...` for what the top-level parser
    refuses: an unknown command or flag) naming `names`, no traceback."""
    lines = outcome.err.strip().splitlines()
    assert outcome.status == 2, (outcome.status, outcome.err[-2000:])
    assert len(lines) == 1, outcome.err[-2000:]
    assert "Traceback" not in outcome.err
    assert lines[0].startswith((f"pdasgd {command}: error: ", "pdasgd: error: ")), lines[0]
    assert names in lines[0], (names, lines[0])
