"""Staleness of layer-wise (LU) versus block (BU) updates.

Paper: arXiv 2410.05985, section 3.4 (and the remark in 3.2). Layers m = 1..M, 1 = input; backward visits
layer M first. g_l, f_l, u_l are layer l's backward, forward and update times; F = sum f_l, B = sum (g_l+u_l).
Lists here are indexed from the input layer (index 0 is m = 1).

- Relative delay of BU vs LU at layer m: tau_m = sum_{l<m} g_l (BU applies layer m when the whole backward
  ends, LU as soon as its gradient exists). Uniform layers: tau_m = (m-1) beta F / M.
  The paper writes beta F m / M, whose sum is beta F (M+1)/2, yet states beta F (M-1)/2, which matches m-1.
  The paper's "average" is a sum; the mean beta F (M-1)/(2M) does not grow with depth when beta F is fixed.
- Version staleness of layer m for batch i (docs/design.md) = number of updates of layer m applied after
  batch i's forward read it and before batch i's own update of it. Tie rule (theory.ties): an update at the
  same instant as a read is visible (it is not counted).
- Forward-bound regime (n_f = 1, B <= k F, so one batch every F and no queueing): with r_m the read offset
  of layer m after the batch's forward start (sum_{l<m} f_l) and v_m the offset after its backward start at
  which its own update becomes visible, the time from batch i's read of layer m to that instant is
  Delta_m = F - r_m + d + v_m:
      LU: v_m = sum_{l>=m} (g_l + u_l);   BU: v_m = B;   plus any update-visibility delay,
  and the updates in between are those of batches i-1, i-2, ... that become visible less than Delta_m later
  than batch i-j's own read, so staleness_m = ceil(Delta_m / F) - 1 for every batch in steady state.
  `offset_staleness` takes any r and v, so every decoupled method (pdasgd.methods) has its closed form.
- Section 3.2 says the second half of the layers use new parameters. In fact batch i reads batch i-1's LU
  update of layer m iff beta (M-m+1) <= m-1 (uniform layers, d = 0): a fraction -> 1/(1+beta) of the layers.
- When the in-flight bound Q binds (backward-bound k < beta, or a small Q), BU staleness is Q - 1 for every
  layer. Proof (one forward worker): batch i reads after the backward end of batch i-Q (visible), and if the
  forward of batch i+1 waits for the bound, the backward end of batch i-Q+1 is at least F after batch i's
  forward start, so (with f_M > 0) after every read of batch i: batches i-Q+1..i-1 all count.
  With n_f forward workers forwards overlap and "exactly Q - 1" weakens to Q - n_f <= staleness <= Q - 1.
  With an unbounded queue staleness grows without limit, by 1 - kF/B per batch.
  `staleness_recursion` computes the exact per-batch staleness of any fixed-time schedule, LU included.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import accumulate

import numpy as np

from theory import _checks, ties
from theory.speedup import async_schedule


def block_delay(backward_s_per_layer: Sequence[float]) -> list[float]:
    """tau_m = sum_{l<m} g_l: how much later BU applies layer m's update than LU (input layer first)."""
    g = _checks.durations("backward_s_per_layer", backward_s_per_layer)
    return [0.0, *accumulate(g[:-1])]


def mean_relative_delay(backward_s_per_layer: Sequence[float]) -> float:
    """Mean of block_delay over layers; uniform layers: beta F (M-1) / (2M)."""
    tau = block_delay(backward_s_per_layer)
    return sum(tau) / len(tau)


def paper_relative_staleness(beta: float, layers: int, forward_s: float = 1.0) -> list[float]:
    """The paper's beta F m / M for m = 1..M. Off by one layer: the correct delay is beta F (m-1) / M."""
    beta = _checks.duration("beta", beta)
    layers = _checks.count("layers", layers)
    forward_s = _checks.duration("forward_s", forward_s)
    return [beta * forward_s * m / layers for m in range(1, layers + 1)]


def uniform_layers(total_s: float, layers: int) -> list[float]:
    """Split a whole-batch time evenly over `layers` layers."""
    total_s = _checks.duration("total_s", total_s)
    layers = _checks.count("layers", layers)
    return [total_s / layers] * layers


