"""Timing spans on the CPU (perf_counter) and on CUDA (events on the worker's stream), CUDA streams, and
waiting or computing for an exact time.

A worker records `(op, batch, layer, start, end, version)` rows in its own `SpanLog` (no lock) with stamps
from the run's clock; the runtime turns every row into a `pdasgd.trace.Span` after the run, in seconds from
the run's start.

- `CpuClock`: a stamp is `time.perf_counter()`; with `torch.set_num_threads` set in every worker thread.
- `CudaClock`: a stamp is a `torch.cuda.Event(enable_timing=True)` recorded on the current stream; seconds
  are `elapsed_time` from an event recorded at the start, read after a final synchronize. Spans then say
  when the GPU ran the op, not when the CPU queued it.

On CUDA, PyTorch runs a backward op on the stream its forward op ran on, so a stream per backward worker
would not overlap anything. `CudaStreams` instead gives each batch in flight a stream of its own
(batch i uses stream i mod Q; batch i+Q cannot start before batch i's backward ends): batch i's forward,
backward and updates all run there, and batches overlap on the GPU. A version made on one stream and read on
another is ordered by its `ready` event, and `record_stream` keeps the caching allocator from reusing its
memory while the reading stream may still use it. Hogwild workers and the sequential worker each use one
stream of their own. The CUDA path cannot run in CI (no GPU); its tests are marked `gpu`.

`burn(seconds)` keeps a core busy for that long (a busy straggler, which holds its device in the simulator
too); `burn(seconds, sleep=True)` waits that long without a core. Timed ops (the timed network, stragglers)
go by a nominal clock per thread (`op_started`, `burn_from_start`, `waited`): an op ends its cost after its
nominal start, which is where the thread's previous timed op ended unless the thread has waited for another
since. The Python around the ops (0.1-0.3 ms per op here: a thread's first work after a sleep of a few
milliseconds runs up to 20 times slower, docs/platform.md) then delays a worker only when it hands work to
another, as a schedule with exact op times would. `time.sleep`
overshoots by 100-200 us on these machines (timer slack, a virtual machine), 2-4% of a 5 ms op, so the wait
sleeps until 0.4 ms before its deadline and then yields the core in a loop until the deadline: within a few
microseconds, holding the GIL only between yields (docs/platform.md).
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Iterator
from typing import Any

import torch

from executor.params import Version
from pdasgd.trace import Span

SPIN_S = 0.0004  # the last part of a wait, spent yielding instead of sleeping
CHUNK_S = 0.05  # a long wait checks the stop event this often


def burn(seconds: float, sleep: bool = False, stop: threading.Event | None = None) -> bool:
    """Spend `seconds`: computing on this core, or (`sleep`) waiting without it, to within microseconds.
    Returns False (early) if `stop` is set meanwhile."""
    deadline = time.perf_counter() + seconds
    if not sleep:
        work = torch.ones(64, 64)
        while time.perf_counter() < deadline:
            torch.mm(work, work)  # releases the GIL: other threads run meanwhile, this core stays busy
            if stop is not None and stop.is_set():
                return False
        return True
    while (rest_s := deadline - time.perf_counter() - SPIN_S) > 0:
        if stop is not None and stop.wait(min(rest_s, CHUNK_S)):
            return False
        if stop is None:
            time.sleep(rest_s)
    while time.perf_counter() < deadline:
        os.sched_yield()
    return True


class _Pace(threading.local):
    """This thread's timed ops on the nominal clock: when the current one started, when the last ended."""

    def __init__(self) -> None:
        self.start_s: float | None = None
        self.end_s: float | None = None


_pace = _Pace()


def op_started() -> None:
    """This thread starts an op: on the nominal clock, where its last op ended if that was a timed op and
    the thread has not waited for another since (`waited`); else now."""
    now = time.perf_counter()
    end = _pace.end_s
    _pace.start_s = end if end is not None and end <= now else now
    _pace.end_s = None  # an op that burns no time ends when it really does


def nominal_now() -> float:
    """Now on this thread's nominal clock: the end of its last op if that was a timed op, else now."""
    end = _pace.end_s
    return end if end is not None else time.perf_counter()


