"""The SimPy engine: an environment, the devices, links and clocks of a scenario, and the step runner.

Workers are SimPy processes (`simulator.workers`), one loop per way of dispatching batches. Each runs its
role's per-batch steps as the method defines them (`pdasgd.methods`). `Engine.plan` compiles a worker's
steps into `Plan`s, one per stretch between all-reduces: the timed steps (forward, backward, update), their
base durations (cost / device speed) and, for each update, the step at whose end it is published.
`Engine.batch` runs one batch of a worker: a sleeping straggler's wait first (a `wait` span, no device
slot), then each plan on the worker's device, synchronising with the role's other workers at each
all-reduce. A step takes a slot (FIFO if none is free), holds it for its duration (longer while it shares
the device, if the device has contention or is time-sliced), and releases it. Steps of zero duration take
no slot and no time. Only times are recorded while SimPy runs; which op and layer each time belongs to comes
from the plan afterwards, and update visibility from the update link. Versions, memory and spans are
computed from these records after the run (`simulator.records`, `simulator.memory`).
"""

from __future__ import annotations

import math
from collections.abc import Generator, Sequence
from dataclasses import dataclass

import numpy as np
import simpy
from simpy.events import Timeout

from pdasgd.methods import ALLREDUCE, BACKWARD, FORWARD, PUBLISH, UPDATE, Copies, Step, split_rank
from pdasgd.ranks import comm_name, ddp_buckets, network_name
from pdasgd.scenario import Scenario
from simulator.clock import Clock
from simulator.links import AllreduceLink, HandoffLink, UpdateLink
from simulator.progress import ProgressBar
from simulator.ranks import Collectives, RankState, gradient_allreduce
from simulator.records import OP_CODES, WAIT, Timeline
from simulator.resources import Barrier, BatchQueue, Device, Window
from theory import ties

NAN = math.nan
COST_OF = {FORWARD: "forward_s", BACKWARD: "backward_s", UPDATE: "update_s"}


@dataclass(frozen=True)
class Plan:
    """Steps (op code, layer) a worker runs between two all-reduces, their base durations (cost / speed),
    and for each step the index of the step at whose end it becomes visible (an update's publish point;
    the step itself for every other step)."""

    id: int
    steps: tuple[tuple[int, int], ...]
    base_s: list[float]
    visible_at: tuple[int, ...]


def compile_plans(steps: Sequence[Step], layers: Sequence, speed: float, first_id: int) -> list[Plan]:
    """The plans of one worker's per-batch steps (module docstring)."""
    plans: list[Plan] = []
    timed: list[tuple[int, int]] = []
    visible: list[int] = []
    for step in [*steps, Step(ALLREDUCE)]:
        if step.op == ALLREDUCE:
            base = [getattr(layers[m], COST_OF[_OP_NAME[op]]) / speed for op, m in timed]
            plans.append(Plan(first_id + len(plans), tuple(timed), base, tuple(visible)))
            timed, visible = [], []
        elif step.op == PUBLISH:
            for index in range(len(timed) - 1, -1, -1):
                if timed[index] == (OP_CODES[UPDATE], step.layer):
                    visible[index] = len(timed) - 1
                    break
        else:
            timed.append((OP_CODES[step.op], step.layer))
            visible.append(len(timed) - 1)
    return plans


_OP_NAME = {code: name for name, code in OP_CODES.items()}


