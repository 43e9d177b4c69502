"""The simulator against the closed forms of theory/ (docs/theory.md): fixed times, a device per worker."""

from __future__ import annotations

import itertools
import random

import pytest

from pdasgd.metrics import makespan_s, staleness_table, steady_time_per_batch_s, summarize
from pdasgd.scenario import Scenario, parse_scenario
from simulator import simulate, simulate_summary
from theory.speedup import async_time, cycle_time, sequential_time
from theory.staleness import bounded_bu_staleness, staleness_recursion, version_staleness

LAYERWISE = {"async-lu": True, "async-bu": False}  # the theory's name for LU and BU


def uniform(method: str, layers: int, beta: float, batches: int, **options) -> Scenario:
    """A scenario with F = forward_s (default 1) and B = beta F, split evenly over `layers` layers."""
    workers = {key: options.pop(key) for key in ("forward", "backward", "max_in_flight") if key in options}
    delays = {key: options.pop(key) for key in ("handoff_s", "visibility_s") if key in options}
    forward_s = options.pop("forward_s", 1.0)
    warmup = options.pop("warmup", 0)
    assert not options, options
    workers.setdefault("max_in_flight", batches + 1)  # unbounded unless asked
    return parse_scenario(
        {
            "method": method,
            "model": {"layers": layers, "forward_s": forward_s, "beta": beta},
            "workers": workers,
            "delays": delays,
            "run": {"batches": batches, "warmup": warmup},
        }
    )


GRID = list(
    itertools.product(
        (0.5, 1.0, 2.0, 2.35, 3.0),  # beta
        (1, 2, 3),  # k
        (1, 2),  # n_f
        (1, 7, 40),  # batches
        (0.0, 0.37),  # hand-off delay
    )
)


@pytest.mark.parametrize("engine", ["fast", "simpy"])
@pytest.mark.parametrize("method", ["async-lu", "async-bu"])
def test_makespan_equals_async_time(engine: str, method: str) -> None:
    for beta, k, n_f, batches, handoff_s in GRID:
        sc = uniform(method, 3, beta, batches, forward=n_f, backward=k, handoff_s=handoff_s)
        expected = async_time(batches, 1.0, beta, n_backward=k, n_forward=n_f, handoff_s=handoff_s)
        got = makespan_s(simulate(sc, engine=engine))
        assert got == pytest.approx(expected, abs=1e-9), (beta, k, n_f, batches, handoff_s)


@pytest.mark.parametrize("engine", ["fast", "simpy"])
def test_sequential_makespan_equals_sequential_time(engine: str) -> None:
    for beta, batches in itertools.product((0.5, 2.0, 2.35), (1, 9, 30)):
        sc = uniform("sequential", 4, beta, batches, forward_s=0.3)
        expected = sequential_time(batches, 0.3, 0.3 * beta)
        assert makespan_s(simulate(sc, engine=engine)) == pytest.approx(expected, abs=1e-9)


def test_fast_engine_is_chosen_for_fixed_times() -> None:
    assert simulate(uniform("async-lu", 2, 2.0, 5)).info["engine"] == "fast"


@pytest.mark.parametrize("q", [None, 1, 2, 3, 5, 8])
def test_long_run_time_per_batch_equals_cycle_time(q: int | None) -> None:
    for beta, k, n_f, handoff_s in itertools.product((0.5, 2.0, 2.35), (1, 2, 3), (1, 2), (0.0, 0.37)):
        bound = {"max_in_flight": q} if q else {}
        sc = uniform(
            "async-lu", 2, beta, 3000, forward=n_f, backward=k, handoff_s=handoff_s, warmup=1000, **bound
        )
        expected = cycle_time(1.0, beta, n_f, k, handoff_s, q)
        got = 1.0 / simulate_summary(sc).throughput_batches_per_s
        assert got == pytest.approx(expected, rel=1e-3), (beta, k, n_f, handoff_s, q)


def test_cycle_time_in_simpy_engine_too() -> None:
    sc = uniform("async-bu", 3, 2.35, 400, backward=2, max_in_flight=3, handoff_s=0.2, warmup=100)
    got = steady_time_per_batch_s(simulate(sc, engine="simpy"))
    assert got == pytest.approx(cycle_time(1.0, 2.35, 1, 2, 0.2, 3), rel=1e-3)


THEORY_EXAMPLES = [  # docs/theory.md: M=4, beta=2.3, k=3
    ("async-lu", 0.0, [3, 2, 1, 0]),
    ("async-bu", 0.0, [3, 3, 2, 2]),
    ("async-lu", 0.37, [3, 2, 2, 1]),
    ("async-bu", 0.37, [3, 3, 3, 2]),
]


