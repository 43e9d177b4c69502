"""The workers of every method: loops over batches that run the method's per-batch steps.

A method is data (`pdasgd.methods`): roles, how each gets its batches, and each role's steps `F m`, `B m`,
`U m`, `P m`. A `Worker` runs its role's steps on a `PendingBatch`, one small action per step, so a method
defined only as data runs here unchanged:

- `F m`: read layer m's current version (counted until its backward), run block m on leaves of it; after
  the last block, the loss;
- `B m`: one `autograd.grad` call from block m's output back to its leaves and input; the version read is
  released;
- `U m`: SGD on layer m's latest version (`executor.params`), published at once unless a later `P m` step
  publishes it;
- `P m`: publish the update of layer m this batch applied.

With `delays.visibility_s` > 0 every publication goes through the `Delivery` thread instead, which makes the
version visible that much later; the worker does not wait.

The loops (`Dispatch`): round-robin workers take batches i with i mod n = their index; hand-off workers take
batches from the `Link` first in, first out; counter workers take the next number of a shared `Counter`.
In a method with two roles the first role's batch i waits for the window (batch i - max_in_flight finished)
and is put on the link; the last role finishes each batch. Hogwild-style workers on one shared copy never
wait for each other: each layer's update is an atomic publish under that layer's lock (held for one tensor
op), so no update is lost and versions count every update.

Every op is a span: forward (version read), backward, update (version just before it). A `sleep` straggler
`Straggler(worker, every, extra_s, "sleep")` sleeps `extra_s` before every `every`-th batch its worker
handles (a `wait` span); a `busy` one computes for `extra_s` inside that batch's first op on the worker.
"""

from __future__ import annotations

import contextlib
import heapq
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from executor.blocks import Replica, backward_block, block_input, loss_of, owned
from executor.links import BatchSource, Window, check, sleep
from executor.memory import MemoryMeter
from executor.params import Version, VersionedLayer
from executor.timing import CpuClock, CudaStreams, SpanLog, burn_from_start, nominal_now, op_started
from pdasgd.methods import BACKWARD, FORWARD, PUBLISH, UPDATE, Dispatch, Method, Role, Step
from pdasgd.scenario import Straggler


class NonFiniteLoss(ValueError):
    """The training loss became NaN or infinite."""


@dataclass
class Completions:
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


class Delivery:
    """Publishes versions `delay_s` after they are handed in, from a thread of its own (the update-
    visibility delay: readers see an update that much later; the updating worker goes on at once)."""

    def __init__(self, delay_s: float, stop: threading.Event) -> None:
        self.delay_s = delay_s
        self.stop = stop
        self._due: list[tuple[float, int, VersionedLayer, Version]] = []
        self._count = 0
        self._cond = threading.Condition()
        self._closed = False
        self.thread = threading.Thread(target=self._run, name="pdasgd delivery", daemon=True)

    def publish(self, layer: VersionedLayer, version: Version) -> None:
        with self._cond:
            self._count += 1
            heapq.heappush(self._due, (nominal_now() + self.delay_s, self._count, layer, version))
            self._cond.notify()

    def close(self) -> None:
        """Publish what is left now and end the thread."""
        with self._cond:
            self._closed = True
            self._cond.notify()
        self.thread.join()

    def _run(self) -> None:
        with self._cond:
            while True:
                if self._due and (self._closed or self._due[0][0] <= time.perf_counter()):
                    _, _, layer, version = heapq.heappop(self._due)
                    layer.publish(version)
                elif self._closed or self.stop.is_set():
                    return
                else:
                    wait_s = self._due[0][0] - time.perf_counter() if self._due else 0.05
                    self._cond.wait(min(max(wait_s, 0.0), 0.05))


@dataclass
class Context:
    """Everything the workers of one run share."""

    method: Method
    workers: Any  # the scenario's [workers] (pdasgd.scenario.Workers)
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
    progress: Completions
    streams: CudaStreams | None = None
    stragglers: dict[str, Straggler] = field(default_factory=dict)
    delivery: Delivery | None = None
    probe: Any = None
    on_finish: Callable[[int, int], None] | None = None  # (batch, completed count)
    logs: dict[str, SpanLog] = field(default_factory=dict)
    current: dict[str, tuple | None] = field(default_factory=dict)  # worker: (step, batch, start) or None
    cpu_times: dict[str, list] | None = None  # worker: (op, batch, layer, thread CPU seconds) per step
    batch_ids: range = range(0)  # the batches this process trains: first..end, or a rank's share
    gate: Callable[[], None] | None = None  # blocking averaging: a counter worker calls it before a batch
    ddp: Any = None  # executor.ddp.DdpModel of a ddp rank
    on_update: Callable[[int], None] | None = None  # after each update of a layer (gossip marks it)
    info: dict[str, Any] = field(default_factory=dict)  # more for the trace's info (a rank's gossip counts)

    def __post_init__(self) -> None:
        if not self.batch_ids:
            self.batch_ids = range(self.first, self.end)


