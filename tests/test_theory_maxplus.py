"""Max-plus cycle time (docs/theory.md, speed-up) against brute force, the closed form and the recursion."""

import itertools

import numpy as np
import pytest

from theory.maxplus import (
    Arc,
    EventGraph,
    async_schedule_graph,
    firing_times,
    karp,
    max_cycle_mean,
)
from theory.speedup import async_schedule, cycle_time


def brute_force_cycle_ratio(graph):
    """Max of sum(weights)/sum(tokens) over all simple cycles, choosing any parallel arc."""
    out = {t: [a for a in graph.arcs if a.source == t] for t in graph.transitions}
    best = -np.inf

    def walk(start, node, visited, weight, tokens):
        nonlocal best
        for arc in out[node]:
            if arc.target == start and tokens + arc.tokens > 0:
                best = max(best, (weight + arc.weight_s) / (tokens + arc.tokens))
            elif arc.target not in visited and arc.target > start:
                walk(start, arc.target, visited | {arc.target}, weight + arc.weight_s, tokens + arc.tokens)

    for start in graph.transitions:
        walk(start, start, {start}, 0.0, 0)
    return best


def random_graph(rng, nodes):
    names = [f"t{i}" for i in range(nodes)]
    order = rng.permutation(nodes)  # zero-token arcs only go forward in this order: no deadlock
    arcs = []
    for u, v in itertools.product(range(nodes), repeat=2):
        for _ in range(int(rng.integers(0, 3))):
            if rng.uniform() < 0.35:
                tokens = 0 if order[u] < order[v] and rng.uniform() < 0.5 else int(rng.integers(1, 4))
                arcs.append(Arc(names[u], names[v], float(rng.uniform(0, 5)), tokens))
    return EventGraph(tuple(names), tuple(arcs))


def test_max_cycle_mean_matches_brute_force():
    rng = np.random.default_rng(0)
    for _ in range(150):
        graph = random_graph(rng, int(rng.integers(1, 6)))
        assert max_cycle_mean(graph) == pytest.approx(brute_force_cycle_ratio(graph), rel=1e-9)


def test_karp_on_plain_digraphs():
    rng = np.random.default_rng(1)
    for _ in range(100):
        n = int(rng.integers(1, 6))
        weights = np.where(rng.uniform(size=(n, n)) < 0.4, rng.uniform(-3, 3, (n, n)), -np.inf)
        arcs = [Arc(f"t{u}", f"t{v}", 0.0, 1) for u in range(n) for v in range(n) if weights[u, v] > -np.inf]
        # brute force with shifted weights (durations must be >= 0): mean shifts by the same constant
        shifted = EventGraph(
            tuple(f"t{i}" for i in range(n)),
            tuple(a._replace(weight_s=weights[int(a.source[1:]), int(a.target[1:])] + 3) for a in arcs),
        )
        assert karp(weights) == pytest.approx(brute_force_cycle_ratio(shifted) - 3, abs=1e-9)


def test_examples():
    two_tokens = EventGraph(("a", "b"), (Arc("a", "b", 1.0, 0), Arc("b", "a", 2.0, 2)))
    assert max_cycle_mean(two_tokens) == 1.5
    acyclic = EventGraph(("a", "b"), (Arc("a", "b", 1.0, 0),))
    assert max_cycle_mean(acyclic) == -np.inf
    deadlock = EventGraph(("a", "b"), (Arc("a", "b", 1.0, 0), Arc("b", "a", 1.0, 0)))
    with pytest.raises(ValueError, match="deadlock"):
        max_cycle_mean(deadlock)
    with pytest.raises(ValueError, match="deadlock"):
        firing_times(deadlock, 3)
    with pytest.raises(ValueError, match="unknown"):
        EventGraph(("a",), (Arc("a", "b", 1.0, 1),))


def random_schedules(count, seed):
    rng = np.random.default_rng(seed)
    for _ in range(count):
        yield dict(
            forward_s=float(rng.uniform(0.1, 2.0)),
            backward_s=float(rng.uniform(0.0, 6.0)),
            n_forward=int(rng.integers(1, 5)),
            n_backward=int(rng.integers(1, 6)),
            handoff_s=float(rng.choice([0.0, rng.uniform(0.0, 2.0)])),
            max_in_flight=[None, int(rng.integers(1, 10))][int(rng.integers(0, 2))],
        )


def test_async_graph_cycle_mean_is_cycle_time():
    for case in random_schedules(300, seed=2):
        assert max_cycle_mean(async_schedule_graph(**case)) == pytest.approx(
            cycle_time(**case), rel=1e-9, abs=1e-12
        )


def test_async_graph_fires_like_the_schedule():
    for case in random_schedules(40, seed=3):
        times = firing_times(async_schedule_graph(**case), 60)
        schedule = async_schedule(
            60,
            case["forward_s"],
            case["backward_s"],
            case["n_backward"],
            case["n_forward"],
            case["handoff_s"],
            case["max_in_flight"],
        )
        assert times["forward_start"] == pytest.approx(schedule.forward_start_s, rel=1e-12)
        assert times["backward_start"] == pytest.approx(schedule.backward_start_s, rel=1e-12)
        assert times["backward_end"] == pytest.approx(schedule.backward_end_s, rel=1e-12)
