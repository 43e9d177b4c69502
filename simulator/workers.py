"""Workers as SimPy processes: one loop per way a role gets its batches (`pdasgd.methods.Dispatch`).

`start_workers` starts a process per worker of every role of the scenario's method, each running its role's
per-batch steps (`Engine.plan`), so a method defined only as data runs here unchanged.

- Round-robin: worker j of n takes batches j, j + n, j + 2n, ... (sequential: one worker takes them all;
  ddp: replica r takes r, r + R, ...; async forward workers: batch i goes to forward worker i mod n_f).
- Hand-off: the previous role puts each finished batch on the hand-off link; it arrives in a FIFO queue
  `delays.handoff_s` later, and the earliest free worker takes it (async backward workers).
- Counter: each worker takes the next number of a counter shared by the role whenever it is ready, so a
  faster worker handles more batches (hogwild; lapsgd and lppsgd within a rank).

In a method with two roles, the first role's work on batch i waits for the end of batch i - max_in_flight
(the window) and hands the batch on; the last role finishes it. `max_in_flight` does not apply to
single-role methods: each worker has one batch in flight.

A method across ranks (ddp, lapsgd, lppsgd) runs each rank's workers on that rank's batches (batch i on
rank i mod R); their communication is `simulator.ranks`'s. In a method of one process, all-reduce steps
synchronise every worker of the role (a barrier, then `delays.allreduce_s`); a round-robin worker with no
batches left leaves the barrier.
"""

from __future__ import annotations

from collections.abc import Generator

from pdasgd.methods import Dispatch, Role
from pdasgd.ranks import rank_batches
from simulator.engine import Engine, Plan
from simulator.ranks import averaging_communicator, gossip_communicator, push_communicator
from simulator.resources import Barrier


class BatchCounter:
    """Hands out the batch ids of `batches` in order to whichever worker asks first."""

    def __init__(self, batches: range) -> None:
        self.batches = batches
        self.next = 0

    def take(self) -> int | None:
        if self.next >= len(self.batches):
            return None
        self.next += 1
        return self.batches[self.next - 1]

    @property
    def exhausted(self) -> bool:
        return self.next >= len(self.batches)


def start_workers(engine: Engine) -> None:
    """A SimPy process per worker, rank by rank (one rank unless the method runs across ranks), role by
    role; and a communicator per rank that averages."""
    method, workers = engine.method, engine.scenario.workers
    first_worker = 0
    for rank in range(engine.rank_count):
        batches = rank_batches(rank, engine.rank_count, engine.batches)
        for role_index, role in enumerate(method.roles):
            count = role.size(workers)
            context = RoleContext(engine, role, role_index, count, batches, rank)
            for index in range(count):
                worker = first_worker + index
                plans = engine.plan(worker, role.steps(len(engine.layers), index, workers))
                engine.env.process(LOOPS[role.dispatch](context, worker, index, plans))
            first_worker += count
        if method.ranks and method.averaging and engine.rank_count > 1:
            engine.env.process(averaging_communicator(engine, engine.rank_states[rank]))
        if method.gossip and engine.rank_count > 1:
            mode = engine.scenario.distributed.gossip_mode
            communicators = {"exchange": gossip_communicator, "push": push_communicator}
            if mode in communicators:
                engine.env.process(communicators[mode](engine, engine.rank_states[rank]))


class RoleContext:
    """What the workers of one role (of one rank) share: their batches, where they go, their barrier,
    counter and (blocking averaging) the rank's gate."""

    def __init__(
        self, engine: Engine, role: Role, role_index: int, count: int, batches: range, rank: int
    ) -> None:
        method = engine.method
        self.engine = engine
        self.count = count
        self.batches = batches
        self.gated = method.windowed and role_index == 0
        self.hands_on = role_index + 1 < len(method.roles)
        replicated = engine.scenario.workers.replicas > 1 and not method.ranks
        self.barrier = Barrier(engine.env, count) if replicated and count > 1 else None
        self.counter = BatchCounter(batches) if role.dispatch is Dispatch.COUNTER else None
        self.rank = engine.rank_states[rank] if method.ranks else None
        self.rank_index = rank

    def done(self, batch: int) -> None:
        if self.hands_on:
            self.engine.handoffs[self.rank_index].put(batch)
        else:
            self.engine.finish(batch)


def round_robin_worker(role: RoleContext, worker: int, index: int, plans: list[Plan]) -> Generator:
    engine = role.engine
    for batch in role.batches[index :: role.count]:
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
        batch = yield engine.queues[role.rank_index].get(batch)
        yield from engine.batch(worker, batch, plans, role.barrier)
        role.done(batch)


def counter_worker(role: RoleContext, worker: int, index: int, plans: list[Plan]) -> Generator:
    engine, counter = role.engine, role.counter
    while True:
        while role.rank is not None and (gate := role.rank.gate()) is not None:
            yield gate  # blocking averaging: a round is due or running
        batch = counter.take()
        if batch is None:
            return
        yield from engine.batch(worker, batch, plans, role.barrier)
        role.done(batch)


LOOPS = {
    Dispatch.ROUND_ROBIN: round_robin_worker,
    Dispatch.HANDOFF: handoff_worker,
    Dispatch.COUNTER: counter_worker,
}