@pytest.mark.parametrize("engine", ["fast", "simpy"])
@pytest.mark.parametrize(("method", "handoff_s", "expected"), THEORY_EXAMPLES)
def test_version_staleness_theory_examples(engine, method, handoff_s, expected) -> None:
    sc = uniform(method, 4, 2.3, 60, backward=3, handoff_s=handoff_s, warmup=10, max_in_flight=64)
    table = staleness_table(simulate(sc, engine=engine))
    assert [min(v) for v in table.versions] == expected
    assert [max(v) for v in table.versions] == expected
    theory = version_staleness([0.25] * 4, [2.3 / 4] * 4, 3, LAYERWISE[method], handoff_s)
    assert theory == expected


@pytest.mark.parametrize("engine", ["fast", "simpy"])
@pytest.mark.parametrize("method", ["async-lu", "async-bu"])
def test_exact_ties_count_updates_as_visible(engine: str, method: str) -> None:
    """M=4, beta=2, F=1: updates land exactly when later batches read (dyadic times, no rounding)."""
    sc = uniform(method, 4, 2.0, 40, backward=2, warmup=8, max_in_flight=64)
    summary = summarize(simulate(sc, engine=engine)).to_dict()
    expected = version_staleness([0.25] * 4, [0.5] * 4, 2, LAYERWISE[method])
    assert expected == ([2, 2, 1, 0] if method == "async-lu" else [2, 2, 2, 2])
    assert summary["staleness"]["per_layer_max"] == expected
    assert summary["staleness"]["per_layer_mean"] == [float(x) for x in expected]


def random_layers(rng: random.Random, count: int) -> list[dict]:
    return [
        {
            "name": f"l{i}",
            "forward_s": rng.uniform(0.05, 0.4),
            "backward_s": rng.uniform(0.05, 0.8),
            "update_s": rng.uniform(0.0, 0.1),
        }
        for i in range(count)
    ]


@pytest.mark.parametrize("method", ["async-lu", "async-bu"])
def test_version_staleness_random_layers(method: str) -> None:
    """Forward-bound regime (B <= k F): every steady batch has the theory's per-layer staleness."""
    rng = random.Random(3)
    for trial in range(12):
        layers = random_layers(rng, rng.randint(1, 7))
        forward = sum(x["forward_s"] for x in layers)
        backward = sum(x["backward_s"] + x["update_s"] for x in layers)
        k = max(1, int(backward / forward) + rng.randint(0, 1) + (backward % forward > 0))
        handoff_s = rng.choice([0.0, rng.uniform(0, 0.5)])
        sc = parse_scenario(
            {
                "method": method,
                "model": {"layer": layers},
                "workers": {"forward": 1, "backward": k, "max_in_flight": 200},
                "delays": {"handoff_s": handoff_s},
                "run": {"batches": 80, "warmup": 30},
            }
        )
        expected = version_staleness(
            [x["forward_s"] for x in layers],
            [x["backward_s"] for x in layers],
            k,
            LAYERWISE[method],
            handoff_s,
            [x["update_s"] for x in layers],
        )
        versions = staleness_table(simulate(sc, engine="simpy" if trial % 3 == 0 else "fast")).versions
        assert [(min(v), max(v)) for v in versions] == [(x, x) for x in expected], trial


@pytest.mark.parametrize("method", ["async-lu", "async-bu"])
def test_per_batch_staleness_equals_theory_recursion_in_every_regime(method: str) -> None:
    rng = random.Random(11)
    for trial in range(10):
        layers = random_layers(rng, rng.randint(1, 5))
        k, n_f, q = rng.randint(1, 3), rng.randint(1, 2), rng.randint(1, 9)
        handoff_s = rng.uniform(0, 0.3)
        sc = parse_scenario(
            {
                "method": method,
                "model": {"layer": layers},
                "workers": {"forward": n_f, "backward": k, "max_in_flight": q},
                "delays": {"handoff_s": handoff_s},
                "run": {"batches": 50, "warmup": 0},
            }
        )
        expected = staleness_recursion(
            [x["forward_s"] for x in layers],
            [x["backward_s"] for x in layers],
            k,
            LAYERWISE[method],
            50,
            n_forward=n_f,
            handoff_s=handoff_s,
            update_s_per_layer=[x["update_s"] for x in layers],
            max_in_flight=q,
        )
        versions = staleness_table(simulate(sc, engine="simpy" if trial % 2 else "fast")).versions
        assert [list(column) for column in expected.T] == versions, trial


@pytest.mark.parametrize("engine", ["fast", "simpy"])
def test_bu_staleness_is_max_in_flight_minus_one_when_the_bound_binds(engine: str) -> None:
    cases = [(1, 2.0, 3), (2, 3.0, 3), (3, 2.3, 2), (2, 1.5, 2), (1, 1.2, 1)]  # (k, beta, Q)
    for k, beta, q in cases:
        assert cycle_time(1.0, beta, 1, k, 0.0, q) > 1.0  # the forward is held back by the window
        sc = uniform("async-bu", 5, beta, 60, backward=k, max_in_flight=q, warmup=20)
        table = staleness_table(simulate(sc, engine=engine))
        expected = bounded_bu_staleness(q)
        assert all(min(v) == max(v) == expected for v in table.versions), (k, beta, q)