@dataclass
class PendingBatch:
    """One batch on its way through the steps: the activation going forward, per layer what its backward
    needs (input, leaves, output, version read), the gradient coming back, and unpublished updates."""

    index: int
    x: Any = None
    y: Any = None
    saved: dict[int, tuple] = field(default_factory=dict)
    grad: Any = None
    grads: dict[int, tuple[list[torch.Tensor], list[bool]]] = field(default_factory=dict)
    applied: dict[int, Version] = field(default_factory=dict)
    loss: float = math.nan
    busy_s: float = 0.0  # a busy straggler's time, spent in the first op


class Worker:
    """One thread's state: its name, span log, module replica, its steps and handled-batch count."""

    def __init__(self, ctx: Context, name: str, steps: tuple[Step, ...] = ()) -> None:
        torch.set_num_threads(ctx.threads)  # per thread (docs/platform.md)
        self.ctx = ctx
        self.name = name
        self.log = SpanLog(name, ctx.device, ctx.clock)
        ctx.logs[name] = self.log
        self.replica = Replica(ctx.blocks)
        self.handled = 0
        self.straggler = ctx.stragglers.get(name)
        self.steps = steps
        self.actions = self.compile(steps)
        self.top = len(ctx.layers) - 1

    def compile(self, steps: tuple[Step, ...]) -> list[tuple[Callable, int, bool]]:
        """(action, layer, publish at once) per step; an update defers to a later publish of its layer."""
        later = {step.layer for step in steps if step.op == PUBLISH}
        kinds = {FORWARD: self.forward, BACKWARD: self.backward, UPDATE: self.update, PUBLISH: self.publish}
        return [(kinds[step.op], step.layer, step.layer not in later) for step in steps]

    def run(self, item: PendingBatch) -> None:
        stop, current, name = self.ctx.stop, self.ctx.current, self.name
        cpu = self.ctx.cpu_times.setdefault(name, []) if self.ctx.cpu_times is not None else None
        for step, (action, layer, at_once) in zip(self.steps, self.actions, strict=True):
            check(stop)
            current[name] = (step, item.index, time.perf_counter())
            if cpu is None:
                action(item, layer, at_once)
            else:  # calibration: the CPU time this thread spends on the step, however the cores are shared
                start_s = time.thread_time()
                action(item, layer, at_once)
                cpu.append((step.op, item.index, layer, time.thread_time() - start_s))
        current[name] = None

    def straggle(self, item: PendingBatch) -> None:
        """Count one more batch; when this worker straggles on it, sleep now or owe busy time to its op."""
        self.handled += 1
        straggler = self.straggler
        if not straggler or self.handled % straggler.every:
            return
        if straggler.kind == "busy":
            item.busy_s = straggler.extra_s
            return
        start = self.ctx.clock.stamp()
        sleep(straggler.extra_s, self.ctx.stop)
        self.log.add("wait", item.index, None, start, self.ctx.clock.stamp())

    def _owed(self, item: PendingBatch) -> None:
        """The op starts now; a busy straggler's owed time comes first, so the op's own cost follows it."""
        op_started()
        if item.busy_s:
            if not burn_from_start(item.busy_s, busy=True, stop=self.ctx.stop):
                check(self.ctx.stop)
            item.busy_s = 0.0

    def forward(self, item: PendingBatch, m: int, _: bool = True) -> None:
        ctx, stamp = self.ctx, self.ctx.clock.stamp
        start = stamp()
        self._owed(item)
        if m == 0:
            item.x, item.y = ctx.source.get(item.index)
            if ctx.probe:
                ctx.probe.batch(item.index, item.x, item.y)
        layer = ctx.layers[m]
        version = layer.read()
        if ctx.streams:
            ctx.streams.wait_version(version)
        ctx.meter.add(ctx.activation_bytes[m])
        x_in = block_input(item.x, m)
        leaves, out = self.replica.forward(m, x_in, version.tensors)
        if m == self.top:
            out = loss_of(out, item.y)
        item.x = out
        self.log.add("forward", item.index, m, start, stamp(), version.number)
        item.saved[m] = (x_in, leaves, out, version.number)
        if ctx.probe:
            ctx.probe.read(item.index, m, version.number, version.tensors)

    def backward(self, item: PendingBatch, m: int, _: bool = True) -> None:
        ctx, stamp = self.ctx, self.ctx.clock.stamp
        x_in, leaves, output, number = item.saved.pop(m)
        if m == self.top:
            item.x = None
            item.loss = float(output.detach())
            self.check_loss(item)
        start = stamp()
        self._owed(item)
        grads, item.grad = backward_block(output, item.grad, leaves, x_in)
        self.log.add("backward", item.index, m, start, stamp())
        item.grads[m] = (grads, owned(grads, item.grad))
        del x_in, leaves, output
        ctx.layers[m].release(number)
        ctx.meter.sub(ctx.activation_bytes[m])
        if ctx.probe:
            ctx.probe.gradient(item.index, m, number, grads)

    def check_loss(self, item: PendingBatch) -> None:
        if not math.isfinite(item.loss):
            raise NonFiniteLoss(f"loss is {item.loss} at batch {item.index} (try a lower train.lr)")

    def update(self, item: PendingBatch, m: int, at_once: bool) -> None:
        ctx, stamp = self.ctx, self.ctx.clock.stamp
        grads, mine = item.grads.pop(m)
        cost_s = getattr(ctx.blocks[m], "update_cost_s", 0.0)  # the timed network's update time
        start = stamp()
        if cost_s:
            op_started()
            burn_from_start(cost_s)
        sync = ctx.streams.sync() if ctx.streams else None
        direct = at_once and ctx.delivery is None
        version, before, applied_start, end = ctx.layers[m].apply(grads, sync, stamp, mine, publish=direct)
        self.log.add("update", item.index, m, start if cost_s else applied_start, end, before)
        if ctx.on_update is not None:
            ctx.on_update(m)
        if at_once and not direct:
            ctx.delivery.publish(ctx.layers[m], version)
        elif not at_once:
            item.applied[m] = version

    def publish(self, item: PendingBatch, m: int, _: bool = True) -> None:
        version, layer = item.applied.pop(m), self.ctx.layers[m]
        if self.ctx.delivery is not None:
            self.ctx.delivery.publish(layer, version)
        else:
            layer.publish(version)

    def finish(self, batch: int, loss: float) -> None:
        completed = self.ctx.progress.finish(batch, loss)
        if self.ctx.on_finish:
            self.ctx.on_finish(batch, completed)


