"""Workers as SimPy processes: one loop per way a role gets its batches (`pdasgd.methods.Dispatch`).

`start_workers` starts a process per worker of every role of the scenario's method, each running its role's
per-batch steps (`Engine.plan`), so a method defined only as data runs here unchanged.

- Round-robin: worker j of n takes batches j, j + n, j + 2n, ... (sequential: one worker takes them all;
  ddp: replica r takes r, r + R, ...; async forward workers: batch i goes to forward worker i mod n_f).
- Hand-off: the previous role puts each finished batch on the hand-off link; it arrives in a FIFO queue
  `delays.handoff_s` later, and the earliest free worker takes it (async backward workers).
- Counter: each worker takes the next number of a counter shared by the role whenever it is ready, so a
  faster worker handles more batches (hogwild, lapsgd, lppsgd).

In a method with two roles, the first role's work on batch i waits for the end of batch i - max_in_flight
(the window) and hands the batch on; the last role finishes it. All-reduce steps synchronise every worker of
the role (a barrier, then `delays.allreduce_s`); a round-robin worker with no batches left leaves the
barrier. With `averaging`, a counter worker joins an averaging round after every `average_every` batches of
its own: every worker waits for the others, then one all-reduce, and all continue from the average
(synchronous averaging; with one replica there is nothing to average). `max_in_flight` does not apply to
single-role methods: each worker has one batch in flight.
"""

from __future__ import annotations

from collections.abc import Generator

from pdasgd.methods import Dispatch, Role
from simulator.engine import Engine, Plan
from simulator.resources import Barrier


class BatchCounter:
    """Hands out batch ids 0, 1, 2, ... to whichever worker asks first."""

    def __init__(self, batches: int) -> None:
        self.batches = batches
        self.next = 0

    def take(self) -> int | None:
        if self.next >= self.batches:
            return None
        self.next += 1
        return self.next - 1

    @property
    def exhausted(self) -> bool:
        return self.next >= self.batches


def start_workers(engine: Engine) -> None:
    """A SimPy process per worker, role by role."""
    method, workers = engine.method, engine.scenario.workers
    first_worker = 0
    for role_index, role in enumerate(method.roles):
        count = role.size(workers)
        context = RoleContext(engine, role, role_index, count)
        for index in range(count):
            worker = first_worker + index
            plans = engine.plan(worker, role.steps(len(engine.layers), index, workers))
            engine.env.process(LOOPS[role.dispatch](context, worker, index, plans))
        first_worker += count


class RoleContext:
    """What the workers of one role share: where their batches go, their barrier and counter."""

    def __init__(self, engine: Engine, role: Role, role_index: int, count: int) -> None:
        method = engine.method
        self.engine = engine
        self.count = count
        self.gated = method.windowed and role_index == 0
        self.hands_on = role_index + 1 < len(method.roles)
        replicated = engine.scenario.workers.replicas > 1
        self.barrier = Barrier(engine.env, count) if replicated and count > 1 else None
        self.counter = BatchCounter(engine.batches) if role.dispatch is Dispatch.COUNTER else None
        self.every = engine.scenario.workers.average_every if method.averaging and self.barrier else None

    def done(self, batch: int) -> None:
        if self.hands_on:
            self.engine.handoff.put(batch)
        else:
            self.engine.finish(batch)


def round_robin_worker(role: RoleContext, worker: int, index: int, plans: list[Plan]) -> Generator:
    engine = role.engine
    for batch in range(index, engine.batches, role.count):
        if role.gated:
            gate = engine.window.wait(batch)
            if gate is not None:
                yield gate
        yield from engine.batch(worker, batch, plans, role.barrier)
        role.done(batch)
    if role.barrier is not None:
        role.barrier.leave()


def handoff_worker(role: RoleContext, worker: int, index: int, plans: list[Plan]) -> Generator:
    engine = role.engine
    batch = index - role.count  # before the first batch: in worker order
    while True:
        batch = yield engine.queue.get(batch)
        yield from engine.batch(worker, batch, plans, role.barrier)
        role.done(batch)


def counter_worker(role: RoleContext, worker: int, index: int, plans: list[Plan]) -> Generator:
    engine, counter = role.engine, role.counter
    every = role.every or engine.batches
    while not counter.exhausted:
        for _ in range(every):
            batch = counter.take()
            if batch is None:
                break
            yield from engine.batch(worker, batch, plans, role.barrier)
            role.done(batch)
        if role.every:
            yield from engine.synchronize(worker, role.barrier)


LOOPS = {
    Dispatch.ROUND_ROBIN: round_robin_worker,
    Dispatch.HANDOFF: handoff_worker,
    Dispatch.COUNTER: counter_worker,
}
