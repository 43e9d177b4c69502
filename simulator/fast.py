"""The fast path: fixed-time schedules computed by the exact recursion of THEORY.md instead of SimPy.

Valid when every op time is fixed (no jitter, no stragglers), every worker has a device of its own (devices of
one role may differ from the other role's in speed, not among themselves), and the method is sequential,
async-lu or async-bu. Then, with F and B the forward and backward-plus-update time of a batch on the
workers' devices, d the hand-off delay and Q = max_in_flight:

    forward start   a_i = max(a_{i-n_f} + F, e_{i-Q})     (forward worker i mod n_f; the window)
    backward start  s_i = max(a_i + F + d, e_{i-k})        (FIFO: the earliest free worker did batch i-k)
    batch end       e_i = s_i + B                           (terms with a negative index are 0)

and sequential is a_i = e_{i-1}, s_i = a_i + F. Every per-layer span is a fixed offset from a_i or s_i
(`Offsets`), so the whole schedule is two arrays. `schedule_timeline` expands them into the same records the
SimPy engine writes (tests check both engines agree); `simulator.fastsummary` summarises them without
building spans, for runs of 10^6 batches.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import accumulate

import numpy as np

from pdasgd.scenario import Scenario
from simulator.records import BACKWARD, FORWARD, NO_VALUE, UPDATE, Timeline

FAST_METHODS = ("sequential", "async-lu", "async-bu")


def fast_path_problem(scenario: Scenario) -> str | None:
    """Why the fast path cannot compute this scenario exactly; None when it can."""
    if scenario.method not in FAST_METHODS:
        return f"method {scenario.method} has no fixed-time recursion"
    if scenario.delays.jitter_cv > 0:
        return "op times are random (delays.jitter_cv > 0)"
    if scenario.delays.stragglers:
        return "stragglers make op times vary"
    placement = scenario.device_of()
    if len(set(placement.values())) < len(placement):
        return "workers share a device"
    table = scenario.device_table()
    for role in ("forward", "backward"):
        speeds = {table[device].speed for name, device in placement.items() if name.startswith(role)}
        if len(speeds) > 1:
            return f"{role} workers run at different speeds"
    return None


@dataclass(frozen=True)
class Offsets:
    """Per layer (input first): span times after the batch's forward start (forward_*) or backward start.

    Accumulated in execution order, as the SimPy engine accumulates time; `visible` is when the layer's
    update becomes visible to readers (block update: all at the end), `end` when the batch's last op ends.
    """

    forward_start: np.ndarray
    forward_end: np.ndarray
    backward_start: np.ndarray
    backward_end: np.ndarray
    update_start: np.ndarray
    update_end: np.ndarray
    visible: np.ndarray
    forward_s: float
    end: float


def layer_offsets(scenario: Scenario) -> Offsets:
    assert scenario.model is not None
    layers = scenario.model.layers
    speed_f, speed_b = _role_speeds(scenario)
    f = [layer.forward_s / speed_f for layer in layers]
    g = [layer.backward_s / speed_b for layer in layers]
    u = [layer.update_s / speed_b for layer in layers]
    forward_start = [0.0, *accumulate(f[:-1])]
    forward_end = [start + duration for start, duration in zip(forward_start, f, strict=True)]
    count = len(layers)
    b0, b1, u0, u1 = ([0.0] * count for _ in range(4))
    now = 0.0
    for m in reversed(range(count)):
        b0[m], now = now, now + g[m]
        b1[m] = now
        if scenario.method != "async-bu":
            u0[m], now = now, now + u[m]
            u1[m] = now
    if scenario.method == "async-bu":
        for m in reversed(range(count)):
            u0[m], now = now, now + u[m]
            u1[m] = now
    delay_s = scenario.delays.update_s
    visible = [now + delay_s] * count if scenario.method == "async-bu" else [t + delay_s for t in u1]
    arrays = [np.array(x) for x in (forward_start, forward_end, b0, b1, u0, u1, visible)]
    return Offsets(*arrays, forward_s=forward_end[-1], end=now)


def _role_speeds(scenario: Scenario) -> tuple[float, float]:
    placement, table = scenario.device_of(), scenario.device_table()
    names = scenario.worker_names()
    forward = table[placement[names[0]]].speed
    backward = table[placement[names[-1]]].speed
    return forward, backward


@dataclass(frozen=True)
class FixedSchedule:
    """Forward and backward start of every batch, plus the per-layer offsets."""

    method: str
    n_forward: int
    n_backward: int
    forward_start: np.ndarray
    backward_start: np.ndarray
    offsets: Offsets

    @property
    def batches(self) -> int:
        return len(self.forward_start)

    @property
    def end_s(self) -> np.ndarray:
        """Completion of every batch (end of its last update)."""
        return self.backward_start + self.offsets.end


def fixed_schedule(scenario: Scenario) -> FixedSchedule:
    """Run the recursion (module docstring) for every batch of the scenario."""
    offsets = layer_offsets(scenario)
    batches = scenario.run.batches
    if scenario.method == "sequential":
        a, s = _sequential(batches, offsets.forward_s, offsets.end)
        return FixedSchedule("sequential", 1, 1, a, s, offsets)
    workers = scenario.workers
    a, s = _decoupled(
        batches,
        workers.forward,
        workers.backward,
        workers.max_in_flight,
        offsets.forward_s,
        offsets.end,
        scenario.delays.handoff_s,
    )
    return FixedSchedule(scenario.method, workers.forward, workers.backward, a, s, offsets)


def _sequential(batches: int, forward_s: float, end_s: float) -> tuple[np.ndarray, np.ndarray]:
    a, s = [0.0] * batches, [0.0] * batches
    now = 0.0
    for i in range(batches):
        a[i] = now
        s[i] = now + forward_s
        now = s[i] + end_s
    return np.array(a), np.array(s)


def _decoupled(
    batches: int, n_f: int, k: int, q: int, forward_s: float, end_s: float, handoff_s: float
) -> tuple[np.ndarray, np.ndarray]:
    a, s, e = [0.0] * batches, [0.0] * batches, [0.0] * batches
    forward_free = [0.0] * n_f
    for i in range(batches):
        start = forward_free[i % n_f]
        if i >= q and e[i - q] > start:
            start = e[i - q]
        a[i] = start
        ready = start + forward_s
        forward_free[i % n_f] = ready
        ready += handoff_s
        if i >= k and e[i - k] > ready:
            ready = e[i - k]
        s[i] = ready
        e[i] = ready + end_s
    return np.array(a), np.array(s)


def schedule_timeline(schedule: FixedSchedule) -> Timeline:
    """The schedule as records: one forward, backward and update row per (batch, layer)."""
    off = schedule.offsets
    b, layers = schedule.batches, len(off.forward_start)
    batch = np.repeat(np.arange(b), layers)
    layer = np.tile(np.arange(layers), b)
    if schedule.method == "sequential":
        forward_worker = backward_worker = np.zeros(b * layers, dtype=np.int64)
    else:
        forward_worker = batch % schedule.n_forward
        backward_worker = schedule.n_forward + batch % schedule.n_backward
    a = schedule.forward_start[:, None]
    s = schedule.backward_start[:, None]
    columns = [
        (forward_worker, FORWARD, a + off.forward_start, a + off.forward_end, None),
        (backward_worker, BACKWARD, s + off.backward_start, s + off.backward_end, None),
        (backward_worker, UPDATE, s + off.update_start, s + off.update_end, s + off.visible),
    ]
    parts = [
        _rows(worker, op, batch, layer, start, end, visible) for worker, op, start, end, visible in columns
    ]
    return Timeline(*[np.concatenate(column) for column in zip(*parts, strict=True)])


def _rows(worker, op, batch, layer, start, end, visible) -> tuple[np.ndarray, ...]:
    n = len(batch)
    visible = np.full(n, np.nan) if visible is None else visible.ravel()
    return (
        worker.astype(np.int64),
        np.full(n, op, dtype=np.int64),
        batch,
        layer,
        start.ravel(),
        end.ravel(),
        visible,
        np.full(n, NO_VALUE, dtype=np.int64),
    )
