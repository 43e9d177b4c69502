"""Workers of the replicated methods: hogwild, lapsgd, lppsgd and ddp, as SimPy processes.

Batches: hogwild, lapsgd and lppsgd workers take the next batch id from one shared counter whenever they are
ready (a faster worker handles more batches); ddp replica r handles batches r, r + R, r + 2R, ... (step s
is batches sR .. sR + R - 1).

- `hogwild`: replicas x per_replica workers on one shared set of parameters, lock-free; per batch: forward
  of layers 0..M-1, backward from the output layer, then the update of every layer (output layer first), each
  visible when it ends. Nobody waits for anybody.
- `lapsgd`: one hogwild group of `per_replica` workers per replica, each replica with its own copy of the
  parameters. After every `average_every` batches of its own, a worker joins the round's averaging: all
  workers of all replicas wait for each other (`wait` spans), then every worker spends one all-reduce
  (`allreduce` span, `delays.handoff_s`; see `simulator.links`) and all replicas continue from the average.
  Averaging is synchronous (the non-blocking variant of Chatterjee et al. is not modelled); with one replica
  there is nothing to average and lapsgd is hogwild.
- `lppsgd`: lapsgd where worker p of a replica (p = 0..per_replica-1) updates only its partition of the
  layers, the p-th of `per_replica` contiguous blocks (input layer in block 0). Its backward stops at the
  lowest layer of its partition: gradients below it are not needed (Chatterjee et al. 2022).
- `ddp`: `replicas` workers in synchronous steps: forward and backward of its own batch, wait for every
  replica (`wait` span; a straggler slows everyone), one all-reduce of the gradients (`allreduce`,
  `delays.handoff_s` with 2+ replicas; no bucketing overlap with the backward), then the update of every
  layer.

`max_in_flight` does not apply: each worker has one batch in flight. Wait and all-reduce spans hold no
device slot (the trace puts them on the worker's device; utilisation counts all-reduce time as busy).

Versions: every parameter copy has its own per-layer counters (ddp: one per replica, each bumped once a step
by that replica's update; lapsgd/lppsgd: one per replica; hogwild: one shared). Averaging replaces parameters
while no batch of any worker is in flight, so it changes no batch's staleness and does not count as a version.
"""

from __future__ import annotations

from collections.abc import Generator

from simulator.engine import Engine
from simulator.records import ALLREDUCE, WAIT
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


def partition(layers: int, parts: int, index: int) -> range:
    """The index-th of `parts` contiguous blocks of layers (input layer in block 0)."""
    return range(index * layers // parts, (index + 1) * layers // parts)


def local_worker(
    engine: Engine, worker: int, counter: BatchCounter, owned: range, barrier: Barrier | None
) -> Generator:
    """A hogwild worker; with a barrier, it averages with the other replicas every average_every batches."""
    backward = engine.backward_steps(owned.start) if len(owned) else []
    plan = engine.plan(worker, engine.forward_steps() + backward + engine.update_steps(owned))
    clock = engine.clocks[worker]
    every = engine.scenario.workers.average_every if barrier is not None else engine.batches
    while not counter.exhausted:
        for _ in range(every):
            batch = counter.take()
            if batch is None:
                break
            yield from engine.steps(worker, batch, plan, clock.batch(plan.base_s))
            engine.finish(batch)
        if barrier is not None:
            yield from synchronize(engine, worker, barrier)


def synchronize(engine: Engine, worker: int, barrier: Barrier) -> Generator:
    """Wait for every party, then one all-reduce."""
    arrived = engine.env.now
    yield barrier.arrive()
    engine.span(worker, WAIT, arrived)
    started = engine.env.now
    duration_s = engine.allreduce.duration_s()
    if duration_s > 0:
        yield engine.env.timeout(duration_s)
        engine.span(worker, ALLREDUCE, started)


def ddp_worker(engine: Engine, worker: int, barrier: Barrier | None) -> Generator:
    compute = engine.plan(worker, engine.forward_steps() + engine.backward_steps())
    update = engine.plan(worker, engine.update_steps())
    base_s = compute.base_s + update.base_s
    clock = engine.clocks[worker]
    for batch in range(worker, engine.batches, engine.scenario.workers.replicas):
        times = clock.batch(base_s)
        yield from engine.steps(worker, batch, compute, times[: len(compute.steps)])
        if barrier is not None:
            yield from synchronize(engine, worker, barrier)
        yield from engine.steps(worker, batch, update, times[len(compute.steps) :])
        engine.finish(batch)
    if barrier is not None:
        barrier.leave()


def start_replicated(engine: Engine) -> None:
    method, workers = engine.scenario.method, engine.scenario.workers
    count = len(engine.worker_names)
    barrier = Barrier(engine.env, count) if workers.replicas > 1 and method != "hogwild" else None
    if method == "ddp":
        for worker in range(count):
            engine.env.process(ddp_worker(engine, worker, barrier))
        return
    counter = BatchCounter(engine.batches)
    layers = len(engine.layers)
    for worker in range(count):
        if method == "lppsgd":
            owned = partition(layers, workers.per_replica, worker % workers.per_replica)
        else:
            owned = range(layers)
        engine.env.process(local_worker(engine, worker, counter, owned, barrier))
