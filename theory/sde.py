"""Stationary variance of SGD near a minimum: SDE view, noise-perturbed SGD, and truly delayed SGD.

Paper: arXiv 2410.05985, section 5 and appendix B. On L = h theta^2 / 2, SGD with learning rate eta and
gradient-noise std sigma_SGD is modelled by the Ornstein-Uhlenbeck SDE
    d theta = -eta h theta dt + s dW,   stationary N(0, s^2 / (2 eta h)),
and staleness as extra noise on the parameters the gradient is taken at (std sigma_STALE).

Corrections (docs/theory.md): the text calls the SGD noise sigma_STALE; xi ~ N(0, sigma_STALE) is described
as a variance; eq. 5 lacks dt; in eq. 6 the staleness diffusion needs sum_l H_kl^2, not sum_l H_kl; eqs. 7/8
miss the Ito factor 1/2 of the Fokker-Planck equation, so their variance is twice the SDE's; the product form
needs zero probability flux per coordinate; and independent noise misses the lag: a true delay tau raises the
variance at first order in eta h tau and makes SGD unstable past eta h >= 2 sin(pi / (2 (2 tau + 1))).

Parametrisation of docs/theory.md's example (eta = 0.1, h = 2, sigma_SGD = 1): eq. 2's stationary variance is
0.0125 and eq. 7 gives 0.025. These numbers follow from an eq. 2 diffusion s = eta sigma_SGD / sqrt(2), so
that s^2 / (2 eta h) = eta sigma^2 / (4 h) (eq2_stationary_variance), and eq. 7 reports twice that
(paper_stationary_variance). For comparison, the discrete SGD recursion has the exact variance
eta sigma^2 / (h (2 - eta h)) = 0.02778 (sgd_variance), whose small-eta limit is eta sigma^2 / (2 h).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
from scipy.linalg import solve_discrete_lyapunov

from theory import _checks


def ou_stationary_variance(h: float, eta: float, sigma: float) -> float:
    """sigma^2 / (2 eta h): stationary variance of d theta = -eta h theta dt + sigma dW."""
    h = _checks.duration("h", h, positive=True)
    eta = _checks.duration("eta", eta, positive=True)
    sigma = _checks.duration("sigma", sigma)
    return sigma**2 / (2 * eta * h)


def eq2_stationary_variance(h: float, eta: float, sigma_sgd: float) -> float:
    """eta sigma^2 / (4 h): eq. 2's OU variance with diffusion eta sigma_SGD / sqrt(2) (see module doc)."""
    return ou_stationary_variance(h, eta, eta * sigma_sgd / math.sqrt(2))


def paper_stationary_variance(h: float, eta: float, sigma_sgd: float) -> float:
    """eta sigma^2 / (2 h): the paper's eq. 7, twice eq. 2's true variance (missing Ito factor)."""
    return 2 * eq2_stationary_variance(h, eta, sigma_sgd)


def perturbed_sgd_variance(h: float, eta: float, sigma_sgd: float, sigma_stale: float) -> float:
    """Exact variance of theta_{t+1} = theta_t - eta (h (theta_t + xi_stale) + xi_sgd).

    = eta (sigma_SGD^2 + h^2 sigma_STALE^2) / (h (2 - eta h)); math.inf when eta h >= 2 (unstable).
    """
    h = _checks.duration("h", h, positive=True)
    eta = _checks.duration("eta", eta, positive=True)
    sigma_sgd = _checks.duration("sigma_sgd", sigma_sgd)
    sigma_stale = _checks.duration("sigma_stale", sigma_stale)
    if eta * h >= 2:
        return math.inf
    return eta * (sigma_sgd**2 + h**2 * sigma_stale**2) / (h * (2 - eta * h))


def sgd_variance(h: float, eta: float, sigma_sgd: float) -> float:
    """Exact variance of plain SGD theta_{t+1} = theta_t - eta (h theta_t + xi): eta s^2/(h(2-eta h))."""
    return perturbed_sgd_variance(h, eta, sigma_sgd, 0.0)


