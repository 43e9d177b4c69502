"""Speed-up of decoupled asynchronous backpropagation over sequential backpropagation.

Paper: arXiv 2410.05985, section 3.3. With F the forward time of a batch, B = beta F its backward time and b
batches, the paper writes T1 = (1+beta) b F, T2 = (b+beta) F and lambda = (1+beta) b / (b+beta) -> 1+beta.
That is exact only under unstated assumptions: every worker has a device of its own, times are fixed, the
forward never blocks, there is no hand-off or update cost, and **k >= beta** (k backward workers). T1 runs on
ONE device while T2 uses 1+k, so 1+beta is linear scaling over 1+beta devices, not more.

Here, for n_f forward and k backward workers (one device each), fixed times, a hand-off delay d from forward
end to backward start, and FIFO dispatch to the earliest free backward worker:

- batch i's forward ends at r_i = (floor(i/n_f) + 1) F (forward worker j does batches j, j+n_f, ...);
- its backward starts at s_i = max(r_i + d, s_{i-k} + B) and the makespan is s_{b-1} + B;
- unrolled: T2 = B + d + max_{q=0..floor((b-1)/k)} [(floor((b-1-qk)/n_f) + 1) F + q B],
  which for n_f = 1 is T2 = b F + d + B + floor((b-1)/k) max(0, B - k F);
- steady state: one batch every c = max(F/n_f, B/k, (F+d+B)/Q) when at most Q batches are in flight
  (the forward of batch i starts only after the backward of batch i-Q ends); the last term is absent when
  Q is unbounded. c is the maximum cycle mean of the schedule's event graph (see theory.maxplus).
- lambda(b) = (1+beta) b F / T2 -> (1+beta) min(n_f, k/beta); lambda_inf / (n_f + k) <= 1 with equality
  iff k = beta n_f.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from theory import _checks


def sequential_time(batches: int, forward_s: float, backward_s: float) -> float:
    """Plain backprop on one worker: T1 = b (F + B)."""
    batches = _checks.count("batches", batches)
    forward_s = _checks.duration("forward_s", forward_s)
    backward_s = _checks.duration("backward_s", backward_s)
    return batches * (forward_s + backward_s)


def async_time(
    batches: int,
    forward_s: float,
    backward_s: float,
    n_backward: int = 1,
    n_forward: int = 1,
    handoff_s: float = 0.0,
) -> float:
    """Exact makespan T2 of the decoupled schedule (fixed times, unbounded in-flight batches)."""
    b = _checks.count("batches", batches)
    f = _checks.duration("forward_s", forward_s)
    g = _checks.duration("backward_s", backward_s)
    k = _checks.count("n_backward", n_backward)
    n_f = _checks.count("n_forward", n_forward)
    d = _checks.duration("handoff_s", handoff_s)
    # backward start of the last batch: the latest of (forward end of batch b-1-qk) + q backward times
    latest = max(((b - 1 - q * k) // n_f + 1) * f + q * g for q in range((b - 1) // k + 1))
    return g + d + latest


def cycle_time(
    forward_s: float,
    backward_s: float,
    n_forward: int = 1,
    n_backward: int = 1,
    handoff_s: float = 0.0,
    max_in_flight: int | None = None,
) -> float:
    """Steady-state time per batch: max(F/n_f, B/k, (F+d+B)/Q); the last term only when Q is given."""
    f = _checks.duration("forward_s", forward_s)
    g = _checks.duration("backward_s", backward_s)
    n_f = _checks.count("n_forward", n_forward)
    k = _checks.count("n_backward", n_backward)
    d = _checks.duration("handoff_s", handoff_s)
    q = _checks.optional_count("max_in_flight", max_in_flight)
    bounds = [f / n_f, g / k]
    if q is not None:
        bounds.append((f + d + g) / q)
    return max(bounds)


def speedup(
    batches: int,
    beta: float,
    n_backward: int = 1,
    n_forward: int = 1,
    handoff_s: float = 0.0,
) -> float:
    """lambda(b) = T1 / T2 with forward time 1 and backward time beta (handoff_s in forward units)."""
    beta = _checks.duration("beta", beta)
    t2 = async_time(batches, 1.0, beta, n_backward, n_forward, handoff_s)
    return sequential_time(batches, 1.0, beta) / t2


def speedup_limit(beta: float, n_backward: int = 1, n_forward: int = 1) -> float:
    """lambda as b -> infinity: (1+beta) min(n_f, k/beta) (= (1+beta) n_f when beta = 0)."""
    beta = _checks.duration("beta", beta)
    k = _checks.count("n_backward", n_backward)
    n_f = _checks.count("n_forward", n_forward)
    if beta == 0:
        return float(n_f)
    return (1 + beta) * min(n_f, k / beta)


def paper_speedup(batches: int, beta: float) -> float:
    """The paper's lambda = (1+beta) b / (b+beta); exact only when k >= beta (or b <= k), n_f = 1, d = 0."""
    b = _checks.count("batches", batches)
    beta = _checks.duration("beta", beta)
    return (1 + beta) * b / (b + beta)


@dataclass(frozen=True)
class Schedule:
    """Start times of every batch's forward and backward under the decoupled schedule."""

    forward_start_s: np.ndarray
    backward_start_s: np.ndarray
    forward_s: float
    backward_s: float

    @property
    def backward_end_s(self) -> np.ndarray:
        return self.backward_start_s + self.backward_s

    @property
    def makespan_s(self) -> float:
        return float(self.backward_end_s.max())


def async_schedule(
    batches: int,
    forward_s: float,
    backward_s: float,
    n_backward: int = 1,
    n_forward: int = 1,
    handoff_s: float = 0.0,
    max_in_flight: int | None = None,
) -> Schedule:
    """Earliest start times by recursion (fixed times, FIFO backward dispatch, optional bound Q).

    forward start a_i = max(a_{i-n_f} + F, e_{i-Q}); backward start s_i = max(a_i + F + d, e_{i-k});
    batch end e_i = s_i + B. Terms with a negative index are 0. Without Q, max(s) + B == async_time.
    Sequential backprop is the case n_f = k = Q = 1, d = 0 (a_i = e_{i-1}, s_i = a_i + F). This is the one
    fixed-time recursion of pdasgd: the simulator's fast path places whole schedules with it.
    """
    b = _checks.count("batches", batches)
    f = _checks.duration("forward_s", forward_s)
    g = _checks.duration("backward_s", backward_s)
    k = _checks.count("n_backward", n_backward)
    n_f = _checks.count("n_forward", n_forward)
    d = _checks.duration("handoff_s", handoff_s)
    q = _checks.optional_count("max_in_flight", max_in_flight)
    fwd, bwd, end = [0.0] * b, [0.0] * b, [0.0] * b  # lists: numpy scalar indexing is 10x slower here
    for i in range(b):
        start = fwd[i - n_f] + f if i >= n_f else 0.0
        if q is not None and i >= q and end[i - q] > start:
            start = end[i - q]
        fwd[i] = start
        ready = start + f + d
        if i >= k and end[i - k] > ready:
            ready = end[i - k]
        bwd[i] = ready
        end[i] = ready + g
    return Schedule(np.array(fwd), np.array(bwd), f, g)
