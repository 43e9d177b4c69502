"""Intervals: the block bootstrap on synthetic series of known variance, the run's intervals, the profile's
stopping rule and the profile cache."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pdasgd.intervals import (
    Interval,
    auto_block,
    autocorrelation_time,
    batches_for,
    block_bootstrap,
    block_length,
    correlated_mean_interval,
    mean_interval,
    staleness_intervals,
    throughput_interval,
)
from pdasgd.trace import Span, Trace


def half_width(series, block=None) -> float:
    low, high = block_bootstrap(series, np.mean, block=block)
    return (high - low) / 2


def test_iid_series_give_the_normal_interval_of_the_mean() -> None:
    """Independent values: the 95% half-width of the mean of n is 1.96 sd / sqrt(n). One series' bootstrap
    width varies by about ±10% around it (blocks of 8 from 2000 values), so the mean ratio over 10 series
    is checked tightly and each series loosely."""
    ratios = []
    for seed in range(10):
        series = np.random.default_rng(seed).normal(10.0, 2.0, 2000)
        ratios.append(half_width(series) / (1.96 * series.std() / math.sqrt(2000)))
    assert np.mean(ratios) == pytest.approx(1.0, abs=0.05)
    assert all(0.75 < r < 1.25 for r in ratios)


def test_correlated_series_widen_the_interval_as_their_long_run_variance_says() -> None:
    """AR(1) with phi = 0.6 and innovations of sd 1: long-run variance 1 / (1 - phi)^2 = 6.25, so the
    half-width of the mean of 4000 is 1.96 x 2.5 / sqrt(4000) = 0.0775, 2x what independence would give."""
    rng = np.random.default_rng(2)
    phi, n = 0.6, 4000
    noise = rng.normal(0.0, 1.0, n)
    series = np.empty(n)
    series[0] = noise[0] / math.sqrt(1 - phi**2)
    for i in range(1, n):
        series[i] = phi * series[i - 1] + noise[i]
    expected = 1.96 * (1 / (1 - phi)) / math.sqrt(n)
    naive = 1.96 * series.std() / math.sqrt(n)
    assert half_width(series, block=40) == pytest.approx(expected, rel=0.2)
    assert half_width(series, block=40) > 1.6 * naive


def test_the_interval_covers_the_true_mean_about_95_times_in_100() -> None:
    rng = np.random.default_rng(3)
    covered = 0
    for _ in range(200):
        series = rng.exponential(1.0, 120)
        low, high = block_bootstrap(series, np.mean, draws=400, seed=int(rng.integers(1 << 30)))
        covered += low <= 1.0 <= high
    assert 0.88 <= covered / 200 <= 0.99


def test_bootstrap_edge_cases_and_block_length() -> None:
    assert block_bootstrap([], np.mean) == (math.nan, math.nan) or all(
        math.isnan(x) for x in block_bootstrap([], np.mean)
    )
    assert block_bootstrap([3.0], np.mean) == (3.0, 3.0)
    assert block_bootstrap([2.0] * 50, np.mean) == (2.0, 2.0)
    assert block_length(10) == 8 and block_length(1000) == 10 and block_length(10**6) == 100
    assert batches_for(0.10, 0.05, 100) == 400 and batches_for(0.01, 0.05, 100) == 100


def test_mean_interval_is_the_t_interval() -> None:
    interval = mean_interval([1.0, 2.0, 3.0, 4.0])
    assert interval.value == 2.5
    assert interval.high - interval.value == pytest.approx(3.182446305 * math.sqrt(5 / 3) / 2, rel=1e-9)
    assert Interval(10.0, 9.0, 11.0).relative_half_width == 0.1
    assert Interval(1.0, 0.5, 1.5).overlaps(Interval(1.4, 1.45, 2.0))
    assert not Interval(1.0, 0.5, 1.5).contains(1.6)


def ar1(phi: float, n: int, seed: int) -> np.ndarray:
    """An AR(1) series x_i = phi x_(i-1) + e_i with innovations of sd 1, started in its stationary law:
    autocorrelation time (1 + phi) / (1 - phi)."""
    from scipy.signal import lfilter

    rng = np.random.default_rng(seed)
    noise = rng.normal(0.0, 1.0, n)
    noise[0] /= math.sqrt(1 - phi**2)
    return lfilter([1.0], [1.0, -phi], noise)


def test_the_autocorrelation_time_of_known_series() -> None:
    assert autocorrelation_time(ar1(0.6, 20000, 1)) == pytest.approx(4.0, rel=0.1)  # 1.6 / 0.4
    assert autocorrelation_time(ar1(0.9, 50000, 2)) == pytest.approx(19.0, rel=0.15)  # 1.9 / 0.1
    assert autocorrelation_time(np.random.default_rng(3).normal(size=5000)) == pytest.approx(1.0, abs=0.1)
    # negatively correlated, constant, and too short: never below 1
    assert autocorrelation_time([1.0, 3.0] * 50) == 1.0
    assert autocorrelation_time([2.0] * 30) == 1.0 and autocorrelation_time([1.0, 2.0, 3.0]) == 1.0


def test_the_correlated_mean_interval_uses_the_effective_sample_size() -> None:
    alternating = [1.0, 3.0] * 50  # tau 1: exactly the t interval of independent values
    assert correlated_mean_interval(alternating) == mean_interval(alternating)
    series = ar1(0.8, 4000, 4)
    tau = autocorrelation_time(series)
    effective = len(series) / tau
    from scipy import stats

    half = stats.t.ppf(0.975, effective - 1) * np.std(series, ddof=1) / math.sqrt(effective)
    interval = correlated_mean_interval(series)
    assert interval.high - interval.value == pytest.approx(half, rel=1e-12)
    assert interval.high - interval.value > 2.5 * (mean_interval(series).high - interval.value)  # tau ~ 9


def test_the_correlated_interval_covers_the_mean_where_the_plain_one_does_not() -> None:
    """200 AR(1) series (phi 0.8, tau 9) of 1000 values around 0: the interval with the effective sample
    size holds 0 about 95 times in 100 (a little less: tau is estimated), the plain t interval about 55."""
    correlated = plain = 0
    for seed in range(200):
        series = ar1(0.8, 1000, 100 + seed)
        correlated += correlated_mean_interval(series).contains(0.0)
        plain += mean_interval(series).contains(0.0)
    assert 0.86 <= correlated / 200 <= 0.99
    assert plain / 200 < 0.7


def test_the_bootstrap_block_holds_the_correlation() -> None:
    assert auto_block(np.random.default_rng(5).normal(size=1000)) == block_length(1000)  # independent: 10
    series = ar1(0.9, 3000, 6)
    assert auto_block(series) == math.ceil(3 * autocorrelation_time(series)) > 40
    assert auto_block(np.repeat([0.0, 1.0], 45)) == 30  # a step: never more than a third of the series


def steady_trace(gaps: list[float], stale: list[int]) -> Trace:
    """One worker, one layer: batch i completes after gaps[0..i]; its update sees stale[i] newer versions."""
    spans, now, version = [], 0.0, 0
    for i, gap in enumerate(gaps):
        read = max(version - stale[i], 0)
        spans.append(Span("w", "d", "forward", i, 0, now, now + gap / 2, read))
        spans.append(Span("w", "d", "update", i, 0, now + gap / 2, now + gap, read + stale[i]))
        version = read + stale[i] + 1
        now += gap
    return Trace(spans, "executor", "hogwild", layers=1, batches=len(gaps), warmup=0)


def test_run_intervals_hold_the_point_values() -> None:
    rng = np.random.default_rng(4)
    gaps = list(rng.uniform(0.9, 1.1, 300))
    stale = [int(x) for x in rng.integers(0, 3, 300)]
    trace = steady_trace(gaps, stale)
    rate = throughput_interval(trace)
    assert rate.value == pytest.approx(300 / sum(gaps)) and rate.low < rate.value < rate.high
    assert rate.relative_half_width == pytest.approx(
        1.96 * np.std(gaps) / np.mean(gaps) / math.sqrt(300), rel=0.25
    )
    staleness = staleness_intervals(trace)
    assert staleness["mean"].value == pytest.approx(np.mean(stale))
    assert staleness["per_layer"][0].low < np.mean(stale) < staleness["per_layer"][0].high


def test_several_runs_are_judged_by_the_t_interval_of_their_mean() -> None:
    from pdasgd.cli.prediction import measured_over_runs
    from pdasgd.metrics import summarize

    rng = np.random.default_rng(5)
    traces = [
        steady_trace(list(rng.uniform(0.9, 1.1, 100) * speed), [int(x) for x in rng.integers(0, 3, 100)])
        for speed in (1.0, 1.2, 0.8)
    ]
    summaries = [summarize(t) for t in traces]
    over = measured_over_runs(summaries, traces[0])
    rates = [s.throughput_batches_per_s for s in summaries]
    half = 4.302652729911275 * np.std(rates, ddof=1) / math.sqrt(3)  # t(0.975, 2)
    assert over["runs"] == 3 and over["throughput"].value == pytest.approx(np.mean(rates))
    assert over["throughput"].high - over["throughput"].value == pytest.approx(half)
    assert over["staleness"].value == pytest.approx(np.mean([s.staleness.mean for s in summaries]))
    # the first run's own bootstrap interval stays, for the "run too short" warnings
    assert over["within_run"]["throughput"] == throughput_interval(traces[0])
    assert measured_over_runs(summaries[:1], traces[0])["throughput"] == throughput_interval(traces[0])
