"""Gradient bias of stale (delayed, layer-wise) updates and its bound.

Paper: the later version of arXiv 2410.05985 (PD-ASGD), bias bound. A stale update applies
g_t = grad L(theta read) instead of grad L(theta_t); its bias is b_t = grad L(read) - grad L(theta_t).
With alpha the Lipschitz constant of grad L, eta the learning rate, tau_max the largest version staleness and
G a bound on the fresh gradient norms ||grad L(theta_s)||:

    ||b_t|| <= alpha ||theta_t - read_t|| <= alpha eta sum_{s = t-tau_max}^{t-1} ||g_s||     (pathwise)
    and, since ||g_s|| <= G + ||b_s||,     ||b_t|| <= G x / (1 - x),   x = alpha eta tau_max < 1.

The pathwise bound also holds per coordinate block (layer-wise updates, a different delay per layer).
`simulate_delayed_quadratic` runs gradient descent with such delays on L = theta' H theta / 2
(alpha = largest |eigenvalue| of H) and records, per update, what the bound is about.
Example (1-D, docs/theory.md): h = 2, eta = 0.05, tau = 2, theta_0 = 1 -> theta_1..3 = .9, .8, .7,
max ||b|| = 0.4, G = 2, x = 0.2, bound 0.5.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from theory import _checks


def bias_bound(G: float, alpha: float, eta: float, tau_max: int) -> float:
    """G x / (1 - x) with x = alpha eta tau_max; ValueError when x >= 1 (no bound)."""
    G = _checks.duration("G", G)
    alpha = _checks.duration("alpha", alpha)
    eta = _checks.duration("eta", eta)
    tau_max = _checks.count("tau_max", tau_max, minimum=0)
    x = alpha * eta * tau_max
    if x >= 1:
        raise ValueError(f"alpha * eta * tau_max = {x:g} >= 1: the bias bound does not hold")
    return G * x / (1 - x)


@dataclass(frozen=True)
class DelayedRun:
    """Record of a delayed gradient-descent run; row t describes the update theta_t -> theta_{t+1}."""

    theta: np.ndarray  # (steps + 1, n): theta_0 .. theta_steps
    read: np.ndarray  # (steps, n): parameters the gradient was computed at
    staleness: np.ndarray  # (steps, n): versions between the read and theta_t, per coordinate
    grad_read: np.ndarray  # (steps, n): grad L(read), noise-free
    grad: np.ndarray  # (steps, n): the gradient applied, grad L(read) + noise
    bias: np.ndarray  # (steps, n): grad L(read) - grad L(theta_t)
    eta: float

    @property
    def current(self) -> np.ndarray:
        """theta_t, the parameters each update is applied to."""
        return self.theta[:-1]

    @property
    def bias_norm(self) -> np.ndarray:
        return np.linalg.norm(self.bias, axis=1)


def _hessian(hessian: float | Sequence[float] | np.ndarray) -> np.ndarray:
    h = np.asarray(hessian, dtype=float)
    if h.ndim == 0:
        h = h.reshape(1, 1)
    elif h.ndim == 1:
        h = np.diag(h)
    if h.ndim != 2 or h.shape[0] != h.shape[1] or not np.all(np.isfinite(h)):
        raise ValueError("hessian must be a number, a diagonal vector or a finite square matrix")
    if not np.allclose(h, h.T):
        raise ValueError("hessian must be symmetric")
    return h


def lipschitz_constant(hessian: float | Sequence[float] | np.ndarray) -> float:
    """alpha for L = theta' H theta / 2: the largest |eigenvalue| of H."""
    return float(np.max(np.abs(np.linalg.eigvalsh(_hessian(hessian)))))


def simulate_delayed_quadratic(
    hessian: float | Sequence[float] | np.ndarray,
    eta: float,
    tau: int | Sequence[int],
    steps: int,
    theta0: float | Sequence[float],
    noise_std: float = 0.0,
    seed: int = 0,
) -> DelayedRun:
    """theta_{t+1} = theta_t - eta (H read_t + noise), read_t[j] = theta_{t - tau_j}[j].

    tau is one delay or one per coordinate (layer-wise delays); parameters before the start are theta_0.
    """
    h = _hessian(hessian)
    n = h.shape[0]
    eta = _checks.duration("eta", eta)
    steps = _checks.count("steps", steps)
    noise_std = _checks.duration("noise_std", noise_std)
    delays = np.broadcast_to(np.asarray(tau), (n,))
    delays = np.array([_checks.count("tau", int(t), minimum=0) for t in delays])
    theta = np.empty((steps + 1, n))
    theta[0] = np.broadcast_to(np.asarray(theta0, dtype=float), (n,))
    rng = np.random.default_rng(seed)
    noise = noise_std * rng.standard_normal((steps, n))
    coords = np.arange(n)
    read = np.empty((steps, n))
    for t in range(steps):
        read[t] = theta[np.maximum(t - delays, 0), coords]
        theta[t + 1] = theta[t] - eta * (h @ read[t] + noise[t])
    staleness = np.minimum(np.arange(steps)[:, None], delays[None, :])
    grad_read = read @ h.T
    bias = grad_read - theta[:-1] @ h.T
    return DelayedRun(theta, read, staleness, grad_read, grad_read + noise, bias, eta)


def pathwise_bound(run: DelayedRun, alpha: float) -> np.ndarray:
    """alpha eta sum ||g_s|| over each update's stale window s = t - max staleness .. t-1."""
    norms = np.linalg.norm(run.grad, axis=1)
    before = np.concatenate([[0.0], np.cumsum(norms)])  # before[t] = sum_{s<t} ||g_s||
    t = np.arange(len(norms))
    start = t - run.staleness.max(axis=1)
    return alpha * run.eta * (before[t] - before[start])
