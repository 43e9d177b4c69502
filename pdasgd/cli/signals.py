"""Stopping a command: Ctrl-C, SIGTERM and SIGHUP all stop it the same way, once.

`stoppable()` wraps a command. The first of these signals raises `Stopped` (a KeyboardInterrupt) in the
main thread: the executor stops its workers and hands back the partial result, and the command writes the
partial trace and prints one line. Signals that come while it does so are counted and otherwise ignored (a
second Ctrl-C within a second of the first used to kill the run before its trace was written). The exit
status is 128 + the first signal's number: 130 for Ctrl-C, 143 for SIGTERM, 129 for SIGHUP. Once a stop
signal has come, the handlers stay in place after the command returns, so a signal that arrives while the
process exits does not turn its exit status into a raw signal death.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

STOP_NAMES = ("SIGINT", "SIGTERM", "SIGHUP")
STOP_SIGNALS = tuple(getattr(signal, name) for name in STOP_NAMES if hasattr(signal, name))


class Stopped(KeyboardInterrupt):
    """A stop signal arrived; `signum` says which."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class _State:
    first: int | None = None
    count = 0


_state = _State()


def first_signal() -> int:
    """The signal that stopped the command (SIGINT if it was a plain KeyboardInterrupt)."""
    return _state.first or signal.SIGINT


def stopped() -> bool:
    """Whether a stop signal arrived during the last `stoppable` block."""
    return _state.first is not None


def exit_status() -> int:
    return 128 + first_signal()


def describe() -> str:
    """`Ctrl-C`, `SIGTERM` or `SIGHUP`: how the command was stopped."""
    signum = first_signal()
    return "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name


def _handler(signum: int, frame: object) -> None:
    _state.count += 1
    if _state.first is None:
        _state.first = signum
        raise Stopped(signum)


@contextmanager
def stoppable() -> Iterator[None]:
    """Stop signals raise `Stopped` once inside the block (main thread only; elsewhere it does nothing)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _state.first, _state.count = None, 0
    previous = {signum: signal.signal(signum, _handler) for signum in STOP_SIGNALS}
    try:
        yield
    finally:
        if _state.first is None:  # once stopped, the process is on its way out: later signals stay ignored
            for signum, handler in previous.items():
                signal.signal(signum, handler)
