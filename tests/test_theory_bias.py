"""Bias bound of stale updates (docs/theory.md, later version) on quadratics with layer-wise delays."""

import numpy as np
import pytest

from theory.bias import (
    bias_bound,
    lipschitz_constant,
    pathwise_bound,
    simulate_delayed_quadratic,
)


def test_theory_md_example():
    run = simulate_delayed_quadratic(2.0, eta=0.05, tau=2, steps=3, theta0=1.0)
    assert run.theta[1:, 0] == pytest.approx([0.9, 0.8, 0.7], rel=1e-12)
    assert run.read[:, 0] == pytest.approx([1.0, 1.0, 1.0])  # theta before the start is theta_0
    assert run.staleness[:, 0].tolist() == [0, 1, 2]
    assert run.bias_norm == pytest.approx([0.0, 0.2, 0.4], abs=1e-12)
    fresh = np.abs(2.0 * run.current[:, 0])
    assert fresh.max() == 2.0  # G
    assert bias_bound(G=2.0, alpha=2.0, eta=0.05, tau_max=2) == pytest.approx(0.5, rel=1e-12)
    assert run.bias_norm.max() <= bias_bound(fresh.max(), 2.0, 0.05, 2)


def test_bound_requires_x_below_one():
    assert bias_bound(3.0, 1.0, 0.1, 0) == 0.0
    with pytest.raises(ValueError, match=">= 1"):
        bias_bound(1.0, 2.0, 0.25, 2)
    with pytest.raises(ValueError):
        bias_bound(1.0, 2.0, 0.1, -1)


def test_no_delay_no_bias():
    run = simulate_delayed_quadratic([1.0, 3.0], eta=0.1, tau=0, steps=20, theta0=[1.0, -2.0])
    assert (run.bias == 0).all()
    assert (run.read == run.current).all()


def random_quadratic(rng, n):
    q, _ = np.linalg.qr(rng.standard_normal((n, n)))
    return q @ np.diag(rng.uniform(0.2, 3.0, n)) @ q.T


def test_bias_bounds_hold_with_layer_wise_delays():
    rng = np.random.default_rng(0)
    for trial in range(40):
        n = int(rng.integers(2, 9))
        hessian = random_quadratic(rng, n)
        blocks = np.sort(rng.integers(0, 3, n))  # coordinate blocks = layers, input layer first
        tau = (np.max(blocks) - blocks) + rng.integers(0, 3)  # later layers are updated sooner
        alpha = lipschitz_constant(hessian)
        x = rng.uniform(0.05, 0.9)
        eta = x / (alpha * max(1, tau.max()))
        noise = 0.0 if trial % 2 == 0 else 0.3
        run = simulate_delayed_quadratic(hessian, eta, tau, 200, rng.standard_normal(n), noise, trial)
        assert (run.staleness.max(axis=0) == tau).all()
        assert (run.bias_norm <= pathwise_bound(run, alpha) + 1e-12).all()
        if noise == 0.0 and tau.max() > 0:
            g = np.linalg.norm(run.current @ hessian, axis=1).max()  # fresh gradient norms
            bound = bias_bound(g, alpha, eta, int(tau.max()))
            assert run.bias_norm.max() <= bound + 1e-12


def test_record_is_consistent():
    rng = np.random.default_rng(1)
    hessian = random_quadratic(rng, 4)
    run = simulate_delayed_quadratic(hessian, 0.05, [3, 2, 1, 0], 50, np.ones(4), 0.1, seed=3)
    assert run.theta[1:] == pytest.approx(run.theta[:-1] - run.eta * run.grad)
    assert run.bias == pytest.approx(run.grad_read - run.current @ hessian)
    assert run.read[10] == pytest.approx(run.theta[[7, 8, 9, 10], [0, 1, 2, 3]])


def test_lipschitz_constant():
    assert lipschitz_constant(2.0) == 2.0
    assert lipschitz_constant([1.0, -4.0, 3.0]) == 4.0
    assert lipschitz_constant([[2.0, 1.0], [1.0, 2.0]]) == pytest.approx(3.0)


@pytest.mark.parametrize(
    "call",
    [
        lambda: simulate_delayed_quadratic([[1.0, 2.0], [0.0, 1.0]], 0.1, 1, 5, 1.0),
        lambda: simulate_delayed_quadratic(2.0, -0.1, 1, 5, 1.0),
        lambda: simulate_delayed_quadratic(2.0, 0.1, -1, 5, 1.0),
        lambda: simulate_delayed_quadratic(2.0, 0.1, 1, 0, 1.0),
        lambda: simulate_delayed_quadratic(float("nan"), 0.1, 1, 5, 1.0),
        lambda: bias_bound(float("nan"), 1.0, 0.1, 1),
    ],
)
def test_bad_arguments_raise(call):
    with pytest.raises(ValueError):
        call()
