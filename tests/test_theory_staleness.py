"""Staleness closed forms (docs/theory.md; the paper's section 3.4) against examples and the recursion."""

import numpy as np
import pytest

from theory.speedup import async_schedule
from theory.staleness import (
    block_delay,
    bounded_bu_staleness,
    fresh_layer_fraction,
    mean_relative_delay,
    paper_relative_staleness,
    staleness_recursion,
    uniform_layers,
    uniform_staleness,
    version_staleness,
)

LAYERWISE = (True, False)  # LU, BU


def test_block_delay_example():
    tau = block_delay(uniform_layers(2.0, 5))
    assert tau == pytest.approx([0.0, 0.4, 0.8, 1.2, 1.6], rel=1e-12)
    assert sum(tau) == pytest.approx(4.0, rel=1e-12)


def test_paper_relative_staleness_slip():
    for layers in (1, 2, 5, 12):
        for beta in (0.5, 2.0, 3.7):
            paper = paper_relative_staleness(beta, layers, forward_s=1.5)
            right = block_delay(uniform_layers(beta * 1.5, layers))
            assert paper == pytest.approx([r + beta * 1.5 / layers for r in right], rel=1e-12)
            assert sum(paper) == pytest.approx(beta * 1.5 * (layers + 1) / 2, rel=1e-12)
            assert sum(right) == pytest.approx(beta * 1.5 * (layers - 1) / 2, abs=1e-12)
            mean = mean_relative_delay(uniform_layers(beta * 1.5, layers))
            assert mean == pytest.approx(beta * 1.5 * (layers - 1) / (2 * layers), abs=1e-12)


@pytest.mark.parametrize(
    ("handoff_s", "lu", "bu"),
    [(0.0, [3, 2, 1, 0], [3, 3, 2, 2]), (0.37, [3, 2, 2, 1], [3, 3, 3, 2])],
)
def test_version_staleness_examples(handoff_s, lu, bu):
    f, g = uniform_layers(1.0, 4), uniform_layers(2.3, 4)
    assert version_staleness(f, g, 3, True, handoff_s) == lu
    assert version_staleness(f, g, 3, False, handoff_s) == bu
    # the same numbers come out of the exact schedule recursion, for every batch in steady state
    for layerwise, expected in ((True, lu), (False, bu)):
        stale = staleness_recursion(f, g, 3, layerwise, 40, handoff_s=handoff_s)
        assert (stale[10:] == expected).all()


def test_uniform_closed_forms_agree():
    for layers in range(1, 13):
        for beta in (0.0, 0.3, 0.5, 1.0, 1.7, 2.0, 2.3, 3.0, 4.25):
            k = max(1, int(np.ceil(beta)))
            f, g = uniform_layers(1.0, layers), uniform_layers(beta, layers)
            for layerwise in LAYERWISE:
                assert version_staleness(f, g, k, layerwise) == uniform_staleness(layers, beta, layerwise)


def test_version_staleness_matches_recursion_on_random_layers():
    rng = np.random.default_rng(0)
    checked = 0
    for _ in range(150):
        layers = int(rng.integers(1, 7))
        f = list(rng.uniform(0.05, 1.0, layers))
        g = list(rng.uniform(0.0, 1.5, layers))
        u = list(rng.choice([0.0, 0.05], layers) * rng.uniform(0, 1, layers))
        k = int(rng.integers(1, 5))
        if sum(g) + sum(u) > k * sum(f):
            continue
        d = float(rng.choice([0.0, rng.uniform(0.0, 2.0)]))
        for layerwise in LAYERWISE:
            expected = version_staleness(f, g, k, layerwise, d, u)
            stale = staleness_recursion(f, g, k, layerwise, 60, handoff_s=d, update_s_per_layer=u)
            assert (stale[20:] == expected).all()
        checked += 1
    assert checked > 50


def test_tie_counts_as_visible():
    # Delta = 2F (input layer) and F (output layer): batch i-1's update lands exactly at batch i's read,
    # (and batch i-2's at the input layer's read): visible, so not stale
    assert version_staleness([0.5, 0.5], [0.5, 0.5], 1, True) == [1, 0]
    stale = staleness_recursion([0.5, 0.5], [0.5, 0.5], 1, True, 20)
    assert (stale[5:] == [1, 0]).all()
    # a little later and they count
    assert version_staleness([0.5, 0.5], [0.5, 0.6], 2, True) == [2, 1]


def test_backward_bound_is_rejected():
    with pytest.raises(ValueError, match="backward-bound"):
        version_staleness([0.5, 0.5], [1.0, 1.5], 2, False)


