"""Memory: the peak of live activations plus live parameter versions (docs/design.md, `memory_peak_bytes`).

What is live, from a layer's `activation_bytes` and `param_bytes`:

- Activations: batch i keeps layer m's `activation_bytes` from the start of its forward of m until the end of
  its backward of m (freed layer by layer as the backward passes). A layer a method never runs backward
  through for that batch (lppsgd below a worker's partition) is freed when the batch completes.
- Parameters: every (group, layer) holds its current version, `param_bytes`. The update that creates version
  v+1 allocates it when it ends; version v is freed once v+1 is visible to readers and every batch whose
  forward read v has finished its backward of that layer (a pending graph still reads it). Replicated methods
  hold one copy per replica group.

Intervals are half-open, [allocated, freed): a free and an allocation at the same instant never overlap, so
plain sequential backprop peaks at exactly sum(activation_bytes) + sum(param_bytes). Gradients, optimizer
scratch and communication buffers are not modelled. The peak is the total over all devices.

`peak_bytes` sweeps intervals given in chunks ordered in time, carrying the events a chunk leaves for later,
so the fast path can stream 10^6 batches without holding every interval at once.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from simulator.records import BACKWARD, FORWARD, MIX, UPDATE, Timeline

# (start_s, end_s, bytes, no_later_start_before_s): intervals of one chunk; every interval of a later chunk
# starts at or after the last value.
Chunk = tuple[np.ndarray, np.ndarray, np.ndarray, float]


class PeakSweep:
    """Running peak over chunks of intervals given in time order (see `Chunk`)."""

    def __init__(self, tie_s: float = 0.0) -> None:
        self.tie_s = tie_s
        self.level = 0
        self.peak = 0
        self.carry_t = np.zeros(0)
        self.carry_d = np.zeros(0, dtype=np.int64)

    def add(self, chunk: Chunk) -> None:
        start, end, size, horizon = chunk
        size = np.asarray(size, dtype=np.int64)
        if not size.all():
            start, end, size = start[size > 0], end[size > 0], size[size > 0]
        times = np.concatenate([self.carry_t, start, end])
        deltas = np.concatenate([self.carry_d, size, -size])
        now = times < horizon - self.tie_s
        if now.any():
            self._sweep(times[now], deltas[now])
        later = ~now & np.isfinite(times)
        self.carry_t, self.carry_d = times[later], deltas[later]

    def _sweep(self, times: np.ndarray, deltas: np.ndarray) -> None:
        """Apply events in time order. Within an instant (times closer than tie_s) frees go first, so the
        level peaks at the instant's end: only those levels are candidates for the peak (and an interval
        that ends where it starts never counts)."""
        order = np.argsort(times, kind="stable")
        running = self.level + np.cumsum(deltas[order])
        instant_end = np.append(np.diff(times[order]) > self.tie_s, True)
        self.peak = max(self.peak, int(running[instant_end].max()))
        self.level = int(running[-1])


def peak_bytes(chunks: Iterable[Chunk], tie_s: float = 0.0) -> int:
    """Peak of the sum of live intervals; frees go before allocations at the same instant (within tie_s)."""
    sweep = PeakSweep(tie_s)
    for chunk in chunks:
        sweep.add(chunk)
    return sweep.peak


def timeline_peak_bytes(
    timeline: Timeline,
    worker_group: np.ndarray,
    activation_bytes: np.ndarray,
    param_bytes: np.ndarray,
    batches: int,
    tie_s: float = 0.0,
) -> int | None:
    """memory_peak_bytes of a resolved timeline; None when the model gives no sizes at all."""
    if not activation_bytes.any() and not param_bytes.any():
        return None
    start, end, size = timeline_intervals(timeline, worker_group, activation_bytes, param_bytes, batches)
    return peak_bytes([(start, end, size, np.inf)], tie_s)


def timeline_intervals(
    timeline: Timeline,
    worker_group: np.ndarray,
    activation_bytes: np.ndarray,
    param_bytes: np.ndarray,
    batches: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(allocated, freed, bytes) of every live activation and parameter version of a resolved timeline."""
    hold = _activation_hold_s(timeline, len(activation_bytes), batches)
    reads = timeline.op == FORWARD
    start = [timeline.start_s[reads]]
    end = [hold[reads]]
    size = [activation_bytes[timeline.layer[reads]]]
    groups = worker_group[timeline.worker]
    for group in np.unique(groups):
        for layer in range(len(param_bytes)):
            if param_bytes[layer]:
                in_key = (groups == group) & (timeline.layer == layer)
                alloc, free = _version_lifetimes(timeline, in_key, hold)
                start.append(alloc)
                end.append(free)
                size.append(np.full(len(alloc), param_bytes[layer]))
    return np.concatenate(start), np.concatenate(end), np.concatenate(size)


def _activation_hold_s(timeline: Timeline, layers: int, batches: int) -> np.ndarray:
    """Per row: the end of the same batch's backward of the same layer, else the batch's completion."""
    hold = timeline.completion_s(batches)[np.maximum(timeline.batch, 0)]
    key = timeline.batch * layers + timeline.layer
    backward = np.flatnonzero(timeline.op == BACKWARD)
    order = backward[np.argsort(key[backward], kind="stable")]
    found = np.searchsorted(key[order], key)
    found = np.minimum(found, max(len(order) - 1, 0))
    if len(order):
        match = key[order][found] == key
        hold = np.where(match, timeline.end_s[order][found], hold)
    return hold


def _version_lifetimes(timeline: Timeline, in_key: np.ndarray, hold: np.ndarray):
    """[alloc, free) of versions 0..n of one (group, layer) with n updates (gossip mixes among them)."""
    writes = np.flatnonzero(in_key & ((timeline.op == UPDATE) | (timeline.op == MIX)))
    writes = writes[np.argsort(timeline.version[writes], kind="stable")]
    count = len(writes)
    alloc = np.concatenate([[0.0], timeline.end_s[writes]])
    free = np.concatenate([np.sort(timeline.visible_s[writes]), [np.inf]])
    reads = np.flatnonzero(in_key & (timeline.op == FORWARD))
    latest_reader = np.full(count + 1, -np.inf)
    np.maximum.at(latest_reader, timeline.version[reads], hold[reads])
    return alloc, np.maximum(free, np.where(np.isfinite(free), latest_reader, np.inf))
