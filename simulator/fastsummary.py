"""The fast path's summary: what `pdasgd.metrics.summarize` would say of the schedule's trace, from arrays.

A trace of 10^6 batches x 50 layers would be 1.5e8 Span objects; here the schedule stays two arrays
(`FixedSchedule`) and is read in chunks of batches. Every time is computed with the same float operations as
`simulator.fast.schedule_timeline` (batch start + layer offset), and versions follow the rules of
`simulator.records`, so on small runs the summary equals `summarize(simulate(...))`: exactly, except the
utilisation, whose busy times are summed in a different order (equal to ~1e-15 relative). Across chunks the
exact float sums of the time staleness are combined from per-chunk `math.fsum`s with their residuals, which
can differ from one global `fsum` in the last bit.
"""

from __future__ import annotations

import math

import numpy as np

from pdasgd.metrics import Staleness, Summary, build_summary
from pdasgd.offsets import SINGLE
from simulator.fast import FixedSchedule
from simulator.memory import PeakSweep
from simulator.progress import ProgressBar

CHUNK_STEPS = 1_000_000  # batches x layers per chunk


def summary(
    schedule: FixedSchedule,
    meta: dict,
    sizes: tuple[np.ndarray, np.ndarray],
    tie_s: float,
    worker_devices: list[str],
    progress: ProgressBar | None = None,
) -> Summary:
    """What `pdasgd.metrics.summarize` says of the schedule's trace; `progress` is ticked once per batch
    summarised."""
    end = schedule.end_s
    makespan = float(end.max()) - float(schedule.forward_start.min())
    per_batch_s = _steady_time_per_batch_s(end, meta["warmup"], float(schedule.forward_start.min()))
    stale, memory = _chunks(schedule, meta["warmup"], sizes, tie_s, progress)
    return build_summary(
        {**meta, "accuracy": None},
        batches=schedule.batches,
        makespan=makespan,
        per_batch_s=per_batch_s,
        sequential_batch_s=meta["sequential_batch_s"],
        staleness=stale.versions(),
        time_staleness=stale.time_means(),
        utilization_=_utilization(schedule, meta["device_slots"], worker_devices, makespan),
        memory_peak_bytes=memory,
    )


def _steady_time_per_batch_s(end: np.ndarray, warmup: int, first_start_s: float) -> float:
    """As pdasgd.metrics.steady_time_per_batch_s, from the sorted completion times."""
    finishes = np.sort(end)
    warmup = min(warmup, len(finishes) - 1)
    start_s = float(finishes[warmup - 1]) if warmup > 0 else first_start_s
    return (float(finishes[-1]) - start_s) / (len(finishes) - warmup)


class _Staleness:
    """Per-layer running sums of version and time staleness."""

    def __init__(self, layers: int, count: int, chunked: bool) -> None:
        self.count = count
        self.chunked = chunked  # keep each chunk's fsum residual so chunk sums combine (nearly) exactly
        self.sums = np.zeros(layers, dtype=np.int64)
        self.maxima = np.zeros(layers, dtype=np.int64)
        self.time_parts: list[list[float]] = [[] for _ in range(layers)]

    def add(self, layer: int, versions: np.ndarray, times_s: np.ndarray) -> None:
        if not len(versions):
            return
        self.sums[layer] += int(versions.sum())
        self.maxima[layer] = max(int(self.maxima[layer]), int(versions.max()))
        values = times_s.tolist()
        total = math.fsum(values)
        self.time_parts[layer].append(total)
        if self.chunked:
            self.time_parts[layer].append(math.fsum([*values, -total]))

    def versions(self) -> Staleness:
        layers = len(self.sums)
        return Staleness.from_counts(self.sums.tolist(), [self.count] * layers, self.maxima.tolist())

    def time_means(self) -> list[float]:
        return [math.fsum(parts) / self.count if self.count else 0.0 for parts in self.time_parts]


def _count(base: np.ndarray, offsets: tuple[float, ...], x: np.ndarray, side: str) -> np.ndarray:
    """#{w : (base[w] + offsets...) <= x} (side 'right') or < x ('left'), exactly as the values compute;
    `base` is nondecreasing. Only a window of base around x is evaluated."""
    if not len(x):
        return np.zeros(0, dtype=np.int64)
    shift = sum(offsets)
    slack = 1e-9 * (abs(float(x.max())) + abs(shift)) + 1e-300
    lo = int(np.searchsorted(base, float(x.min()) - shift - slack, "left"))
    hi = int(np.searchsorted(base, float(x.max()) - shift + slack, "right"))
    values = base[lo:hi]
    for offset in offsets:
        values = values + offset
    return lo + np.searchsorted(values, x, side)