def test_layer_wise_updates_are_never_staler():
    rng = np.random.default_rng(1)
    for _ in range(100):
        layers = int(rng.integers(1, 8))
        f, g = list(rng.uniform(0.1, 1, layers)), list(rng.uniform(0.1, 1, layers))
        k = int(np.ceil(sum(g) / sum(f)))
        lu = version_staleness(f, g, k, True)
        bu = version_staleness(f, g, k, False)
        assert all(a <= b for a, b in zip(lu, bu, strict=True))
        assert lu[0] == bu[0]  # the input layer is updated last either way


def test_fresh_layers_are_not_the_second_half():
    for layers in range(1, 30):
        for beta in (0.5, 1.0, 2.0, 3.0):
            lu = uniform_staleness(layers, beta, True)
            assert fresh_layer_fraction(layers, beta) == lu.count(0) / layers
    for beta in (0.5, 1.0, 2.0, 3.0):
        assert fresh_layer_fraction(10_000, beta) == pytest.approx(1 / (1 + beta), abs=2e-4)
    assert fresh_layer_fraction(10_000, 2.0) < 0.34  # the paper's "second half" would be 0.5


def test_large_depth_means():
    layers = 5000
    for beta in (0.5, 1.3, 2.3, 3.0):
        for d in (0.0, 0.37):
            f, g = uniform_layers(1.0, layers), uniform_layers(beta, layers)
            k = int(np.ceil(beta))
            bu = np.mean(version_staleness(f, g, k, False, d))
            lu = np.mean(version_staleness(f, g, k, True, d))
            assert bu == pytest.approx(beta + d, abs=2e-3)
            if d == 0:
                assert beta / 2 - 0.5 <= lu < beta / 2 + 0.5


def _forward_waits(schedule, n_forward, forward_s, start):
    fwd = schedule.forward_start_s
    return all(fwd[i] > fwd[i - n_forward] + forward_s + 1e-9 for i in range(start, len(fwd)))


def test_bounded_in_flight_bu_staleness():
    assert bounded_bu_staleness(4) == 3
    rng = np.random.default_rng(2)
    checked = 0
    for _ in range(300):
        layers = int(rng.integers(1, 6))
        f, g = list(rng.uniform(0.05, 1, layers)), list(rng.uniform(0.05, 2, layers))
        k, n_f, q = int(rng.integers(1, 4)), int(rng.integers(1, 4)), int(rng.integers(1, 7))
        d = float(rng.choice([0.0, rng.uniform(0, 1)]))
        schedule = async_schedule(200, sum(f), sum(g), k, n_f, d, q)
        if not _forward_waits(schedule, n_f, sum(f), 100):
            continue
        checked += 1
        stale = staleness_recursion(f, g, k, False, 200, n_f, d, max_in_flight=q)[100:-1]
        if n_f == 1:
            assert (stale == bounded_bu_staleness(q)).all()
        else:
            assert ((stale >= q - n_f) & (stale <= q - 1)).all()
    assert checked > 100


def test_forward_waiting_for_a_free_backward_worker_gives_staleness_k():
    f, g = uniform_layers(1.0, 4), uniform_layers(3.0, 4)  # beta = 3 > k = 2
    stale = staleness_recursion(f, g, 2, False, 100, max_in_flight=3)
    assert (stale[20:] == 2).all()


def test_unbounded_queue_staleness_grows():
    f, g = uniform_layers(1.0, 4), uniform_layers(3.0, 4)
    for k in (1, 2):
        stale = staleness_recursion(f, g, k, False, 2001, handoff_s=0.2)
        growth = (stale[2000] - stale[1000]) / 1000
        assert growth == pytest.approx(1 - k * 1.0 / 3.0, abs=2e-3)


@pytest.mark.parametrize(
    "call",
    [
        lambda: block_delay([]),
        lambda: block_delay([0.1, -0.1]),
        lambda: version_staleness([1.0], [1.0], 1, "hogwild"),
        lambda: version_staleness([1.0], [1.0, 1.0], 2, True),
        lambda: version_staleness([1.0], [1.0], 0, True),
        lambda: version_staleness([1.0], [float("nan")], 1, True),
        lambda: version_staleness([1.0], [0.5], 1, True, update_s_per_layer=[0.1, 0.1]),
        lambda: staleness_recursion([1.0], [1.0], 1, True, 0),
        lambda: paper_relative_staleness(2.0, 0),
        lambda: fresh_layer_fraction(0, 2.0),
        lambda: bounded_bu_staleness(0),
    ],
)
def test_bad_arguments_raise(call):
    with pytest.raises(ValueError):
        call()
