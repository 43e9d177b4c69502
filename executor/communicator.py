"""A rank's communicator: the one thread that talks to the other ranks, one op at a time, in order.

Compute threads never call torch.distributed: they `submit` an op (a DDP bucket's all-reduce, an averaging
round) and go on, or wait on the op's future. The communicator runs each op as the simulator does
(`simulator.ranks`): the rank's `[[delays.comm]]` delay first (a `wait` span), then the modelled network's
cost `delays.allreduce_cost_s(bytes)` (latency + bytes / bandwidth; nothing by default) and the real
collective on the communicator's own process group, together one `allreduce` span. The k-th op of every
rank pairs with the k-th of the others, since each rank submits the same ops in the same order.

A collective that fails or times out (`distributed.timeout_s`: another rank crashed or froze) fails the
op's future and every later one, records the error for the runtime and stops the run.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from executor.links import Stopped, sleep
from executor.timing import CpuClock, SpanLog, waited
from executor.world import OwnedGroup
from pdasgd.ranks import COMM, NETWORK
from pdasgd.scenario import Delays


@dataclass
class _Op:
    run: Callable[[OwnedGroup], Any]
    nbytes: int
    batch: int | None
    layer: int | None
    future: torch.futures.Future
    ready: Any = None  # a CUDA event the op's tensors wait for


class Communicator:
    """The communicator thread of one rank (module docstring)."""

    def __init__(
        self,
        group: OwnedGroup,
        rank: int,
        delays: Delays,
        clock: CpuClock,
        stop: threading.Event,
        on_error: Callable[[str, BaseException], None],
    ) -> None:
        self.group = group
        self.delay_s = delays.comm_delay_s(rank)
        self.delays = delays
        self.clock = clock
        self.stop = stop
        self.on_error = on_error
        self.log = SpanLog(COMM, NETWORK, clock)
        self._queue: queue.SimpleQueue[_Op | None] = queue.SimpleQueue()
        self.thread = threading.Thread(target=self._run, name=f"pdasgd r{rank} comm", daemon=True)
        self.error: BaseException | None = None

    def start(self) -> None:
        self.thread.start()

    def submit(
        self,
        run: Callable[[OwnedGroup], Any],
        nbytes: int,
        batch: int | None = None,
        layer: int | None = None,
        future: torch.futures.Future | None = None,
        ready: Any = None,
    ) -> torch.futures.Future:
        """Queue an op; its future gets what `run(group)` returns, or its error."""
        future = future if future is not None else torch.futures.Future()
        if self.error is not None:
            future.set_exception(self.error)
            return future
        self._queue.put(_Op(run, nbytes, batch, layer, future, ready))
        return future

    def close(self, timeout_s: float | None = None) -> None:
        """Finish the queued ops, then end the thread."""
        self._queue.put(None)
        self.thread.join(timeout_s)

    def _run(self) -> None:
        while (op := self._queue.get()) is not None:
            if self.error is not None:
                op.future.set_exception(self.error)
                continue
            try:
                op.future.set_result(self._one(op))
            except Stopped as stopped:  # the run is stopping anyway: nothing to report
                self.error = stopped
                op.future.set_exception(stopped)
            except BaseException as error:  # reported by the runtime, naming the communicator
                self.error = error
                op.future.set_exception(error)
                self.on_error(COMM, error)

    def _one(self, op: _Op) -> Any:
        stamp = self.clock.stamp
        waited()  # the op came off the queue now: its waits count from here (executor.timing)
        start = stamp()
        if self.delay_s > 0:
            sleep(self.delay_s, self.stop)
            self.log.add("wait", op.batch, op.layer, start, stamp())
        at = stamp()
        cost_s = self.delays.allreduce_cost_s(op.nbytes)
        if cost_s > 0:
            sleep(cost_s, self.stop)
        if op.ready is not None:
            torch.cuda.current_stream().wait_event(op.ready)
        result = op.run(self.group)
        self.log.add("allreduce", op.batch, op.layer, at, stamp())
        return result
