"""Metrics: the one analysis path from a Trace to the numbers a user sees.

Whatever produced a trace (simulator or executor), `summarize(trace, sequential_batch_s=...)` turns it into a
`Summary`, whose `to_dict()` has the stable keys every command prints with `--json` (docs/design.md). The
simulator's fast path builds the same `Summary` from arrays through `build_summary`, the one place the
derived figures (throughput, speed-up, staleness means and maxima) are computed. Definitions (shared with
the theory):

- A batch completes at the latest end of any of its spans. Steady-state throughput counts the batches
  after the first `warmup` completions: (completed - warmup) / (last completion - warmup-th completion);
  with no warmup, from the first span's start.
- Version staleness of layer m for batch i = version just before batch i's update of m (update span)
  minus the version batch i's forward read (forward span): the number of updates applied to m in between.
  Time staleness = end of that update minus start of that forward. Batches with id < warmup are left out
  (pipeline filling). Engines emit at most one forward and one update span per (batch, layer); pairs
  missing either are skipped.
- Utilisation of a device = busy time (every op but `wait`; at each instant at most `slots` ops count) /
  (slots x makespan).

`mean_summary(summaries)` is the summary of several runs of one scenario: each figure's mean over the runs
(maxima: the largest), which `compare --runs N` reports as the measurement.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import asdict, dataclass, fields

import numpy as np

from pdasgd.trace import Trace


@dataclass(frozen=True)
class Staleness:
    """Version staleness over the steady-state batches: overall and per layer (input layer first)."""

    mean: float
    max: int
    per_layer_mean: list[float]
    per_layer_max: list[int]

    @classmethod
    def from_counts(cls, sums: list[int], counts: list[int], maxima: list[int]) -> Staleness:
        """From each layer's sum of samples, number of samples and largest sample."""
        total, samples = sum(sums), sum(counts)
        return cls(
            mean=float(total) / samples if samples else 0.0,
            max=max(maxima, default=0),
            per_layer_mean=[float(s) / c if c else 0.0 for s, c in zip(sums, counts, strict=True)],
            per_layer_max=list(maxima),
        )


@dataclass(frozen=True)
class TimeStaleness:
    per_layer_mean: list[float]


@dataclass(frozen=True)
class Summary:
    """What a trace says, in the stable keys of `--json` (`to_dict`)."""

    source: str
    method: str
    batches: int
    makespan_s: float
    throughput_batches_per_s: float
    speedup_vs_sequential: float | None
    staleness: Staleness
    time_staleness_s: TimeStaleness
    utilization: dict[str, float]
    memory_peak_bytes: int | None
    accuracy: float | None

    def to_dict(self) -> dict:
        return asdict(self)


SUMMARY_KEYS = tuple(f.name for f in fields(Summary))


def build_summary(
    trace_meta: Trace | dict,
    batches: int,
    makespan: float,
    per_batch_s: float,
    sequential_batch_s: float | None,
    staleness: Staleness,
    time_staleness: list[float],
    utilization_: dict[str, float],
    memory_peak_bytes: int | None,
) -> Summary:
    """A Summary from measured parts; `trace_meta` gives source, method and accuracy (a Trace or the
    fast path's metadata dict)."""
    get = trace_meta.get if isinstance(trace_meta, dict) else lambda key: getattr(trace_meta, key)
    throughput = rate(per_batch_s)
    speedup = None
    if sequential_batch_s is not None and math.isfinite(throughput):
        speedup = sequential_batch_s * throughput
    return Summary(
        source=get("source"),
        method=get("method"),
        batches=batches,
        makespan_s=makespan,
        throughput_batches_per_s=throughput,
        speedup_vs_sequential=speedup,
        staleness=staleness,
        time_staleness_s=TimeStaleness(time_staleness),
        utilization=utilization_,
        memory_peak_bytes=memory_peak_bytes,
        accuracy=get("accuracy"),
    )


def mean_summary(summaries: list[Summary]) -> Summary:
    """Several runs of one scenario as one summary: every figure the mean over the runs (per layer, per
    device), the staleness and memory maxima the largest; a figure missing from any run is missing."""
    first = summaries[0]
    if len(summaries) == 1:
        return first

    def mean(values: list) -> float | None:
        return None if any(v is None for v in values) else float(np.mean(values))

    def per_layer(get) -> list[float]:
        return [float(v) for v in np.mean([get(s) for s in summaries], axis=0)]

    peaks = [s.memory_peak_bytes for s in summaries]
    return Summary(
        source=first.source,
        method=first.method,
        batches=first.batches,
        makespan_s=mean([s.makespan_s for s in summaries]),
        throughput_batches_per_s=mean([s.throughput_batches_per_s for s in summaries]),
        speedup_vs_sequential=mean([s.speedup_vs_sequential for s in summaries]),
        staleness=Staleness(
            mean=mean([s.staleness.mean for s in summaries]),
            max=max(s.staleness.max for s in summaries),
            per_layer_mean=per_layer(lambda s: s.staleness.per_layer_mean),
            per_layer_max=[int(v) for v in np.max([s.staleness.per_layer_max for s in summaries], axis=0)],
        ),
        time_staleness_s=TimeStaleness(per_layer(lambda s: s.time_staleness_s.per_layer_mean)),
        utilization={d: mean([s.utilization.get(d) for s in summaries]) for d in first.utilization},
        memory_peak_bytes=None if None in peaks else max(peaks),
        accuracy=mean([s.accuracy for s in summaries]),
    )


