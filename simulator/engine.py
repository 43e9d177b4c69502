"""The SimPy engine: an environment, the devices, links and clocks of a scenario, and the step runner.

Workers are SimPy processes (`simulator.workers`, `simulator.replicated`). Each runs batches as lists of
steps `(op, layer)`, one step per layer and per kind of work (forward, backward, update). `Engine.steps` runs
such a list (a `Plan`) on the worker's device: take a slot (wait FIFO if none is free), hold it for the
step's duration (longer while it shares the device, if the device has contention), release it, and record
when it started and ended. Steps of zero duration take no slot and no time. Only times are recorded while
SimPy runs; which op and layer each time belongs to comes from the plan afterwards, and update visibility
from the update link. Versions, memory and spans are computed from these records after the run
(`simulator.records`, `simulator.memory`).
"""

from __future__ import annotations

import math
from collections.abc import Generator, Sequence
from dataclasses import dataclass

import numpy as np
import simpy
from simpy.events import Timeout

from pdasgd.scenario import Scenario
from simulator.clock import Clock
from simulator.links import AllreduceLink, HandoffLink, UpdateLink
from simulator.progress import Progress
from simulator.records import BACKWARD, FORWARD, UPDATE, Timeline
from simulator.resources import BatchQueue, Device, InFlight

NAN = math.nan
Step = tuple[int, int]


class Engine:
    """One SimPy run of a scenario: shared state for the worker processes."""

    def __init__(self, scenario: Scenario, progress: Progress | None = None) -> None:
        assert scenario.model is not None
        self.scenario = scenario
        self.env = simpy.Environment()
        self.layers = scenario.model.layers
        self.batches = scenario.run.batches
        self.worker_names = scenario.worker_names()
        placement = scenario.device_of()
        table = scenario.device_table()
        self.devices = {
            name: Device(self.env, name, d.slots, d.speed, d.contention, d.time_slice)
            for name, d in table.items()
        }
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
        self.plans: list[Plan] = []
        self.calls: list[tuple[int, int, int]] = []  # (worker, batch, plan id) per `steps` call
        self.times: list[float] = []  # start, end of every step, call after call
        self.rows: list[tuple] = []  # spans without a plan (wait, allreduce)
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

    def plan(self, worker: int, steps: Sequence[Step], block: bool = False) -> Plan:
        """Register the steps a worker runs per batch; durations are cost / speed on its device."""
        speed = self.worker_devices[worker].speed
        costs = {FORWARD: "forward_s", BACKWARD: "backward_s", UPDATE: "update_s"}
        base_s = [getattr(self.layers[m], costs[op]) / speed for op, m in steps]
        plan = Plan(len(self.plans), tuple(steps), base_s, block)
        self.plans.append(plan)
        return plan

    # --- running ------------------------------------------------------------------------------------

    def steps(self, worker: int, batch: int, plan: Plan, times: Sequence[float]) -> Generator:
        """Run one batch's steps on the worker's device, recording each step's start and end."""
        env, device = self.env, self.worker_devices[worker]
        record: list[float] = []
        add = record.append
        if device.time_slice:
            yield from self._time_sliced_steps(device, times, add)
        else:
            shared = device.shared
            for duration in times:
                if duration > 0.0:
                    if device.free:
                        device.free -= 1
                    else:
                        yield device.wait()
                    start = env.now
                    yield device.run(duration) if shared else Timeout(env, duration)
                    device.release()
                    add(start)
                    add(env.now)
                else:
                    now = env.now
                    add(now)
                    add(now)
        self.calls.append((worker, batch, plan.id))
        self.times += record

    def _time_sliced_steps(self, device: Device, times: Sequence[float], add) -> Generator:
        """The steps on a time-sliced device: no slot to wait for, every op runs at its share."""
        env = self.env
        for duration in times:
            start = env.now
            if duration > 0.0:
                yield device.run(duration)
            add(start)
            add(env.now)

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
        steps = self._step_timeline()
        return Timeline.concatenate([steps, Timeline.from_rows(self.rows)]) if self.rows else steps

    def _step_timeline(self) -> Timeline:
        """The recorded steps as columns: (op, layer) from each call's plan, times as recorded."""
        calls = np.array(self.calls, dtype=np.int64).reshape(-1, 3)
        worker, batch, plan_id = calls.T
        lengths = np.array([len(plan.steps) for plan in self.plans], dtype=np.int64)[plan_id]
        tables = [np.array(plan.steps, dtype=np.int64).reshape(-1, 2) for plan in self.plans]
        steps = np.concatenate([tables[p] for p in plan_id.tolist()]) if len(calls) else np.zeros((0, 2), int)
        times = np.array(self.times).reshape(-1, 2)
        start, end = times[:, 0], times[:, 1]
        block = np.array([plan.block for plan in self.plans])[plan_id]
        call_end = end[np.cumsum(lengths) - 1] if len(lengths) else end[:0]
        applied = np.where(np.repeat(block, lengths), np.repeat(call_end, lengths), end)
        visible = np.where(steps[:, 0] == UPDATE, self.update_link.visible_s(applied), NAN)
        rows = len(start)
        return Timeline(
            np.repeat(worker, lengths),
            steps[:, 0],
            np.repeat(batch, lengths),
            steps[:, 1],
            start,
            end,
            visible,
            np.full(rows, -1, dtype=np.int64),
        )


@dataclass(frozen=True)
class Plan:
    """The steps (op, layer) one worker runs per batch and their base durations (cost / speed). With
    `block`, the batch's updates become visible together when its last step ends (block update)."""

    id: int
    steps: tuple[Step, ...]
    base_s: list[float]
    block: bool = False


def worker_groups(scenario: Scenario) -> np.ndarray:
    """Parameter-copy group of each worker: the replica for lapsgd/lppsgd/ddp, else 0 (one shared copy)."""
    count = len(scenario.worker_names())
    if scenario.method == "ddp":
        return np.arange(count)
    if scenario.method in ("lapsgd", "lppsgd"):
        return np.arange(count) // scenario.workers.per_replica
    return np.zeros(count, dtype=np.int64)