class Counter:
    """Hands out the batch numbers of `batches` first to last to whichever worker asks."""

    def __init__(self, batches: range) -> None:
        self._batches = batches
        self._next = 0
        self._lock = threading.Lock()

    def take(self) -> int | None:
        with self._lock:
            if self._next >= len(self._batches):
                return None
            self._next += 1
            return self._batches[self._next - 1]


class RoleContext:
    """What the workers of one role share: the window and link around them, their counter."""

    def __init__(self, ctx: Context, role: Role, count: int, window: Window | None, links: list) -> None:
        self.role = role
        self.count = count
        self.window = window
        self.source, self.sink = links  # the link batches come from, and the one they go to (or None)
        self.counter = Counter(ctx.batch_ids) if role.dispatch is Dispatch.COUNTER else None

    def done(self, worker: Worker, item: PendingBatch) -> None:
        if self.sink is not None:
            self.sink.put(item)
            return
        if self.window is not None:
            self.window.finish(item.index)
        worker.finish(item.index, item.loss)


def round_robin_worker(ctx: Context, name: str, role: RoleContext, index: int, slot: int) -> None:
    worker = Worker(ctx, name, role.role.steps(len(ctx.layers), index, ctx.workers))
    gated = role.sink is not None and role.window is not None
    for batch in ctx.batch_ids:
        if (batch // ctx.batch_ids.step) % role.count != index:  # a rank's k-th batch is rank + k x ranks
            continue
        if gated:
            role.window.enter(batch)
        _one(ctx, worker, role, PendingBatch(batch), slot)
    if role.sink is not None:
        role.sink.close()


def handoff_worker(ctx: Context, name: str, role: RoleContext, index: int, slot: int) -> None:
    worker = Worker(ctx, name, role.role.steps(len(ctx.layers), index, ctx.workers))
    finished = index - role.count  # before the first batch: in worker order
    while (item := role.source.get(finished)) is not None:
        _one(ctx, worker, role, item, slot)
        finished = item.index


def counter_worker(ctx: Context, name: str, role: RoleContext, index: int, slot: int) -> None:
    worker = Worker(ctx, name, role.role.steps(len(ctx.layers), index, ctx.workers))
    while True:
        if ctx.gate is not None:
            ctx.gate()
        batch = role.counter.take()
        if batch is None:
            return
        _one(ctx, worker, role, PendingBatch(batch), slot)


def _one(ctx: Context, worker: Worker, role: RoleContext, item: PendingBatch, slot: int) -> None:
    """One batch of one worker, on its CUDA stream (a stream per batch in flight for two-role methods)."""
    stream = item.index if ctx.method.windowed else slot
    with _on_stream(ctx, stream):
        worker.straggle(item)
        worker.run(item)
    role.done(worker, item)


LOOPS = {
    Dispatch.ROUND_ROBIN: round_robin_worker,
    Dispatch.HANDOFF: handoff_worker,
    Dispatch.COUNTER: counter_worker,
}


def _on_stream(ctx: Context, slot: int) -> contextlib.AbstractContextManager:
    return ctx.streams.use(slot) if ctx.streams else contextlib.nullcontext()