@dataclass(frozen=True)
class StalenessTable:
    """Per-layer staleness samples (input layer first), steady-state batches only."""

    versions: list[list[int]]
    times_s: list[list[float]]

    def per_layer_mean(self) -> list[float]:
        return [_mean(samples) for samples in self.versions]

    def per_layer_max(self) -> list[int]:
        return [max(samples) if samples else 0 for samples in self.versions]

    def time_per_layer_mean(self) -> list[float]:
        return [_mean(samples) for samples in self.times_s]

    def mean(self) -> float:
        return _mean([value for samples in self.versions for value in samples])

    def max(self) -> int:
        return max(self.per_layer_max(), default=0)

    def summary(self) -> Staleness:
        sums = [sum(samples) for samples in self.versions]
        return Staleness.from_counts(sums, [len(samples) for samples in self.versions], self.per_layer_max())


def _mean(values: list) -> float:
    return math.fsum(values) / len(values) if values else 0.0


def makespan_s(trace: Trace) -> float:
    """Time from the first span's start to the last span's end."""
    if not trace.spans:
        return 0.0
    return max(span.end_s for span in trace.spans) - min(span.start_s for span in trace.spans)


def completion_times(trace: Trace) -> dict[int, float]:
    """Batch -> time its last span ends."""
    done: dict[int, float] = {}
    for span in trace.spans:
        if span.batch is not None:
            done[span.batch] = max(done.get(span.batch, span.end_s), span.end_s)
    return done


def steady_time_per_batch_s(trace: Trace) -> float:
    """Mean time between batch completions after the first `warmup` completions."""
    finishes = sorted(completion_times(trace).values())
    warmup = min(trace.warmup, len(finishes) - 1)
    if not finishes:
        return math.nan
    if warmup > 0:
        start_s = finishes[warmup - 1]
    else:
        start_s = min(span.start_s for span in trace.spans)
    counted = len(finishes) - warmup
    return (finishes[-1] - start_s) / counted


def rate(per_batch_s: float) -> float:
    """Batches per second from seconds per batch (inf when no time passes)."""
    return 1.0 / per_batch_s if per_batch_s > 0 else math.inf


def throughput_batches_per_s(trace: Trace) -> float:
    return rate(steady_time_per_batch_s(trace))


def staleness_table(trace: Trace) -> StalenessTable:
    """Pair each steady-state batch's forward read with its update of the same layer."""
    reads: dict[tuple[int, int], tuple[int, float]] = {}
    updates: dict[tuple[int, int], tuple[int, float]] = {}
    for span in trace.spans:
        if span.batch is None or span.layer is None or span.version is None:
            continue
        key = (span.batch, span.layer)
        if span.op == "forward":
            reads.setdefault(key, (span.version, span.start_s))
        elif span.op == "update":
            updates.setdefault(key, (span.version, span.end_s))
    versions: list[list[int]] = [[] for _ in range(trace.layers)]
    times_s: list[list[float]] = [[] for _ in range(trace.layers)]
    for (batch, layer), (read_version, read_s) in sorted(reads.items()):
        if batch < trace.warmup or (batch, layer) not in updates:
            continue
        update_version, update_s = updates[(batch, layer)]
        versions[layer].append(update_version - read_version)
        times_s[layer].append(update_s - read_s)
    return StalenessTable(versions, times_s)


def utilization(trace: Trace) -> dict[str, float]:
    """Device -> busy fraction of (slots x makespan): the time integral of min(ops running, slots) over
    slots x makespan. Ops on a time-sliced device (more threads than cores) last longer than their work, so
    summing their durations would count the same core-second twice; at most `slots` are busy at once."""
    intervals: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for span in trace.spans:
        if span.op != "wait":
            intervals[span.device].append((span.start_s, span.end_s))
    total_s = makespan_s(trace)
    devices = list(trace.device_slots) + [d for d in intervals if d not in trace.device_slots]
    return {
        device: (
            busy_slot_s(intervals[device], trace.device_slots.get(device, 1))
            / (trace.device_slots.get(device, 1) * total_s)
            if total_s > 0
            else 0.0
        )
        for device in devices
    }


def busy_slot_s(intervals: list[tuple[float, float]] | np.ndarray, slots: int) -> float:
    """Integral over time of min(number of intervals open, slots)."""
    if not len(intervals):
        return 0.0
    bounds = np.asarray(intervals, dtype=float)
    times = np.concatenate([bounds[:, 0], bounds[:, 1]])
    steps = np.concatenate([np.ones(len(bounds)), -np.ones(len(bounds))])
    order = np.lexsort((steps, times))  # at equal times, ends (-1) before starts
    times, level = times[order], np.cumsum(steps[order])
    return float(np.sum(np.minimum(level[:-1], slots) * np.diff(times)))


def summarize(trace: Trace, sequential_batch_s: float | None = None) -> Summary:
    """The Summary of `trace`; `sequential_batch_s` (default: the trace's own) is the time per batch of
    plain sequential backprop that `speedup_vs_sequential` divides by the steady-state time per batch."""
    table = staleness_table(trace)
    if sequential_batch_s is None:
        sequential_batch_s = trace.sequential_batch_s
    return build_summary(
        trace,
        batches=len(completion_times(trace)),
        makespan=makespan_s(trace),
        per_batch_s=steady_time_per_batch_s(trace),
        sequential_batch_s=sequential_batch_s,
        staleness=table.summary(),
        time_staleness=table.time_per_layer_mean(),
        utilization_=utilization(trace),
        memory_peak_bytes=trace.memory_peak_bytes,
    )
