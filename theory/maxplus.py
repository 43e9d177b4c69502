"""Max-plus view of fixed-time schedules: timed event graphs and their maximum cycle mean.

Paper context: arXiv 2410.05985, section 3.3 (speed-up); docs/theory.md (speed-up, max-plus). With fixed
operation times the decoupled schedule is a timed event graph: transitions (forward start, forward end,
backward start, backward end) fire once per batch, and every arc u -> v (weight w, m initial tokens) says
    x_v(n) >= x_u(n - m) + w        (the n-th firing of v waits for the (n-m)-th firing of u).
The earliest firing times grow, after a transient, by the maximum cycle mean per firing:
    c = max over cycles of (sum of weights) / (sum of tokens).
For the decoupled schedule c = max(F/n_f, B/k, (F+d+B)/Q) = theory.speedup.cycle_time, an exact prediction of
the steady-state time per batch that the simulator must reproduce.

The cycle mean is computed with Karp's algorithm after reducing the graph to one token per step:
arcs holding m >= 2 tokens become chains of m one-token arcs, and the zero-token arcs (which must form no
cycle, or the graph deadlocks) are folded into the one-token steps by their max-plus closure.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from theory import _checks


class Arc(NamedTuple):
    """x_target(n) >= x_source(n - tokens) + weight_s."""

    source: str
    target: str
    weight_s: float
    tokens: int


@dataclass(frozen=True)
class EventGraph:
    transitions: tuple[str, ...]
    arcs: tuple[Arc, ...]

    def __post_init__(self) -> None:
        known = set(self.transitions)
        for arc in self.arcs:
            if arc.source not in known or arc.target not in known:
                raise ValueError(f"arc {arc} names an unknown transition")
            _checks.duration("arc weight_s", arc.weight_s)
            _checks.count("arc tokens", arc.tokens, minimum=0)


def karp(weights: np.ndarray) -> float:
    """Maximum cycle mean of a digraph, weights[u, v] = weight of arc u -> v (-inf: no arc).

    Karp (1978) with a virtual source joined to every node: D_k(v) = best k-arc walk ending at v,
    mean = max_v min_k (D_n(v) - D_k(v)) / (n - k). Returns -inf for an acyclic graph.
    """
    w = np.asarray(weights, dtype=float)
    n = len(w)
    best = np.full((n + 1, n), -np.inf)
    best[0] = 0.0
    for k in range(1, n + 1):
        best[k] = np.max(best[k - 1][:, None] + w, axis=0)
    ends = np.isfinite(best[n])
    if not ends.any():
        return -np.inf
    # a missing k-arc walk (-inf) gives +inf and so drops out of the min
    ratios = (best[n][ends] - best[:n, ends]) / (n - np.arange(n))[:, None]
    return float(np.max(np.min(ratios, axis=0)))


def _unit_token_arcs(graph: EventGraph) -> tuple[list[str], list[Arc]]:
    """Split every arc with m >= 2 tokens into a chain of m one-token arcs through new nodes."""
    nodes, arcs = list(graph.transitions), []
    for i, arc in enumerate(graph.arcs):
        if arc.tokens <= 1:
            arcs.append(arc)
            continue
        chain = [arc.source, *(f"_arc{i}_{j}" for j in range(1, arc.tokens)), arc.target]
        nodes.extend(chain[1:-1])
        for j, (u, v) in enumerate(zip(chain, chain[1:], strict=False)):
            arcs.append(Arc(u, v, arc.weight_s if j == 0 else 0.0, 1))
    return nodes, arcs


def _closure(w0: np.ndarray) -> np.ndarray:
    """Max-plus closure I + W0 + W0^2 + ... of the zero-token arcs; ValueError if they form a cycle."""
    n = len(w0)
    star = w0.copy()
    for k in range(n):
        star = np.maximum(star, star[:, k, None] + star[None, k, :])
    if np.isfinite(np.diag(star)).any():
        raise ValueError("the event graph has a cycle without tokens: it deadlocks")
    np.fill_diagonal(star, 0.0)
    return star


def max_cycle_mean(graph: EventGraph) -> float:
    """Cycle time of a timed event graph: max over cycles of sum(weights) / sum(tokens)."""
    nodes, arcs = _unit_token_arcs(graph)
    index = {name: i for i, name in enumerate(nodes)}
    w0 = np.full((len(nodes), len(nodes)), -np.inf)
    w1 = w0.copy()
    for arc in arcs:
        w = w1 if arc.tokens else w0
        u, v = index[arc.source], index[arc.target]
        w[u, v] = max(w[u, v], arc.weight_s)
    star = _closure(w0)
    # one step = one token-carrying arc, then any zero-token path
    step = np.max(w1[:, :, None] + star[None, :, :], axis=1)
    return karp(step)


def _zero_token_order(graph: EventGraph) -> list[str]:
    """Transitions in an order where every zero-token arc points forward (Kahn's algorithm)."""
    zero = [a for a in graph.arcs if a.tokens == 0]
    waiting = {t: sum(a.target == t for a in zero) for t in graph.transitions}
    order = [t for t in graph.transitions if waiting[t] == 0]
    for t in order:
        for a in zero:
            if a.source == t:
                waiting[a.target] -= 1
                if waiting[a.target] == 0:
                    order.append(a.target)
    if len(order) != len(graph.transitions):
        raise ValueError("the event graph has a cycle without tokens: it deadlocks")
    return order


def firing_times(graph: EventGraph, firings: int) -> dict[str, np.ndarray]:
    """Earliest firing times x_t(0..firings-1) of every transition; initial tokens are there at time 0."""
    firings = _checks.count("firings", firings)
    order = _zero_token_order(graph)
    times = {t: np.zeros(firings) for t in graph.transitions}
    for n in range(firings):
        for t in order:
            inputs = [
                times[a.source][n - a.tokens] + a.weight_s
                for a in graph.arcs
                if a.target == t and n >= a.tokens
            ]
            times[t][n] = max(inputs, default=0.0)
    return times


def async_schedule_graph(
    forward_s: float,
    backward_s: float,
    n_forward: int = 1,
    n_backward: int = 1,
    handoff_s: float = 0.0,
    max_in_flight: int | None = None,
) -> EventGraph:
    """Event graph of the decoupled schedule; one firing per batch (n-th firing = batch n).

    Its max cycle mean is theory.speedup.cycle_time with the same arguments.
    """
    f = _checks.duration("forward_s", forward_s)
    g = _checks.duration("backward_s", backward_s)
    n_f = _checks.count("n_forward", n_forward)
    k = _checks.count("n_backward", n_backward)
    d = _checks.duration("handoff_s", handoff_s)
    q = _checks.optional_count("max_in_flight", max_in_flight)
    arcs = [
        Arc("forward_start", "forward_end", f, 0),
        Arc("forward_end", "forward_start", 0.0, n_f),  # n_f forward workers, round robin
        Arc("forward_end", "backward_start", d, 0),  # hand-off link
        Arc("backward_start", "backward_end", g, 0),
        Arc("backward_end", "backward_start", 0.0, k),  # k backward workers, FIFO
    ]
    if q is not None:
        arcs.append(Arc("backward_end", "forward_start", 0.0, q))  # at most Q batches in flight
    transitions = ("forward_start", "forward_end", "backward_start", "backward_end")
    return EventGraph(transitions, tuple(arcs))