def read_offsets(forward_s_per_layer: Sequence[float]) -> list[float]:
    """r_m = sum_{l<m} f_l: when layer m is read after the batch's forward starts."""
    f = _checks.durations("forward_s_per_layer", forward_s_per_layer)
    return [0.0, *accumulate(f[:-1])]


def visible_offsets(
    backward_s_per_layer: Sequence[float],
    layerwise: bool,
    update_s_per_layer: Sequence[float] | None = None,
) -> list[float]:
    """v_m: when layer m's update becomes visible after the batch's backward starts; layer-wise (LU):
    sum_{l>=m} (g_l + u_l), block (BU): B = sum (g_l + u_l) for every layer."""
    g = _checks.durations("backward_s_per_layer", backward_s_per_layer)
    u = _layer_updates(update_s_per_layer, len(g))
    done = list(accumulate((gl + ul for gl, ul in zip(g[::-1], u[::-1], strict=True))))[::-1]
    return done if _checks.flag("layerwise", layerwise) else [done[0]] * len(g)


def offset_staleness(
    read_offset_s: Sequence[float],
    visible_offset_s: Sequence[float],
    forward_s: float,
    backward_s: float,
    n_backward: int,
    handoff_s: float = 0.0,
) -> list[int]:
    """Steady-state version staleness per layer in the forward-bound regime: ceil(Delta_m / F) - 1 with
    Delta_m = F - r_m + d + v_m (module docstring). Raises ValueError in the backward-bound regime
    (B > k F, B the backward worker's time per batch), where staleness depends on the in-flight bound."""
    forward = _checks.duration("forward_s", forward_s, positive=True)
    backward = _checks.duration("backward_s", backward_s)
    k = _checks.count("n_backward", n_backward)
    d = _checks.duration("handoff_s", handoff_s)
    read = _checks.durations("read_offset_s", read_offset_s)
    visible = _checks.durations("visible_offset_s", visible_offset_s)
    if len(read) != len(visible):
        raise ValueError(f"{len(read)} read offsets but {len(visible)} visible offsets")
    if backward > k * forward * (1 + ties.TIE_FRACTION):
        raise ValueError(
            f"backward-bound (B = {backward:g} > k F = {k * forward:g}): staleness depends on "
            "max_in_flight; use staleness_recursion"
        )
    return [ties.ceil((forward - r + d + v) / forward) - 1 for r, v in zip(read, visible, strict=True)]


def version_staleness(
    forward_s_per_layer: Sequence[float],
    backward_s_per_layer: Sequence[float],
    n_backward: int,
    layerwise: bool,
    handoff_s: float = 0.0,
    update_s_per_layer: Sequence[float] | None = None,
) -> list[int]:
    """Steady-state version staleness per layer (input first) in the forward-bound regime, LU
    (`layerwise`) or BU.

    Assumes one forward worker, fixed times and B <= k F (B includes update times); raises ValueError in
    the backward-bound regime, where staleness depends on the in-flight bound (see staleness_recursion).
    """
    f = _checks.durations("forward_s_per_layer", forward_s_per_layer)
    g = _checks.durations("backward_s_per_layer", backward_s_per_layer)
    u = _layer_updates(update_s_per_layer, len(g))
    if len(f) != len(g):
        raise ValueError(f"{len(f)} forward but {len(g)} backward layer times")
    visible = visible_offsets(g, layerwise, u)
    return offset_staleness(read_offsets(f), visible, sum(f), sum(g) + sum(u), n_backward, handoff_s)


def _layer_updates(update_s_per_layer: Sequence[float] | None, layers: int) -> list[float]:
    if update_s_per_layer is None:
        return [0.0] * layers
    u = _checks.durations("update_s_per_layer", update_s_per_layer)
    if len(u) != layers:
        raise ValueError(f"{len(u)} update times for {layers} layers")
    return u


