"""Workers of the single-copy methods: sequential, async-lu and async-bu, as SimPy processes.

- `sequential`: one worker; per batch the forward of layers 0..M-1, then the backward from the output layer
  with each layer's update right after its backward (layer-wise order; with one worker nothing reads in
  between, so versions give staleness 0 either way). No hand-off delay: there is nothing to hand off.
- `async-lu` / `async-bu`: forward worker j runs batches j, j + n_f, j + 2 n_f, ... (batch i goes to forward
  worker i mod n_f); a finished forward goes through the hand-off link into a FIFO queue; the earliest free
  backward worker takes it. LU: backward visits the output layer first and applies each layer's update right
  after its backward. BU: the whole backward, then the updates (output layer first), all made visible together
  when the last one ends. The forward of batch i starts only after batch i - max_in_flight has finished (the
  end of its last update).
"""

from __future__ import annotations

from collections.abc import Generator

from simulator.engine import Engine


def sequential_worker(engine: Engine, worker: int) -> Generator:
    plan = engine.plan(worker, engine.forward_steps() + engine.layerwise_steps())
    clock = engine.clocks[worker]
    for batch in range(engine.batches):
        yield from engine.steps(worker, batch, plan, clock.batch(plan.base_s))
        engine.finish(batch)


def forward_worker(engine: Engine, worker: int, index: int, n_forward: int) -> Generator:
    plan = engine.plan(worker, engine.forward_steps())
    clock = engine.clocks[worker]
    for batch in range(index, engine.batches, n_forward):
        gate = engine.in_flight.wait(batch)
        if gate is not None:
            yield gate
        yield from engine.steps(worker, batch, plan, clock.batch(plan.base_s))
        engine.handoff.put(batch)


def backward_worker(engine: Engine, worker: int, index: int, block: bool) -> Generator:
    if block:
        plan = engine.plan(worker, engine.backward_steps() + engine.update_steps(), block=True)
    else:
        plan = engine.plan(worker, engine.layerwise_steps())
    clock = engine.clocks[worker]
    batch = index - engine.scenario.workers.backward  # before the first batch: in worker order
    while True:
        batch = yield engine.queue.get(batch)
        yield from engine.steps(worker, batch, plan, clock.batch(plan.base_s))
        engine.finish(batch)


def start_sequential(engine: Engine) -> None:
    engine.env.process(sequential_worker(engine, 0))


def start_async(engine: Engine) -> None:
    workers = engine.scenario.workers
    block = engine.scenario.method == "async-bu"
    for index in range(workers.forward):
        engine.env.process(forward_worker(engine, index, index, workers.forward))
    for index in range(workers.backward):
        engine.env.process(backward_worker(engine, workers.forward + index, index, block))
