"""SDE and delayed-SGD variances (docs/theory.md, section 5 and appendix B): closed forms and sampling."""

import math

import numpy as np
import pytest

from theory.sde import (
    delayed_sgd_stable,
    delayed_sgd_variance,
    delayed_stability_limit,
    eq2_stationary_variance,
    euler_maruyama,
    ou_stationary_variance,
    paper_stationary_variance,
    perturbed_sgd_variance,
    sample_delayed_sgd,
    sgd_variance,
)

ETA, H, SIGMA = 0.1, 2.0, 1.0


def test_theory_md_examples():
    assert eq2_stationary_variance(H, ETA, SIGMA) == pytest.approx(0.0125, rel=1e-12)
    assert paper_stationary_variance(H, ETA, SIGMA) == pytest.approx(0.025, rel=1e-12)
    assert perturbed_sgd_variance(H, ETA, SIGMA, 0.5) == pytest.approx(0.2 / 3.6, rel=1e-12)
    assert perturbed_sgd_variance(H, ETA, SIGMA, 0.5) == pytest.approx(0.0555556, abs=1e-7)
    assert sgd_variance(H, ETA, SIGMA) == pytest.approx(0.1 / 3.6, rel=1e-12)


def test_ou_formula():
    assert ou_stationary_variance(h=2.0, eta=0.1, sigma=1.0) == pytest.approx(2.5, rel=1e-12)
    assert ou_stationary_variance(h=0.5, eta=1.0, sigma=0.3) == pytest.approx(0.09, rel=1e-12)


def test_delayed_variance_without_delay_is_plain_sgd():
    for eta, h, sigma in [(0.1, 2.0, 1.0), (0.01, 5.0, 0.3), (0.9, 2.0, 2.0)]:
        expected = eta * sigma**2 / (h * (2 - eta * h))
        assert delayed_sgd_variance(eta, h, sigma, 0) == pytest.approx(expected, rel=1e-12)
    assert delayed_sgd_variance(ETA, H, SIGMA, 0) == pytest.approx(0.1 / 3.6, rel=1e-12)


def test_stability_limit():
    assert delayed_stability_limit(0) == pytest.approx(2.0, rel=1e-12)
    for tau in range(8):
        limit = delayed_stability_limit(tau)
        assert delayed_sgd_stable(limit * (1 - 1e-6), 1.0, tau)
        assert not delayed_sgd_stable(limit * (1 + 1e-6), 1.0, tau)
        assert delayed_sgd_variance(limit * (1 + 1e-6) / 2, 2.0, 1.0, tau) == math.inf
    assert perturbed_sgd_variance(2.0, 1.0, 1.0, 0.0) == math.inf


def test_delay_raises_variance_at_first_order():
    for tau in (1, 2, 4):
        assert delayed_sgd_variance(ETA, H, SIGMA, tau) > delayed_sgd_variance(ETA, H, SIGMA, tau - 1)
        eta_h = 1e-3
        ratio = delayed_sgd_variance(eta_h / H, H, SIGMA, tau) / delayed_sgd_variance(eta_h / H, H, SIGMA, 0)
        assert (ratio - 1) / (eta_h * tau) == pytest.approx(1.0, rel=1e-2)


def test_sampled_variances_match_closed_forms():
    perturbed = sample_delayed_sgd(ETA, H, SIGMA, 0, 300, 40_000, seed=1, sigma_stale=0.5)
    assert perturbed.var() == pytest.approx(perturbed_sgd_variance(H, ETA, SIGMA, 0.5), rel=0.05)
    for tau, seed in ((1, 2), (3, 3)):
        delayed = sample_delayed_sgd(ETA, H, SIGMA, tau, 600, 40_000, seed=seed)
        assert delayed.var() == pytest.approx(delayed_sgd_variance(ETA, H, SIGMA, tau), rel=0.05)


def test_euler_maruyama_rejects_the_papers_variance():
    diffusion = ETA * SIGMA / math.sqrt(2)  # eq. 2 as docs/theory.md's numbers read it
    final = euler_maruyama(
        lambda x: -ETA * H * x, lambda x: diffusion, np.zeros(40_000), dt=0.05, steps=1500, seed=4
    )
    assert final.var() == pytest.approx(eq2_stationary_variance(H, ETA, SIGMA), rel=0.05)
    assert abs(final.var() - paper_stationary_variance(H, ETA, SIGMA)) > 0.3 * final.var()


def test_euler_maruyama_ou():
    final = euler_maruyama(lambda x: -0.5 * x, lambda x: 0.4, np.ones(20_000), 0.02, 1000, seed=5)
    assert final.mean() == pytest.approx(0.0, abs=0.02)
    assert final.var() == pytest.approx(ou_stationary_variance(h=0.5, eta=1.0, sigma=0.4), rel=0.05)


@pytest.mark.parametrize(
    "call",
    [
        lambda: ou_stationary_variance(0.0, 0.1, 1.0),
        lambda: ou_stationary_variance(2.0, -0.1, 1.0),
        lambda: perturbed_sgd_variance(2.0, 0.1, float("nan"), 0.0),
        lambda: delayed_sgd_variance(0.1, 2.0, 1.0, -1),
        lambda: delayed_sgd_stable(0.1, 2.0, 1.5),
        lambda: euler_maruyama(lambda x: x, lambda x: 1.0, 0.0, 0.0, 10),
        lambda: sample_delayed_sgd(0.1, 2.0, 1.0, 1, 10, 0),
    ],
)
def test_bad_arguments_raise(call):
    with pytest.raises(ValueError):
        call()
