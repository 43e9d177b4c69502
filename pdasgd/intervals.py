"""Uncertainty: intervals for what a run measured, and the confidence of a profile's mean costs.

A run's steady-state throughput and staleness are averages over batches that are not independent: a slow
stretch of the machine slows a run of consecutive batches, and the in-flight window couples neighbours. So
the interval of a measured figure comes from a moving-block bootstrap over the batches of the run (Kunsch
1989): the series is cut into overlapping blocks of consecutive batches, long enough to hold that
correlation, and `DRAWS` resamples of blocks give the 95% percentile interval.

- `throughput_interval(trace)`: the series is the time between consecutive completions after the warm-up;
  a resample's throughput is its batch count over its summed time.
- `staleness_intervals(trace)`: per layer, and over all layers, the series of each steady batch's version
  staleness, in batch order.

The block length is max(MIN_BLOCK, n^(1/3)) for n batches (the rate that minimises the bootstrap's error
for a smooth statistic; the floor covers the window's coupling), or BLOCK_PER_TAU autocorrelation times of
the series where that is longer, up to a third of the series: the machine's speed is correlated over tens
of seconds on the 2-core VMs here, hundreds of batches, and with blocks of 8 batches a run's interval held
another run of the same scenario in only 31-67% of cases. The seed is fixed, so a figure's interval
is reproducible. `batches_for(width, target, n)` says how many batches would narrow an interval of
relative half-width `width` measured on n batches to `target` (half-widths shrink as 1/sqrt(n)).

`mean_interval(samples)` is the 95% interval of a mean from the t distribution (of independent values: the
runs of `compare --runs`). `correlated_mean_interval(series)` is the same at the series' effective sample
size n / tau, with tau the integrated autocorrelation time (`autocorrelation_time`, Sokal's automatic
window): the profiler's stopping rule reads it (executor.profile). A fixed kernel timed for 4 minutes on
the 2-core VM had tau of 5-16 s (benchmarks/bench_machine_drift.py); the interval over the count alone
claimed ±2% for profiles whose repeats differed by 10-20%. A series shorter than its correlation
underestimates tau, so short profiles still read somewhat too precise.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from pdasgd.metrics import completion_times, staleness_table
from pdasgd.trace import Trace

DRAWS = 2000
MIN_BLOCK = 8
SOKAL_WINDOW = 5
BLOCK_PER_TAU = 3  # an AR(1)'s (phi 0.9) bootstrap variance with blocks of 3 tau: about 83% of the true one
LEVEL = 0.95
SEED = 20261202


@dataclass(frozen=True)
class Interval:
    """A point estimate and its 95% interval."""

    value: float
    low: float
    high: float

    def contains(self, x: float) -> bool:
        return self.low <= x <= self.high

    def overlaps(self, other: Interval) -> bool:
        return self.low <= other.high and other.low <= self.high

    @property
    def relative_half_width(self) -> float:
        """(high - low) / 2 over the value (inf when the value is 0)."""
        return (self.high - self.low) / 2 / abs(self.value) if self.value else math.inf

    def to_dict(self) -> dict[str, float]:
        return {"value": self.value, "low": self.low, "high": self.high}


def block_length(n: int) -> int:
    return max(MIN_BLOCK, math.ceil(n ** (1 / 3)))


def autocorrelation_time(series: Sequence[float] | np.ndarray) -> float:
    """The integrated autocorrelation time of `series`, in samples: tau = 1 + 2 (rho_1 + ... + rho_M), with
    M Sokal's automatic window, the first lag with M >= SOKAL_WINDOW tau(M) (Sokal 1997); at least 1. The
    mean of n values with this tau varies as that of n / tau independent ones."""
    values = np.asarray(series, dtype=float)
    n = len(values)
    centred = values - values.mean() if n else values
    variance = float(centred @ centred) / n if n else 0.0
    if n < 4 or variance <= 0.0:
        return 1.0
    size = 1 << (2 * n - 1).bit_length()
    spectrum = np.fft.rfft(centred, size)
    rho = np.fft.irfft(spectrum * np.conj(spectrum), size)[:n] / (n * variance)
    taus = 2.0 * np.cumsum(rho) - 1.0
    window = np.arange(n) >= SOKAL_WINDOW * taus
    lag = int(np.argmax(window)) if window.any() else n - 1
    return max(1.0, float(taus[lag]))


def auto_block(values: np.ndarray) -> int:
    """The bootstrap's block for `values`: block_length(n), or BLOCK_PER_TAU autocorrelation times where
    that is longer (a block must hold the series' correlation), but no more than a third of the series."""
    n = len(values)
    correlated = min(math.ceil(BLOCK_PER_TAU * autocorrelation_time(values)), n // 3)
    return max(block_length(n), correlated)


def block_bootstrap(
    series: Sequence[float] | np.ndarray,
    statistic: Callable[[np.ndarray], float],
    block: int | None = None,
    draws: int = DRAWS,
    seed: int = SEED,
) -> tuple[float, float]:
    """The 95% percentile interval of `statistic` over moving-block resamples of `series`.

    Each resample joins ceil(n / block) blocks of `block` consecutive values, drawn with replacement from
    the n - block + 1 blocks the series has, and is cut to n values."""
    values = np.asarray(series, dtype=float)
    n = len(values)
    if n < 2:
        point = statistic(values) if n else math.nan
        return point, point
    block = min(block or auto_block(values), n)
    starts = np.random.default_rng(seed).integers(0, n - block + 1, size=(draws, math.ceil(n / block)))
    index = (starts[:, :, None] + np.arange(block)).reshape(draws, -1)[:, :n]
    estimates = np.array([statistic(values[row]) for row in index])
    alpha = (1 - LEVEL) / 2
    low, high = np.quantile(estimates, [alpha, 1 - alpha])
    return float(low), float(high)


def throughput_interval(trace: Trace) -> Interval:
    """Steady-state batches per second with its block-bootstrap interval (module docstring)."""
    finishes = np.sort(np.fromiter(completion_times(trace).values(), dtype=float))
    warmup = min(trace.warmup, len(finishes) - 1)
    first = finishes[warmup - 1] if warmup > 0 else min(span.start_s for span in trace.spans)
    gaps = np.diff(np.concatenate([[first], finishes[warmup:]]))
    value = len(gaps) / gaps.sum() if gaps.sum() > 0 else math.inf
    low, high = block_bootstrap(gaps, lambda g: len(g) / g.sum() if g.sum() > 0 else math.inf)
    return Interval(value, low, high)


def staleness_intervals(trace: Trace) -> dict[str, object]:
    """Mean version staleness over layers and per layer, each with its interval (batches in order)."""
    per_batch = _staleness_by_batch(trace)
    layers = [
        Interval(float(np.mean(column)), *block_bootstrap(column, np.mean))
        if len(column)
        else Interval(0, 0, 0)
        for column in per_batch
    ]
    everything = (
        np.array([np.mean(row) for row in zip(*per_batch, strict=True)]) if per_batch else np.zeros(0)
    )
    mean = (
        Interval(float(everything.mean()), *block_bootstrap(everything, np.mean))
        if len(everything)
        else Interval(0.0, 0.0, 0.0)
    )
    return {"mean": mean, "per_layer": layers}


def _staleness_by_batch(trace: Trace) -> list[np.ndarray]:
    """Per layer, the staleness of each steady batch that has it in every layer, in batch order."""
    table = staleness_table(trace)
    counts = [len(samples) for samples in table.versions]
    if not counts or min(counts) == 0:
        return [np.zeros(0) for _ in table.versions]
    size = min(counts)  # batches are taken in batch order; a partial trace may miss a last few
    return [np.asarray(samples[:size], dtype=float) for samples in table.versions]


def batches_for(relative_half_width: float, target: float, batches: int) -> int:
    """Batches that would bring a relative half-width measured on `batches` batches down to `target`."""
    if relative_half_width <= target:
        return batches
    return math.ceil(batches * (relative_half_width / target) ** 2)


def mean_interval(samples: Sequence[float]) -> Interval:
    """The mean of `samples` and its 95% interval from the t distribution (n >= 2)."""
    values = np.asarray(samples, dtype=float)
    return _t_interval(values, len(values))


def correlated_mean_interval(series: Sequence[float]) -> Interval:
    """The mean of a series in time order and its 95% interval: the t interval of `mean_interval` with the
    effective sample size n / tau (`autocorrelation_time`) in place of n, and at least 2."""
    values = np.asarray(series, dtype=float)
    return _t_interval(values, max(2.0, len(values) / autocorrelation_time(values)))


def _t_interval(values: np.ndarray, effective: float) -> Interval:
    """The mean of `values` and its 95% t interval as if they were `effective` independent samples."""
    from scipy import stats

    mean = float(values.mean()) if len(values) else math.nan
    if len(values) < 2:
        return Interval(mean, -math.inf, math.inf)
    half = float(stats.t.ppf((1 + LEVEL) / 2, effective - 1) * values.std(ddof=1) / math.sqrt(effective))
    return Interval(mean, mean - half, mean + half)
