"""The fast path: fixed-time schedules placed by the exact recursion of theory.speedup instead of SimPy.

Valid when every op time is fixed (no jitter, no stragglers), every worker has a device of its own (devices of
one role may differ from the other role's in speed, not among themselves), and the method's steps have the
shape of a fixed-time recursion (`pdasgd.offsets.fixed_shape`): one worker doing everything (sequential), or
round-robin forward workers handing batches to FIFO backward workers (async-lu, async-bu and any variant
defined with those roles). Then, with F and B the forward and backward-work time of a batch on the workers'
devices, d the hand-off delay and Q = max_in_flight, `theory.speedup.async_schedule` gives

    forward start   a_i = max(a_{i-n_f} + F, e_{i-Q})     (forward worker i mod n_f; the window)
    backward start  s_i = max(a_i + F + d, e_{i-k})        (FIFO: the earliest free worker did batch i-k)
    batch end       e_i = s_i + B                           (terms with a negative index are 0)

and sequential is the case n_f = k = Q = 1, d = 0. Every per-layer span is a fixed offset from a_i or s_i
(`pdasgd.offsets`, read off the method's steps), so the whole schedule is two arrays. `schedule_timeline`
expands them into the same records the SimPy engine writes (tests check both engines agree);
`simulator.fastsummary` summarises them without building spans, for runs of 10^6 batches.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from pdasgd.methods import Method, split_rank
from pdasgd.offsets import DECOUPLED, SINGLE, Offsets, batch_offsets, fixed_shape
from pdasgd.scenario import Scenario
from simulator.records import BACKWARD, FORWARD, NO_VALUE, UPDATE, Timeline
from theory.speedup import async_schedule


def fast_path_problem(scenario: Scenario) -> str | None:
    """Why the fast path cannot compute this scenario exactly; None when it can."""
    assert scenario.model is not None
    if fixed_shape(scenario.definition, scenario.workers, len(scenario.model.layers)) is None:
        return f"method {scenario.method} has no fixed-time recursion"
    return timing_problem(scenario)


def timing_problem(scenario: Scenario) -> str | None:
    """Why op times are not fixed per role (jitter, stragglers, shared devices, mixed speeds); None if
    they are."""
    if scenario.delays.jitter_cv > 0:
        return "op times are random (delays.jitter_cv > 0)"
    if scenario.delays.stragglers:
        return "stragglers make op times vary"
    placement = scenario.device_of()
    if len(set(placement.values())) < len(placement):
        return "workers share a device"
    table = scenario.device_table()
    for role in scenario.definition.roles:
        local = set(role.worker_names(scenario.workers))
        speeds = {table[placement[name]].speed for name in placement if split_rank(name)[1] in local}
        if len(speeds) > 1:
            return f"{role.name} workers run at different speeds"
    return None


def layer_offsets(scenario: Scenario) -> Offsets:
    """The offsets of one batch's steps on the workers' devices (costs / the role's device speed)."""
    assert scenario.model is not None
    layers, definition = scenario.model.layers, scenario.definition
    speed_f, speed_b = _role_speeds(scenario)
    return batch_offsets(
        definition.batch_steps(len(layers), scenario.workers),
        [layer.forward_s / speed_f for layer in layers],
        [layer.backward_s / speed_b for layer in layers],
        [layer.update_s / speed_b for layer in layers],
        scenario.delays.visibility_s,
    )


def _role_speeds(scenario: Scenario) -> tuple[float, float]:
    """Device speed of the first role's workers and of the last role's."""
    placement, table = scenario.device_of(), scenario.device_table()
    names = scenario.worker_names()
    return table[placement[names[0]]].speed, table[placement[names[-1]]].speed


@dataclass(frozen=True)
class FixedSchedule:
    """Forward and backward start of every batch, plus the per-layer offsets."""

    method: str
    shape: str
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
        """Completion of every batch (end of its last step)."""
        return self.backward_start + self.offsets.end


def fixed_schedule(scenario: Scenario, batches: int | None = None) -> FixedSchedule:
    """Run the recursion (module docstring) for every batch of the scenario (the first `batches`: one
    rank's share, for `simulator.fastgossip`)."""
    assert scenario.model is not None
    offsets = layer_offsets(scenario)
    workers = scenario.workers
    batches = scenario.run.batches if batches is None else batches
    shape = fixed_shape(local_definition(scenario), workers, len(scenario.model.layers))
    if shape == SINGLE:
        n_f, k, q, d = 1, 1, 1, 0.0
    else:
        assert shape == DECOUPLED
        n_f, k, q, d = workers.forward, workers.backward, workers.max_in_flight, scenario.delays.handoff_s
    schedule = async_schedule(batches, offsets.forward_s, offsets.end, k, n_f, d, q)
    return FixedSchedule(
        scenario.method, shape, n_f, k, schedule.forward_start_s, schedule.backward_start_s, offsets
    )


def local_definition(scenario: Scenario) -> Method:
    """The method one process runs: the scenario's, or for gossip one rank's pipeline without the ranks."""
    definition = scenario.definition
    return replace(definition, ranks=False, gossip=False) if definition.gossip else definition


def schedule_timeline(schedule: FixedSchedule) -> Timeline:
    """The schedule as records: one forward, backward and update row per (batch, layer)."""
    off = schedule.offsets
    b, layers = schedule.batches, len(off.forward_start)
    batch = np.repeat(np.arange(b), layers)
    layer = np.tile(np.arange(layers), b)
    if schedule.shape == SINGLE:
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
