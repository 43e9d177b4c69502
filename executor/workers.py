"""The workers of each method, as straight-line loops over batches.

- sequential (`worker:0`): forward all blocks, then backward from the output block down with each layer's
  update right after its gradient; then the next batch.
- async-lu / async-bu: forward workers (`forward:f`) take batches i with i mod n_f = f, wait for the
  in-flight window, run the forward and put the batch on the hand-off link. Backward workers
  (`backward:j`) take batches first in, first out, and walk the blocks from the output down: async-lu
  updates layer m as soon as its gradient exists; async-bu updates every layer after the whole backward.
- hogwild (`worker:w`): each worker takes the next batch number, runs forward, backward and then the updates
  of all layers, without waiting for any other worker. Each layer's update is an atomic publish under
  that layer's lock (held for one tensor op), so no update is lost and versions count every update.

Every op is a span: forward (version read), backward, update (version just before it), and `wait` for the
injected delays (stragglers, `delays.update_s`). A straggler `Straggler(worker, every, extra_s)` sleeps
`extra_s` before every `every`-th batch its worker handles. `delays.update_s` is the latency between a
layer's gradient and its update becoming visible: the updating worker waits it out (a `wait` span) before
taking the layer's lock, so updates are never lost and readers see the old version meanwhile.
"""

from __future__ import annotations

import contextlib
import math
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from executor.blocks import Replica, backward_block, block_input, loss_of, owned
from executor.links import BatchSource, Link, Window, check
from executor.memory import MemoryMeter
from executor.params import VersionedLayer
from executor.timing import CpuClock, CudaStreams, SpanLog
from pdasgd.scenario import Straggler


class NonFiniteLoss(ValueError):
    """The training loss became NaN or infinite."""


@dataclass
class Progress:
    """Batches finished so far and the latest loss, shared by the workers and the main thread."""

    first: int
    completed: int = 0
    loss: float = math.nan
    prefix: int = 0  # every batch below this one has finished
    _finished: set[int] = field(default_factory=set)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.prefix = self.first

    def finish(self, batch: int, loss: float) -> int:
        with self._lock:
            self.completed += 1
            self.loss = loss
            self._finished.add(batch)
            while self.prefix in self._finished:
                self._finished.discard(self.prefix)
                self.prefix += 1
            return self.completed


@dataclass
class Context:
    """Everything the workers of one run share."""

    blocks: list[nn.Module]
    layers: list[VersionedLayer]
    source: BatchSource
    clock: CpuClock
    stop: threading.Event
    meter: MemoryMeter
    activation_bytes: list[int]
    first: int
    end: int
    threads: int
    device: str
    progress: Progress
    streams: CudaStreams | None = None
    stragglers: dict[str, Straggler] = field(default_factory=dict)
    update_delay_s: float = 0.0
    probe: Any = None
    on_finish: Callable[[int, int], None] | None = None  # (batch, completed count)
    logs: dict[str, SpanLog] = field(default_factory=dict)


@dataclass
class InFlight:
    """A batch between its forward and its backward: per block (input, leaves, output, version read)."""

    index: int
    saved: list[tuple | None]