def waited() -> None:
    """This thread waited for another (a batch, the window): its next op starts when it really does."""
    _pace.end_s = None


def burn_from_start(seconds: float, busy: bool = False, stop: threading.Event | None = None) -> bool:
    """Spend the rest of `seconds` after the op's nominal start (`op_started`), sleeping (or computing, with
    `busy`): an op of exactly that cost, whatever Python spent around it. False if `stop` was set."""
    start = _pace.start_s if _pace.start_s is not None else time.perf_counter()
    deadline = start + seconds
    _pace.start_s = _pace.end_s = deadline  # a later burn of the same op continues from here
    left_s = deadline - time.perf_counter()
    return burn(left_s, sleep=not busy, stop=stop) if left_s > 0 else True


class CpuClock:
    """Stamps are perf_counter seconds."""

    def __init__(self) -> None:
        self.start = time.perf_counter()

    def stamp(self) -> float:
        return time.perf_counter()

    def seconds(self, stamp: float) -> float:
        return stamp - self.start

    def now_s(self) -> float:
        """Seconds since the start, on the host."""
        return time.perf_counter() - self.start

    def finish(self) -> None:
        """Wait for queued work (nothing to wait for on the CPU)."""


class CudaClock(CpuClock):
    """Stamps are CUDA events on the current stream, resolved after `finish`."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        torch.cuda.synchronize(device)
        super().__init__()
        self.base = torch.cuda.Event(enable_timing=True)
        self.base.record(torch.cuda.current_stream(device))

    def stamp(self) -> Any:
        event = torch.cuda.Event(enable_timing=True)
        event.record()
        return event

    def seconds(self, stamp: Any) -> float:
        return self.base.elapsed_time(stamp) / 1000.0

    def finish(self) -> None:
        torch.cuda.synchronize(self.device)


def make_clock(device: torch.device) -> CpuClock:
    return CudaClock(device) if device.type == "cuda" else CpuClock()


class SpanLog:
    """One worker's spans as raw rows; `spans()` resolves them once the clock has finished."""

    def __init__(self, worker: str, device: str, clock: CpuClock) -> None:
        self.worker = worker
        self.device = device
        self.clock = clock
        self.rows: list[tuple] = []

    def add(self, op: str, batch: int | None, layer: int | None, start: Any, end: Any, version=None) -> None:
        self.rows.append((op, batch, layer, start, end, version))

    def spans(self, first: int = 0) -> list[Span]:
        """The spans of rows `first` on (on CUDA, once the clock has finished, or the events are done)."""
        seconds = self.clock.seconds
        return [
            Span(self.worker, self.device, op, batch, layer, seconds(start), seconds(end), version)
            for op, batch, layer, start, end, version in self.rows[first:]
        ]


class CudaStreams:
    """Streams for batches in flight and the ordering of versions across them (module docstring)."""

    def __init__(self, device: torch.device, count: int) -> None:
        self.device = device
        self.pool = [torch.cuda.Stream(device) for _ in range(max(1, count))]

    def stream(self, slot: int) -> torch.cuda.Stream:
        return self.pool[slot % len(self.pool)]

    @contextlib.contextmanager
    def use(self, slot: int) -> Iterator[torch.cuda.Stream]:
        stream = self.stream(slot)
        with torch.cuda.stream(stream):
            yield stream

    def wait_version(self, version: Version) -> None:
        """Make the current stream wait for `version` and keep its memory until this stream is done."""
        stream = torch.cuda.current_stream(self.device)
        if version.ready is not None:
            stream.wait_event(version.ready)
        for tensor in version.tensors:
            tensor.record_stream(stream)

    def sync(self) -> StreamUpdate:
        """The `StreamSync` for an update on the current stream."""
        return StreamUpdate(self)


class StreamUpdate:
    """Orders one update on the current stream: wait for the version it reads, mark the one it makes."""

    def __init__(self, streams: CudaStreams) -> None:
        self.streams = streams

    def wait(self, version: Version) -> None:
        self.streams.wait_version(version)

    def ready(self) -> object:
        event = torch.cuda.Event()
        event.record()
        return event
