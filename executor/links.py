"""What connects workers: the hand-off link, the in-flight window and the batch source.

- `Link`: forward workers put finished forwards in; a batch becomes available to the backward workers
  `delays.handoff_s` after it was put (a link object, as SimPy's Cable: the sender never blocks). Backward
  workers take batches first in, first out, the earliest free worker first.
- `Window`: `max_in_flight` Q. The forward of batch i waits until batch i-Q's backward has finished.
- `BatchSource`: batch i of the run's deterministic stream (`executor.data.batch_stream`), whichever
  forward worker asks for it, on the run's device.

Every wait is a loop of short timed waits that checks the run's stop event, so a failing worker stops the
others within a fraction of a second: a waiting worker then raises `Stopped`.
"""

from __future__ import annotations

import heapq
import math
import threading
import time
from collections import deque
from collections.abc import Iterator
from typing import Any

import torch

from executor.timing import burn_from_start, nominal_now, op_started, waited

POLL_S = 0.05


class Stopped(Exception):
    """The run is stopping (another worker failed, Ctrl-C, or the caller's stop event)."""


def check(stop: threading.Event) -> None:
    if stop.is_set():
        raise Stopped


def sleep(seconds: float, stop: threading.Event) -> None:
    """A timed wait of `seconds` on the thread's nominal clock (executor.timing); raise Stopped if the run
    stops meanwhile."""
    op_started()
    if not burn_from_start(seconds, stop=stop):
        raise Stopped


class Link:
    """A FIFO whose items become visible `delay_s` after they are put; closed once all senders are done.

    Items go to waiting workers in the order the workers became free, ties in the order of the batches they
    finished, and before their first batch in worker order (the simulator's `BatchQueue` rule): `get` takes
    the batch the worker just finished, or `index - count` before its first."""

    def __init__(self, delay_s: float, stop: threading.Event, senders: int = 1) -> None:
        self.delay_s = delay_s
        self.stop = stop
        self._items: deque[tuple[float, Any]] = deque()
        self._senders = senders
        self._waiting: list[tuple[float, int]] = []  # (free since, batch finished) of each waiting worker
        self._cond = threading.Condition()

    def put(self, item: Any) -> None:
        with self._cond:
            self._items.append((nominal_now() + self.delay_s, item))
            self._cond.notify_all()

    def close(self) -> None:
        """One sender is done; once all are, `get` returns None when the link is empty."""
        with self._cond:
            self._senders -= 1
            self._cond.notify_all()

    def get(self, finished: int) -> Any | None:
        """The next item once visible and this worker's turn; None when closed and empty; raises Stopped
        when the run stops."""
        key = (-math.inf if finished < 0 else time.perf_counter(), finished)
        with self._cond:
            heapq.heappush(self._waiting, key)
            try:
                return self._take(key)
            finally:
                self._waiting.remove(key)
                heapq.heapify(self._waiting)
                self._cond.notify_all()

    def _take(self, key: tuple[float, int]) -> Any | None:
        while True:
            check(self.stop)
            if self._items:
                wait_s = self._items[0][0] - time.perf_counter()
                if wait_s <= 0 and self._waiting[0] == key:
                    return self._items.popleft()[1]
                waited()
                self._cond.wait(min(wait_s, POLL_S) if wait_s > 0 else POLL_S)
            elif self._senders <= 0:
                return None
            else:
                waited()
                self._cond.wait(POLL_S)


class Window:
    """At most `max_in_flight` batches between a forward's start and its backward's end."""

    def __init__(self, max_in_flight: int, first: int, stop: threading.Event, stride: int = 1) -> None:
        self.max_in_flight = max_in_flight * stride  # a rank of R trains every R-th batch: R x as far back
        self.stop = stop
        self._finished: set[int] = set()
        self._first = first  # batches before this one (resumed runs) count as finished
        self._cond = threading.Condition()

    def enter(self, batch: int) -> None:
        """Wait until batch - max_in_flight has finished its backward."""
        needed = batch - self.max_in_flight
        with self._cond:
            while needed >= self._first and needed not in self._finished:
                check(self.stop)
                waited()
                self._cond.wait(POLL_S)

    def finish(self, batch: int) -> None:
        with self._cond:
            self._finished.add(batch)
            self._cond.notify_all()


class BatchSource:
    """Batch i of a deterministic stream for any worker, moved to `device`; starts at batch `first`. Rank
    `rank` of `ranks` keeps only its batches (rank, rank + ranks, ...) and drops the others unread."""

    def __init__(
        self, stream: Iterator, first: int, device: torch.device, rank: int = 0, ranks: int = 1
    ) -> None:
        self._stream = stream
        self._next = 0
        self._ready: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        self._lock = threading.Lock()
        self.device = device
        self.rank, self.ranks = rank, ranks
        for _ in range(first):  # a resumed run skips the batches already trained on
            next(stream)
        self._next = first

    def get(self, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
        with self._lock:
            while self._next <= batch:
                pair = next(self._stream)
                if self._next % self.ranks == self.rank:
                    self._ready[self._next] = pair
                self._next += 1
            x, y = self._ready.pop(batch)
        if self.device.type != "cpu":
            return x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
        return x, y