class Worker:
    """One thread's state: its name, span log, module replica and handled-batch count."""

    def __init__(self, ctx: Context, name: str) -> None:
        torch.set_num_threads(ctx.threads)  # per thread (PLATFORM.md)
        self.ctx = ctx
        self.name = name
        self.log = SpanLog(name, ctx.device, ctx.clock)
        ctx.logs[name] = self.log
        self.replica = Replica(ctx.blocks)
        self.handled = 0
        self.straggler = ctx.stragglers.get(name)

    def straggle(self, batch: int) -> None:
        """Count one more batch; sleep if this worker is a straggler and the count calls for it."""
        self.handled += 1
        straggler = self.straggler
        if straggler and self.handled % straggler.every == 0:
            start = self.ctx.clock.stamp()
            if self.ctx.stop.wait(straggler.extra_s):
                check(self.ctx.stop)
            self.log.add("wait", batch, None, start, self.ctx.clock.stamp())

    def forward(self, batch: int) -> InFlight:
        ctx, stamp, streams = self.ctx, self.ctx.clock.stamp, self.ctx.streams
        x, y = ctx.source.get(batch)
        if ctx.probe:
            ctx.probe.batch(batch, x, y)
        saved: list[tuple | None] = []
        top = len(ctx.layers) - 1
        for m, layer in enumerate(ctx.layers):
            check(ctx.stop)
            start = stamp()
            version = layer.read()
            if streams:
                streams.wait_version(version)
            ctx.meter.add(ctx.activation_bytes[m])
            x_in = block_input(x, m)
            leaves, x = self.replica.forward(m, x_in, version.tensors)
            if m == top:
                x = loss_of(x, y)
            self.log.add("forward", batch, m, start, stamp(), version.number)
            saved.append((x_in, leaves, x, version.number))
            if ctx.probe:
                ctx.probe.read(batch, m, version.number, version.tensors)
        return InFlight(batch, saved)

    def backward(self, item: InFlight, layerwise: bool) -> float:
        """Backward from the loss down; updates layer by layer (`layerwise`) or all at the end."""
        ctx, stamp = self.ctx, self.ctx.clock.stamp
        loss = float(item.saved[-1][2].detach())
        if not math.isfinite(loss):
            raise NonFiniteLoss(f"loss is {loss} at batch {item.index} (try a lower train.lr)")
        grad = None
        pending = []
        for m in range(len(ctx.layers) - 1, -1, -1):
            check(ctx.stop)
            x_in, leaves, output, number = item.saved[m]
            item.saved[m] = None
            start = stamp()
            grads, grad = backward_block(output, grad, leaves, x_in)
            self.log.add("backward", item.index, m, start, stamp())
            mine = owned(grads, grad)
            del x_in, leaves, output
            ctx.layers[m].release(number)
            ctx.meter.sub(ctx.activation_bytes[m])
            if ctx.probe:
                ctx.probe.gradient(item.index, m, number, grads)
            if layerwise:
                self.update(item.index, m, grads, mine)
            else:
                pending.append((m, grads, mine))
        for m, grads, mine in pending:
            self.update(item.index, m, grads, mine)
        return loss

    def update(self, batch: int, m: int, grads: list[torch.Tensor], mine: list[bool]) -> None:
        ctx, stamp = self.ctx, self.ctx.clock.stamp
        if ctx.update_delay_s:
            start = stamp()
            if ctx.stop.wait(ctx.update_delay_s):
                check(ctx.stop)
            self.log.add("wait", batch, m, start, stamp())
        sync = ctx.streams.sync() if ctx.streams else None
        before, start, end = ctx.layers[m].apply(grads, sync, stamp, mine)
        self.log.add("update", batch, m, start, end, before)

    def finish(self, batch: int, loss: float) -> None:
        completed = self.ctx.progress.finish(batch, loss)
        if self.ctx.on_finish:
            self.ctx.on_finish(batch, completed)


def sequential_worker(ctx: Context, name: str) -> None:
    worker = Worker(ctx, name)
    for batch in range(ctx.first, ctx.end):
        with _on_stream(ctx, 0):
            worker.straggle(batch)
            loss = worker.backward(worker.forward(batch), layerwise=True)
        worker.finish(batch, loss)


def forward_worker(ctx: Context, name: str, index: int, count: int, window: Window, link: Link) -> None:
    worker = Worker(ctx, name)
    for batch in range(ctx.first, ctx.end):
        if batch % count != index:
            continue
        window.enter(batch)
        with _on_stream(ctx, batch):
            worker.straggle(batch)
            link.put(worker.forward(batch))
    link.close()


def backward_worker(ctx: Context, name: str, window: Window, link: Link, layerwise: bool) -> None:
    worker = Worker(ctx, name)
    while (item := link.get()) is not None:
        with _on_stream(ctx, item.index):
            worker.straggle(item.index)
            loss = worker.backward(item, layerwise)
        window.finish(item.index)
        worker.finish(item.index, loss)


class Counter:
    """Hands out batch numbers first to last to whichever hogwild worker asks."""

    def __init__(self, first: int, end: int) -> None:
        self._next = first
        self.end = end
        self._lock = threading.Lock()

    def take(self) -> int | None:
        with self._lock:
            if self._next >= self.end:
                return None
            self._next += 1
            return self._next - 1


def hogwild_worker(ctx: Context, name: str, slot: int, counter: Counter) -> None:
    worker = Worker(ctx, name)
    while (batch := counter.take()) is not None:
        with _on_stream(ctx, slot):
            worker.straggle(batch)
            loss = worker.backward(worker.forward(batch), layerwise=False)
        worker.finish(batch, loss)


def _on_stream(ctx: Context, slot: int) -> contextlib.AbstractContextManager:
    return ctx.streams.use(slot) if ctx.streams else contextlib.nullcontext()
