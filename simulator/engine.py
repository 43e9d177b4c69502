"""The SimPy engine: an environment, the devices, links and clocks of a scenario, and the step runner.

Workers are SimPy processes (`simulator.workers`, `simulator.replicated`). Each runs batches as lists of
steps `(op, layer)`, one step per layer and per kind of work (forward, backward, update). `Engine.steps` runs
such a list on the worker's device: take a slot (wait FIFO if none is free), hold it for the step's duration,
release it, and append a record row. Steps of zero duration take no slot and no time. Versions, memory and
spans are computed from the rows after the run (`simulator.records`, `simulator.memory`).
"""

from __future__ import annotations

import math
from collections.abc import Generator, Sequence

import numpy as np
import simpy
from simpy.events import Timeout

from pdasgd.scenario import Scenario
from simulator.clock import Clock
from simulator.links import AllreduceLink, HandoffLink, UpdateLink
from simulator.records import BACKWARD, FORWARD, UPDATE, Timeline
from simulator.resources import BatchQueue, Device, InFlight

NAN = math.nan
Step = tuple[int, int]


class Engine:
    """One SimPy run of a scenario: shared state for the worker processes."""

    def __init__(self, scenario: Scenario, progress=None) -> None:
        assert scenario.model is not None
        self.scenario = scenario
        self.env = simpy.Environment()
        self.layers = scenario.model.layers
        self.batches = scenario.run.batches
        self.worker_names = scenario.worker_names()
        placement = scenario.device_of()
        table = scenario.device_table()
        self.devices = {name: Device(self.env, name, d.slots, d.speed) for name, d in table.items()}
        self.worker_devices = [self.devices[placement[name]] for name in self.worker_names]
        delays = scenario.delays
        self.clocks = [
            Clock(
                delays.jitter_cv, scenario.run.seed, index, [s for s in delays.stragglers if s.worker == name]
            )
            for index, name in enumerate(self.worker_names)
        ]
        self.queue = BatchQueue(self.env)
        self.handoff = HandoffLink(self.env, delays.handoff_s, self.queue)
        self.update_link = UpdateLink(delays.update_s)
        self.allreduce = AllreduceLink(delays.handoff_s, scenario.workers.replicas)
        self.in_flight = InFlight(self.env, scenario.workers.max_in_flight, self.batches)
        self.rows: list[tuple] = []
        self.finished = 0
        self.progress = progress

    # --- plans: the steps of one batch on one worker, and their durations on its device -------------

    def forward_steps(self) -> list[Step]:
        return [(FORWARD, m) for m in range(len(self.layers))]

    def backward_steps(self, lowest: int = 0) -> list[Step]:
        return [(BACKWARD, m) for m in reversed(range(lowest, len(self.layers)))]

    def update_steps(self, layers: Sequence[int] | None = None) -> list[Step]:
        chosen = range(len(self.layers)) if layers is None else layers
        return [(UPDATE, m) for m in sorted(chosen, reverse=True)]

    def layerwise_steps(self) -> list[Step]:
        """Backward from the output layer, each layer's update right after its backward (LU)."""
        return [step for m in reversed(range(len(self.layers))) for step in ((BACKWARD, m), (UPDATE, m))]

    def base_times(self, worker: int, steps: Sequence[Step]) -> list[float]:
        """Cost / speed of each step on the worker's device."""
        speed = self.worker_devices[worker].speed
        costs = {FORWARD: "forward_s", BACKWARD: "backward_s", UPDATE: "update_s"}
        return [getattr(self.layers[m], costs[op]) / speed for op, m in steps]

    # --- running ------------------------------------------------------------------------------------

    def steps(
        self, worker: int, batch: int, steps: Sequence[Step], times: Sequence[float], block: bool = False
    ) -> Generator:
        """Run one batch's steps on the worker's device; with `block`, all updates become visible together
        when the last step ends (block update), otherwise each when it ends."""
        env, device, rows, link = self.env, self.worker_devices[worker], self.rows, self.update_link
        held = []
        for (op, layer), duration in zip(steps, times, strict=True):
            if duration > 0.0:
                wait = device.request()
                if wait is not None:
                    yield wait
                start = env.now
                yield Timeout(env, duration)
                device.release()
            else:
                start = env.now
            if op != UPDATE:
                rows.append((worker, op, batch, layer, start, env.now, NAN))
            elif block:
                held.append((worker, op, batch, layer, start, env.now))
            else:
                rows.append((worker, op, batch, layer, start, env.now, link.visible_s(env.now)))
        if held:
            visible = link.visible_s(env.now)
            rows.extend((*row, visible) for row in held)

    def span(self, worker: int, op: int, start: float) -> None:
        """Record a span without batch or layer (wait, allreduce) from `start` to now, if it lasts."""
        if self.env.now > start:
            self.rows.append((worker, op, -1, -1, start, self.env.now, NAN))

    def finish(self, batch: int) -> None:
        """Batch done: open the in-flight window, count it for the progress bar."""
        self.in_flight.finish(batch)
        self.finished += 1
        if self.progress is not None:
            self.progress.tick()

    def run(self) -> Timeline:
        self.env.run()
        if self.finished != self.batches:
            raise RuntimeError(f"simulation stalled after {self.finished} of {self.batches} batches")
        return Timeline.from_rows(self.rows)


def worker_groups(scenario: Scenario) -> np.ndarray:
    """Parameter-copy group of each worker: the replica for lapsgd/lppsgd/ddp, else 0 (one shared copy)."""
    count = len(scenario.worker_names())
    if scenario.method == "ddp":
        return np.arange(count)
    if scenario.method in ("lapsgd", "lppsgd"):
        return np.arange(count) // scenario.workers.per_replica
    return np.zeros(count, dtype=np.int64)
