"""Offsets: when each step of one batch starts and ends, for fixed op times, read off a method's steps.

With fixed op times every step of a batch sits at a fixed offset from the start of the batch's forward
(forward steps) or from the start of its backward work (every later step: backward, update, publish). The
simulator's fast path places whole schedules with them and the closed forms take their read and
visibility offsets, so both derive the timing of one batch from the method's steps in the same way.

The steps are one batch's steps of a method whose shape has a fixed-time recursion (`fixed_shape`): one
round-robin worker doing everything (sequential), or round-robin forward workers handing batches to FIFO
backward workers (async-lu, async-bu and variants of them). An update becomes visible when the publish step
of its layer ends (at its own end without one), plus `visibility_s`, the update-visibility delay.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pdasgd.methods import ALLREDUCE, BACKWARD, FORWARD, PUBLISH, UPDATE, Dispatch, Method, Step

SINGLE, DECOUPLED = "single", "decoupled"


@dataclass(frozen=True)
class Offsets:
    """Per layer (input first): span times after the batch's forward start (`forward_*`) or after the start
    of its backward work (the rest); `visible` is when the layer's update becomes visible to readers, `end`
    when the batch's last step ends, `forward_s` when its forward ends. Accumulated in step order, as the
    SimPy engine accumulates time."""

    forward_start: np.ndarray
    forward_end: np.ndarray
    backward_start: np.ndarray
    backward_end: np.ndarray
    update_start: np.ndarray
    update_end: np.ndarray
    visible: np.ndarray
    forward_s: float
    end: float


def fixed_shape(method: Method, workers, layers: int) -> str | None:
    """SINGLE, DECOUPLED or None: whether the method's schedule has the fixed-time recursion of
    theory.speedup (one process, every worker of a role runs the same steps, every layer gets its backward
    and update, no all-reduce, and the shape above)."""
    roles = method.roles
    if method.ranks or any(_varies(role, workers, layers) for role in roles):
        return None
    steps = method.batch_steps(layers, workers)
    if any(step.op == ALLREDUCE for step in steps):
        return None
    for op in (BACKWARD, UPDATE):  # every layer has its backward and its update
        if sorted(step.layer for step in steps if step.op == op) != list(range(layers)):
            return None
    if len(roles) == 1:
        role = roles[0]
        return SINGLE if role.dispatch is Dispatch.ROUND_ROBIN and role.size(workers) == 1 else None
    return DECOUPLED if roles[0].dispatch is Dispatch.ROUND_ROBIN else None


def _varies(role, workers, layers: int) -> bool:
    first = role.steps(layers, 0, workers)
    return any(role.steps(layers, i, workers) != first for i in range(1, role.size(workers)))


def batch_offsets(
    steps: list[Step],
    forward_s: list[float],
    backward_s: list[float],
    update_s: list[float],
    visibility_s: float = 0.0,
) -> Offsets:
    """Offsets of one batch's `steps` with per-layer costs already divided by each role's device speed."""
    layers = len(forward_s)
    columns = {name: [0.0] * layers for name in ("f0", "f1", "b0", "b1", "u0", "u1", "applied")}
    published: dict[int, float] = {}
    now = 0.0
    in_forward = True
    forward_end = 0.0
    for step in steps:
        if in_forward and step.op != FORWARD:
            in_forward, forward_end, now = False, now, 0.0
        m = step.layer
        if step.op == FORWARD:
            columns["f0"][m], now = now, now + forward_s[m]
            columns["f1"][m] = now
        elif step.op == BACKWARD:
            columns["b0"][m], now = now, now + backward_s[m]
            columns["b1"][m] = now
        elif step.op == UPDATE:
            columns["u0"][m], now = now, now + update_s[m]
            columns["u1"][m] = now
        elif step.op == PUBLISH:
            published[m] = now
    if in_forward:
        forward_end, now = now, 0.0
    visible = [published.get(m, columns["u1"][m]) + visibility_s for m in range(layers)]
    arrays = [np.array(columns[key]) for key in ("f0", "f1", "b0", "b1", "u0", "u1")]
    return Offsets(*arrays, np.array(visible), forward_s=forward_end, end=now)