def _chunks(
    schedule: FixedSchedule, warmup: int, sizes, tie_s: float, progress
) -> tuple[_Staleness, int | None]:
    """Staleness sums over all steady batches, and the memory peak, chunk by chunk."""
    off = schedule.offsets
    layers = len(off.forward_start)
    activation_bytes, param_bytes = sizes
    track_memory = bool(activation_bytes.any() or param_bytes.any())
    step = max(1, CHUNK_STEPS // layers)
    bounds = list(range(0, schedule.batches, step)) + [schedule.batches]
    stale = _Staleness(layers, max(schedule.batches - warmup, 0), chunked=len(bounds) > 2)
    sweep = PeakSweep(tie_s)
    for lo, hi in zip(bounds[:-1], bounds[1:], strict=True):
        intervals = []
        for m in range(layers):
            _layer_staleness(schedule, m, lo, hi, warmup, tie_s, stale)
            if track_memory:
                intervals += _layer_memory(schedule, m, lo, hi, tie_s, sizes)
        if track_memory:
            sweep.add(_chunk(intervals, schedule, hi))
        if progress is not None:
            progress.tick(hi - lo)
    return stale, (sweep.peak if track_memory else None)


def _layer_staleness(schedule, m, lo, hi, warmup, tie_s, stale) -> None:
    """Record the staleness of layer m for batches lo..hi-1."""
    off = schedule.offsets
    a, s = schedule.forward_start, schedule.backward_start
    read_s = a[lo:hi] + off.forward_start[m]
    batches = np.arange(lo, hi)
    read_version = np.minimum(_count(s, (off.visible[m],), read_s + tie_s, "right"), batches)  # not its own
    steady = slice(max(warmup - lo, 0), hi - lo)
    update_end_s = s[lo:hi] + off.update_end[m]
    stale.add(m, (batches - read_version)[steady], (update_end_s - read_s)[steady])


def _layer_memory(schedule, m, lo, hi, tie_s, sizes) -> list:
    """Intervals of layer m's activations of batches lo..hi-1 and of the versions those batches create."""
    off = schedule.offsets
    a, s, b = schedule.forward_start, schedule.backward_start, schedule.batches
    activation_bytes, param_bytes = sizes
    out = [(a[lo:hi] + off.forward_start[m], s[lo:hi] + off.backward_end[m], activation_bytes[m])]
    if not param_bytes[m]:
        return out
    versions = np.arange(lo + 1 if lo else 0, hi + 1)
    alloc = np.where(versions > 0, s[np.maximum(versions - 1, 0)] + off.update_end[m], 0.0)
    superseded = np.full(len(versions), np.inf)
    live = versions < b
    superseded[live] = s[versions[live]] + off.visible[m]
    last_reader = _count(a, (off.forward_start[m], tie_s), superseded[live], "left") - 1
    reader_hold = np.full(len(versions), -np.inf)
    reader_hold[live] = _hold_if_reader(schedule, m, versions[live], last_reader, tie_s)
    out.append((alloc, np.maximum(superseded, reader_hold), param_bytes[m]))
    return out


def _hold_if_reader(schedule, m, versions, last_reader, tie_s) -> np.ndarray:
    """Backward end of the last batch that read each version, or -inf when no batch read it.

    Batch i reads version min(count_i, i) (never its own update, see simulator.records); both terms grow
    with i, so the last batch reading at most v is max(last_reader, v), and it reads exactly v when the
    update that made v (the one before) was visible to it."""
    off = schedule.offsets
    a, s = schedule.forward_start, schedule.backward_start
    index = np.maximum(last_reader, versions)
    read_plus_tie = (a[index] + off.forward_start[m]) + tie_s
    previous_visible = s[np.maximum(versions - 1, 0)] + off.visible[m]
    read_it = (versions == 0) | (previous_visible <= read_plus_tie)
    return np.where(read_it, s[index] + off.backward_end[m], -np.inf)


def _chunk(intervals: list, schedule: FixedSchedule, hi: int):
    start = np.concatenate([x[0] for x in intervals])
    end = np.concatenate([x[1] for x in intervals])
    size = np.concatenate([np.full(len(x[0]), x[2], dtype=np.int64) for x in intervals])
    horizon = float(schedule.forward_start[hi]) if hi < schedule.batches else np.inf
    return start, end, size, horizon


def _utilization(schedule, device_slots: dict, worker_devices: list[str], makespan: float) -> dict:
    """Busy time per device: each worker's batches times its per-batch op time."""
    off = schedule.offsets
    forward_s = float(np.sum(off.forward_end - off.forward_start))
    backward_s = float(
        np.sum(off.backward_end - off.backward_start) + np.sum(off.update_end - off.update_start)
    )
    b = schedule.batches
    busy = dict.fromkeys(device_slots, 0.0)
    if schedule.shape == SINGLE:
        busy[worker_devices[0]] += b * (forward_s + backward_s)
    else:
        for j in range(schedule.n_forward):
            busy[worker_devices[j]] += len(range(j, b, schedule.n_forward)) * forward_s
        for j in range(schedule.n_backward):
            busy[worker_devices[schedule.n_forward + j]] += len(range(j, b, schedule.n_backward)) * backward_s
    return {
        device: busy[device] / (device_slots[device] * makespan) if makespan > 0 else 0.0
        for device in device_slots
    }