def _companion(eta: float, h: float, tau: int) -> np.ndarray:
    """State (theta_t, ..., theta_{t-tau}) -> (theta_{t+1}, ..., theta_{t+1-tau})."""
    a = np.eye(tau + 1, k=-1)
    a[0, 0] += 1.0
    a[0, tau] -= eta * h
    return a


def _delayed_args(eta: float, h: float, tau: int) -> tuple[float, float, int]:
    eta = _checks.duration("eta", eta, positive=True)
    h = _checks.duration("h", h, positive=True)
    tau = _checks.count("tau", tau, minimum=0)
    return eta, h, tau


def delayed_sgd_stable(eta: float, h: float, tau: int) -> bool:
    """Whether theta_{t+1} = theta_t - eta h theta_{t-tau} is stable (companion spectral radius < 1)."""
    eta, h, tau = _delayed_args(eta, h, tau)
    return bool(np.max(np.abs(np.linalg.eigvals(_companion(eta, h, tau)))) < 1)


def delayed_stability_limit(tau: int) -> float:
    """Largest stable eta h for delay tau: 2 sin(pi / (2 (2 tau + 1))) (2 at tau = 0)."""
    tau = _checks.count("tau", tau, minimum=0)
    return 2 * math.sin(math.pi / (2 * (2 * tau + 1)))


def delayed_sgd_variance(eta: float, h: float, sigma: float, tau: int) -> float:
    """Exact stationary variance of theta_{t+1} = theta_t - eta (h theta_{t-tau} + sigma xi_t).

    Solves the discrete Lyapunov equation P = A P A' + q q' for the companion state; math.inf if unstable.
    At tau = 0 this is eta sigma^2 / (h (2 - eta h)).
    """
    eta, h, tau = _delayed_args(eta, h, tau)
    sigma = _checks.duration("sigma", sigma)
    if not delayed_sgd_stable(eta, h, tau):
        return math.inf
    q = np.zeros((tau + 1, 1))
    q[0, 0] = eta * sigma
    return float(solve_discrete_lyapunov(_companion(eta, h, tau), q @ q.T)[0, 0])


def sample_delayed_sgd(
    eta: float,
    h: float,
    sigma: float,
    tau: int,
    steps: int,
    paths: int,
    seed: int = 0,
    sigma_stale: float = 0.0,
) -> np.ndarray:
    """Final theta of `paths` runs of theta_{t+1} = theta_t - eta (h (theta_{t-tau} + sigma_stale xi')
    + sigma xi), started at 0. With tau = 0 this is the perturbed SGD of perturbed_sgd_variance."""
    eta, h, tau = _delayed_args(eta, h, tau)
    sigma = _checks.duration("sigma", sigma)
    sigma_stale = _checks.duration("sigma_stale", sigma_stale)
    steps = _checks.count("steps", steps)
    paths = _checks.count("paths", paths)
    rng = np.random.default_rng(seed)
    n = tau + 1
    history = np.zeros((n, paths))  # ring buffer: theta_t lives in row t % n
    for t in range(steps):
        noise = sigma * rng.standard_normal(paths) + h * sigma_stale * rng.standard_normal(paths)
        # row (t + 1) % n holds theta_{t - tau}: read it, then overwrite it with theta_{t+1}
        history[(t + 1) % n] = history[t % n] - eta * (h * history[(t + 1) % n] + noise)
    return history[steps % n]


def euler_maruyama(
    drift: Callable[[np.ndarray], np.ndarray],
    diffusion: Callable[[np.ndarray], np.ndarray],
    x0: np.ndarray | float,
    dt: float,
    steps: int,
    seed: int = 0,
) -> np.ndarray:
    """Final state of dx = drift(x) dt + diffusion(x) dW, one path per element of x0 (vectorised)."""
    dt = _checks.duration("dt", dt, positive=True)
    steps = _checks.count("steps", steps)
    rng = np.random.default_rng(seed)
    x = np.array(x0, dtype=float)
    for _ in range(steps):
        x = x + drift(x) * dt + diffusion(x) * math.sqrt(dt) * rng.standard_normal(x.shape)
    return x