class Engine:
    """One SimPy run of a scenario: shared state for the worker processes."""

    def __init__(self, scenario: Scenario, progress: ProgressBar | None = None) -> None:
        assert scenario.model is not None
        self.scenario = scenario
        self.method = scenario.definition
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
        self.rank_count = self.method.rank_count(scenario.workers)
        self.queues = [BatchQueue(self.env) for _ in range(self.rank_count)]  # hand-offs stay in their rank
        self.handoffs = [HandoffLink(self.env, delays.handoff_s, queue) for queue in self.queues]
        self.update_link = UpdateLink(delays.visibility_s)
        self.allreduce = AllreduceLink(delays.allreduce_s, scenario.workers.replicas)
        # a rank trains every R-th batch, so its window reaches R x max_in_flight batch ids back
        self.window = Window(self.env, scenario.workers.max_in_flight * self.rank_count, self.batches)
        self.local_count = len(self.method.local_names(scenario.workers))
        self.tie_s = ties.tie_s(scenario.model.sequential_s)  # instants gossip's marks treat as one
        if self.method.ranks:
            self.collectives = Collectives(self.env, self.rank_count)
            first_comm = len(self.worker_names)
            self.rank_states = [RankState(self, r, first_comm + r) for r in range(self.rank_count)]
            param_bytes = [layer.param_bytes for layer in self.layers]
            self.buckets = ddp_buckets(param_bytes, scenario.distributed.bucket_bytes)
        # gossip: per worker, its rank, whose marks its updates set (layers updated since last sent)
        self.marks: list[RankState] | None = None
        self.gossip_board: dict[int, list] = {}  # round -> each rank's (finished, marks), then reads
        if self.method.gossip and self.rank_count > 1:
            self.marks = [self.rank_states[w // self.local_count] for w in range(len(self.worker_names))]
        self.plans: list[Plan] = []
        self.calls: list[tuple[int, int, int]] = []  # (worker, batch, plan id) per `steps` call
        self.times: list[float] = []  # start, end of every step, call after call
        self.rows: list[tuple] = []  # spans without a plan (wait, allreduce, mix)
        self.mix_meta: list[tuple[int, int]] = []  # per mix row, in order: (round, partner); push: (-1, -1)
        self.finished = 0
        self.progress = progress
        self.timeline: Timeline | None = None  # the records, once run (simulator.core)

    # --- plans: the steps of one batch on one worker, and their durations on its device -------------

    def plan(self, worker: int, steps: Sequence[Step]) -> list[Plan]:
        """Register a worker's per-batch steps; durations are cost / speed on its device."""
        plans = compile_plans(steps, self.layers, self.worker_devices[worker].speed, len(self.plans))
        self.plans += plans
        return plans

    # --- running ------------------------------------------------------------------------------------

    def batch(self, worker: int, batch: int, plans: list[Plan], barrier: Barrier | None = None) -> Generator:
        """One batch of a worker: its straggler's sleep, then each plan, all-reducing between plans."""
        sleep_s, times = self.clocks[worker].batch([t for plan in plans for t in plan.base_s])
        if sleep_s > 0:
            start = self.env.now
            yield Timeout(self.env, sleep_s)
            self.rows.append((worker, WAIT, batch, -1, start, self.env.now, NAN))
        begin = 0
        for index, plan in enumerate(plans):
            yield from self.steps(worker, batch, plan, times[begin : begin + len(plan.base_s)])
            begin += len(plan.base_s)
            if index + 1 == len(plans):
                break
            if not self.method.ranks:
                yield from self.synchronize(worker, barrier)
            elif self.rank_count > 1:  # DDP's all-reduce in buckets, from the times just recorded
                recorded = self.times[len(self.times) - 2 * len(plan.steps) :]
                rank = worker // self.local_count
                yield from gradient_allreduce(self, rank, batch, plan.steps, recorded)

    def steps(self, worker: int, batch: int, plan: Plan, times: Sequence[float]) -> Generator:
        """Run one plan's steps on the worker's device, recording each step's start and end."""
        env, device = self.env, self.worker_devices[worker]
        record: list[float] = []
        add = record.append
        if self.marks is not None:
            yield from self._marking_steps(device, plan, times, add, self.marks[worker])
        elif device.time_slice:
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

    def _marking_steps(
        self, device: Device, plan: Plan, times: Sequence[float], add, rank: RankState
    ) -> Generator:
        """The steps of a gossiping rank: as `steps`, and each update marks its layer when it ends."""
        env, update = self.env, OP_CODES[UPDATE]
        for (op, layer), duration in zip(plan.steps, times, strict=True):
            start = env.now
            if duration > 0.0:
                if device.time_slice:
                    yield device.run(duration)
                else:
                    if device.free:
                        device.free -= 1
                    else:
                        yield device.wait()
                    start = env.now
                    yield device.run(duration) if device.shared else Timeout(env, duration)
                    device.release()
            add(start)
            add(env.now)
            if op == update:
                rank.mark(layer, env.now)

    def synchronize(self, worker: int, barrier: Barrier | None) -> Generator:
        """Wait for every party of `barrier` (a `wait` span), then one all-reduce (an `allreduce` span)."""
        if barrier is None:
            return
        arrived = self.env.now
        yield barrier.arrive()
        self.span(worker, WAIT, arrived)
        started = self.env.now
        duration_s = self.allreduce.duration_s()
        if duration_s > 0:
            yield self.env.timeout(duration_s)
            self.span(worker, OP_CODES[ALLREDUCE], started)

    def span(self, worker: int, op: int, start: float) -> None:
        """Record a span without batch or layer (wait, allreduce) from `start` to now, if it lasts."""
        if self.env.now > start:
            self.rows.append((worker, op, -1, -1, start, self.env.now, NAN))

    def finish(self, batch: int) -> None:
        """Batch done: open the in-flight window, count it for the progress bar."""
        self.window.finish(batch)
        if self.method.ranks:
            self.rank_states[batch % self.rank_count].finish()
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
        marks = [np.array(plan.visible_at, dtype=np.int64) for plan in self.plans]
        steps = np.concatenate([tables[p] for p in plan_id.tolist()]) if len(calls) else np.zeros((0, 2), int)
        within = np.concatenate([marks[p] for p in plan_id.tolist()]) if len(calls) else np.zeros(0, int)
        times = np.array(self.times).reshape(-1, 2)
        start, end = times[:, 0], times[:, 1]
        call_start = np.repeat(np.cumsum(lengths) - lengths, lengths)
        applied = end[call_start + within] if len(end) else end
        visible = np.where(steps[:, 0] == OP_CODES[UPDATE], self.update_link.visible_s(applied), NAN)
        return Timeline(
            np.repeat(worker, lengths),
            steps[:, 0],
            np.repeat(batch, lengths),
            steps[:, 1],
            start,
            end,
            visible,
            np.full(len(start), -1, dtype=np.int64),
        )


def trace_workers(scenario: Scenario) -> tuple[list[str], list[str]]:
    """Names and devices of everyone who has spans, in worker-index order: the workers, then (methods across
    two or more ranks) each rank's communicator on its network device."""
    names = scenario.worker_names()
    placement = scenario.device_of()
    devices = [placement[name] for name in names]
    ranks = scenario.definition.rank_count(scenario.workers)
    if scenario.definition.ranks and ranks > 1:
        names += [comm_name(rank) for rank in range(ranks)]
        devices += [network_name(rank) for rank in range(ranks)]
    return names, devices


def worker_groups(scenario: Scenario) -> np.ndarray:
    """Parameter copy of each of `trace_workers` (pdasgd.methods.Copies): one shared copy, one per replica,
    one per worker or one per rank."""
    names = trace_workers(scenario)[0]
    count = len(names)
    copies = scenario.definition.copies
    if copies is Copies.WORKER:
        return np.arange(count)
    if copies is Copies.REPLICA:
        return np.arange(count) // scenario.workers.per_replica
    if copies is Copies.RANK:
        return np.array([split_rank(name)[0] or 0 for name in names], dtype=np.int64)
    return np.zeros(count, dtype=np.int64)
