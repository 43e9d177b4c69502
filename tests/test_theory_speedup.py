"""Speed-up closed forms (docs/theory.md, section 3.3) against exact examples and a worker simulation."""

import math
import subprocess
import sys

import numpy as np
import pytest

from theory.speedup import (
    async_schedule,
    async_time,
    cycle_time,
    paper_speedup,
    sequential_time,
    speedup,
    speedup_limit,
)


def simulate_workers(batches, forward_s, backward_s, n_forward, n_backward, handoff_s, q=None):
    """Independent event simulation: explicit worker free times, FIFO dispatch in batch order."""
    forward_free = [0.0] * n_forward
    backward_free = [0.0] * n_backward
    ends = []
    for i in range(batches):
        worker = i % n_forward
        start = max(forward_free[worker], ends[i - q] if q is not None and i >= q else 0.0)
        forward_free[worker] = start + forward_s
        ready = forward_free[worker] + handoff_s
        free = min(range(n_backward), key=lambda w: backward_free[w])
        begin = max(ready, backward_free[free])
        backward_free[free] = begin + backward_s
        ends.append(begin + backward_s)
    return max(ends), ends


def backward_start_recursion(batches, forward_s, backward_s, n_forward, n_backward, handoff_s):
    """the recursion of docs/theory.md s_i = max(forward end_i + d, s_{i-k} + B)."""
    starts = []
    for i in range(batches):
        ready = (i // n_forward + 1) * forward_s + handoff_s
        starts.append(max(ready, starts[i - n_backward] + backward_s if i >= n_backward else 0.0))
    return max(starts) + backward_s


def random_cases(count, seed):
    rng = np.random.default_rng(seed)
    for _ in range(count):
        yield (
            int(rng.integers(1, 40)),
            float(rng.uniform(0.1, 2.0)),
            float(rng.uniform(0.0, 5.0)),
            int(rng.integers(1, 5)),
            int(rng.integers(1, 6)),
            float(rng.choice([0.0, rng.uniform(0.0, 1.0)])),
        )


def test_theory_md_examples():
    assert sequential_time(10, 1.0, 2.0) == 30.0
    assert async_time(10, 1.0, 2.0, n_backward=2) == 12.0
    assert speedup(10, 2.0, n_backward=2) == 2.5
    assert async_time(10, 1.0, 2.0, n_backward=1) == 21.0
    assert speedup(10, 2.0, n_backward=1) == pytest.approx(30 / 21, rel=1e-12)
    assert speedup(10, 2.0, n_backward=1) == pytest.approx(1.428571, abs=1e-6)
    assert async_time(10, 1.0, 2.0, n_backward=2, handoff_s=0.37) == pytest.approx(12.37, rel=1e-12)
    assert paper_speedup(10, 2.0) == 2.5  # what the paper says for k = 1 as well


def test_closed_form_matches_worker_simulation_and_recursion():
    for b, f, g, n_f, k, d in random_cases(400, seed=0):
        expected, _ = simulate_workers(b, f, g, n_f, k, d)
        assert async_time(b, f, g, k, n_f, d) == pytest.approx(expected, rel=1e-12)
        assert backward_start_recursion(b, f, g, n_f, k, d) == pytest.approx(expected, rel=1e-12)
        assert async_schedule(b, f, g, k, n_f, d).makespan_s == pytest.approx(expected, rel=1e-12)


def test_single_forward_worker_form():
    for b, f, g, _, k, d in random_cases(200, seed=1):
        expected = b * f + d + g + (b - 1) // k * max(0.0, g - k * f)
        assert async_time(b, f, g, k, 1, d) == pytest.approx(expected, rel=1e-12)


def test_schedule_with_in_flight_bound_matches_worker_simulation():
    rng = np.random.default_rng(2)
    for b, f, g, n_f, k, d in random_cases(200, seed=3):
        q = int(rng.integers(1, 8))
        makespan, ends = simulate_workers(b, f, g, n_f, k, d, q)
        schedule = async_schedule(b, f, g, k, n_f, d, max_in_flight=q)
        assert schedule.backward_end_s == pytest.approx(np.array(ends), rel=1e-12)
        assert schedule.makespan_s == pytest.approx(makespan, rel=1e-12)


def test_paper_formula_exact_iff_enough_backward_workers():
    for beta in (0.5, 1.0, 2.0, 2.35, 3.0):
        for b in (1, 2, 5, 10, 100):
            for k in range(1, 5):
                exact = speedup(b, beta, n_backward=k) == pytest.approx(paper_speedup(b, beta))
                assert exact == (k >= beta or b <= k)


def test_speedup_tends_to_limit():
    for beta, k, n_f in [(2.0, 1, 1), (2.0, 2, 1), (0.5, 1, 2), (3.0, 2, 2), (1.0, 4, 3)]:
        limit = speedup_limit(beta, n_backward=k, n_forward=n_f)
        assert speedup(20_000, beta, n_backward=k, n_forward=n_f) == pytest.approx(limit, rel=1e-3)
        assert cycle_time(1.0, beta, n_f, k) == pytest.approx((1 + beta) / limit, rel=1e-12)
    assert speedup_limit(0.0, n_forward=3) == 3.0


def test_limit_is_at_most_linear_scaling():
    for n_f in range(1, 5):
        for k in range(1, 7):
            for beta in (0.25, 0.5, 1.0, 1.5, 2.0, 3.0, k / n_f):
                efficiency = speedup_limit(beta, k, n_f) / (n_f + k)
                assert efficiency <= 1 + 1e-12
                assert math.isclose(efficiency, 1.0) == math.isclose(k, beta * n_f)


def test_cycle_time_is_the_steady_state_rate():
    rng = np.random.default_rng(4)
    for _, f, g, n_f, k, d in random_cases(60, seed=5):
        q = [None, int(rng.integers(1, 8))][int(rng.integers(0, 2))]
        ends = async_schedule(2000, f, g, k, n_f, d, max_in_flight=q).backward_end_s
        rate = (ends[-1] - ends[999]) / 1000
        assert rate == pytest.approx(cycle_time(f, g, n_f, k, d, q), rel=1e-2)


def test_cycle_time_examples():
    assert cycle_time(1.0, 2.0, n_backward=2) == 1.0
    assert cycle_time(1.0, 2.0, n_backward=1) == 2.0
    assert cycle_time(1.0, 2.0, n_forward=2, n_backward=8) == 0.5
    assert cycle_time(1.0, 2.0, n_backward=8, handoff_s=1.0, max_in_flight=2) == 2.0


@pytest.mark.parametrize(
    "call",
    [
        lambda: async_time(0, 1.0, 2.0),
        lambda: async_time(10, 1.0, 2.0, n_backward=0),
        lambda: async_time(10, 1.0, 2.0, n_forward=0),
        lambda: async_time(10, -1.0, 2.0),
        lambda: async_time(10, 1.0, float("nan")),
        lambda: async_time(10, 1.0, 2.0, handoff_s=-0.1),
        lambda: async_time(2.5, 1.0, 2.0),
        lambda: sequential_time(True, 1.0, 2.0),
        lambda: cycle_time(1.0, 2.0, max_in_flight=0),
        lambda: speedup(10, float("inf")),
        lambda: paper_speedup(0, 2.0),
        lambda: speedup_limit(-1.0),
    ],
)
def test_bad_arguments_raise(call):
    with pytest.raises(ValueError):
        call()


def test_theory_imports_nothing_of_the_project():
    code = "import sys, theory; print(sorted({m.split('.')[0] for m in sys.modules}))"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    for name in ("pdasgd", "simulator", "executor", "torch", "simpy"):
        assert f"'{name}'" not in loaded.stdout


def test_submodules_stay_reachable_as_attributes():
    import types

    import theory

    assert isinstance(theory.speedup, types.ModuleType)
    assert isinstance(theory.staleness, types.ModuleType)
    assert theory.speedup.speedup(10, 2.0, n_backward=2) == 2.5