def uniform_staleness(layers: int, beta: float, layerwise: bool) -> list[int]:
    """Closed forms for uniform layers, d = 0, k >= beta: LU ceil((M-m+1)(1+beta)/M) - 1,
    BU ceil((M-m+1)/M + beta) - 1, for m = 1..M."""
    layers = _checks.count("layers", layers)
    beta = _checks.duration("beta", beta)
    share = [(layers - m + 1) / layers for m in range(1, layers + 1)]
    if _checks.flag("layerwise", layerwise):
        return [ties.ceil(s * (1 + beta)) - 1 for s in share]
    return [ties.ceil(s + beta) - 1 for s in share]


def fresh_layer_fraction(layers: int, beta: float) -> float:
    """Fraction of layers whose LU update from batch i-1 batch i already reads: beta (M-m+1) <= m-1."""
    layers = _checks.count("layers", layers)
    beta = _checks.duration("beta", beta)
    fresh = sum(1 for m in range(1, layers + 1) if beta * (layers - m + 1) <= m - 1)
    return fresh / layers


def bounded_bu_staleness(max_in_flight: int) -> int:
    """BU staleness when the in-flight bound Q binds: Q - 1 for every layer (Q = k+1 gives k).

    Exact with one forward worker; with n_f forward workers it lies in [Q - n_f, Q - 1].
    """
    return _checks.count("max_in_flight", max_in_flight) - 1


def staleness_recursion(
    forward_s_per_layer: Sequence[float],
    backward_s_per_layer: Sequence[float],
    n_backward: int,
    layerwise: bool,
    batches: int,
    n_forward: int = 1,
    handoff_s: float = 0.0,
    update_s_per_layer: Sequence[float] | None = None,
    max_in_flight: int | None = None,
) -> np.ndarray:
    """Exact version staleness, shape (batches, layers), of the fixed-time LU (`layerwise`) or BU schedule
    in any regime (see offset_staleness_recursion)."""
    f = _checks.durations("forward_s_per_layer", forward_s_per_layer)
    g = _checks.durations("backward_s_per_layer", backward_s_per_layer)
    u = _layer_updates(update_s_per_layer, len(g))
    if len(f) != len(g):
        raise ValueError(f"{len(f)} forward but {len(g)} backward layer times")
    visible = visible_offsets(g, layerwise, u)
    return offset_staleness_recursion(
        read_offsets(f),
        visible,
        sum(f),
        sum(g) + sum(u),
        batches,
        n_backward,
        n_forward,
        handoff_s,
        max_in_flight,
    )


def offset_staleness_recursion(
    read_offset_s: Sequence[float],
    visible_offset_s: Sequence[float],
    forward_s: float,
    backward_s: float,
    batches: int,
    n_backward: int = 1,
    n_forward: int = 1,
    handoff_s: float = 0.0,
    max_in_flight: int | None = None,
) -> np.ndarray:
    """Exact version staleness, shape (batches, layers), of any fixed-time decoupled schedule.

    Uses theory.speedup.async_schedule for the forward and backward start of every batch; batch i reads
    layer m at its forward start + r_m and its update of m becomes visible at its backward start + v_m.
    Updates land in batch order, so the count is the number of earlier batches whose update of the layer
    becomes visible strictly after the read (tie rule: at the same instant counts as visible).
    """
    read_offset = np.array(_checks.durations("read_offset_s", read_offset_s))
    visible_offset = np.array(_checks.durations("visible_offset_s", visible_offset_s))
    if len(read_offset) != len(visible_offset):
        raise ValueError(f"{len(read_offset)} read offsets but {len(visible_offset)} visible offsets")
    schedule = async_schedule(batches, forward_s, backward_s, n_backward, n_forward, handoff_s, max_in_flight)
    read = schedule.forward_start_s[:, None] + read_offset
    visible = schedule.backward_start_s[:, None] + visible_offset
    tie = ties.tie_s(forward_s + backward_s)
    batch = np.arange(len(read))
    stale = np.empty(read.shape, dtype=int)
    for m in range(len(read_offset)):
        seen = np.searchsorted(visible[:, m], read[:, m] + tie, side="right")
        stale[:, m] = np.maximum(batch - seen, 0)
    return stale
