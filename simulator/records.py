"""Records: the spans an engine produces, as columns, and the versions read and written in them.

A `Timeline` holds one row per operation as numpy columns: worker, op, batch, layer, start_s, end_s and
visible_s (when an update becomes visible to readers; NaN for other ops). The SimPy engine assembles it from
the step times it recorded and the workers' plans (`simulator.engine`), the fast path directly from its
recursion (`simulator.fast`). Versions are resolved here after the run, then the rows become
`pdasgd.trace.Span`s.

Versions are resolved from the records, not counted while the simulation runs, so the tie rule of
docs/design.md holds whatever order SimPy processes simultaneous events in. Parameters are versioned per
(group, layer): a group is a parameter copy of the method (`pdasgd.methods.Copies`): one shared copy, one per
replica or one per worker.

- The version an update span carries (the layer's version just before the update) is the number of updates
  of that (group, layer) ordered before it: by start time, then batch id when starts tie. A gossip mix
  (`mix` rows, no batch) is a version like an update: it counts, and its row carries the version before it.
- The version a forward span carries (read when the layer's forward starts) is the newest version of that
  (group, layer) visible at the read: the highest (update version + 1) over its updates with
  `visible_s <= start_s` ("an update at the same instant as a read is visible"), as the executor's reader
  sees the newest published version. When updates become visible in the order they were applied (every
  built-in method without stragglers) it is simply the number of updates visible. Instants closer than
  `tie_s` count as the same instant (theory.ties), so float rounding along different arithmetic paths
  (SimPy, the numpy fast path, the theory) does not split a true tie. A batch never reads its own update
  (possible only when zero-cost ops make them simultaneous): a read's version is at most the version of the
  same batch's update of that layer.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, fields
from itertools import starmap

import numpy as np

from pdasgd.trace import OPS, Span

OP_CODES = {name: index for index, name in enumerate(OPS)}
FORWARD, BACKWARD, UPDATE, COMM, WAIT, ALLREDUCE, MIX = (OP_CODES[name] for name in OPS)
NO_VALUE = -1  # batch, layer or version absent
NAN = math.nan
ROW_DTYPE = np.dtype(
    [(name, np.int64) for name in ("worker", "op", "batch", "layer")]
    + [(name, np.float64) for name in ("start_s", "end_s", "visible_s")]
)


@dataclass
class Timeline:
    """Spans as parallel numpy arrays; `version` is filled by `resolve_versions` (-1 where absent)."""

    worker: np.ndarray
    op: np.ndarray
    batch: np.ndarray
    layer: np.ndarray
    start_s: np.ndarray
    end_s: np.ndarray
    visible_s: np.ndarray
    version: np.ndarray

    @classmethod
    def from_rows(cls, rows: list[tuple]) -> Timeline:
        """Columns from `(worker, op, batch, layer, start_s, end_s, visible_s)` rows."""
        if not rows:
            empty_int, empty_float = np.zeros(0, dtype=np.int64), np.zeros(0)
            return cls(*[empty_int] * 4, *[empty_float] * 3, empty_int.copy())
        table = np.array(rows, dtype=ROW_DTYPE)
        columns = [np.ascontiguousarray(table[name]) for name in ROW_DTYPE.names]
        return cls(*columns, np.full(len(rows), NO_VALUE, dtype=np.int64))

    @classmethod
    def concatenate(cls, parts: list[Timeline]) -> Timeline:
        columns = [f.name for f in fields(cls)]
        return cls(*[np.concatenate([getattr(part, name) for part in parts]) for name in columns])

    def __len__(self) -> int:
        return len(self.op)

    def completion_s(self, batches: int) -> np.ndarray:
        """Per batch, the latest end of its spans (-inf for a batch without spans)."""
        done = np.full(batches, -np.inf)
        has_batch = self.batch >= 0
        np.maximum.at(done, self.batch[has_batch], self.end_s[has_batch])
        return done


def resolve_versions(timeline: Timeline, worker_group: np.ndarray, layers: int, tie_s: float) -> None:
    """Fill `timeline.version` for forward and update spans (module docstring: the rules)."""
    key = worker_group[timeline.worker] * layers + timeline.layer
    updates = np.flatnonzero(timeline.op == UPDATE)
    writes = np.flatnonzero((timeline.op == UPDATE) | (timeline.op == MIX))
    reads = np.flatnonzero(timeline.op == FORWARD)
    ranked = _update_order(timeline, key, writes, tie_s)
    timeline.version[ranked] = _rank_within(key[ranked])
    for write_rows, read_rows in _by_key(key, ranked, reads):
        order = np.argsort(timeline.visible_s[write_rows], kind="stable")
        visible = timeline.visible_s[write_rows][order]
        newest = np.concatenate([[0], np.maximum.accumulate(order + 1)])  # write rows are in rank order
        seen = np.searchsorted(visible, timeline.start_s[read_rows] + tie_s, "right")
        timeline.version[read_rows] = newest[seen]
    _not_after_own_update(timeline, reads, updates, layers)


def _not_after_own_update(timeline: Timeline, reads: np.ndarray, updates: np.ndarray, layers: int) -> None:
    """A batch cannot read its own update, nor any ordered after it: when zero-cost ops put a batch's update
    at the very instant of its read, the tie rule would count them, so clamp to the update's version."""
    own = timeline.batch * layers + timeline.layer
    order = updates[np.argsort(own[updates], kind="stable")]
    if not len(order):
        return
    found = np.minimum(np.searchsorted(own[order], own[reads]), len(order) - 1)
    match = own[order][found] == own[reads]
    update_version = timeline.version[order][found]
    timeline.version[reads] = np.where(
        match, np.minimum(timeline.version[reads], update_version), timeline.version[reads]
    )


def _update_order(timeline: Timeline, key: np.ndarray, updates: np.ndarray, tie_s: float) -> np.ndarray:
    """Update rows sorted by (key, start, batch), with starts closer than tie_s taken as equal."""
    start, batch, group = timeline.start_s[updates], timeline.batch[updates], key[updates]
    order = np.lexsort((batch, start, group))
    start, group = start[order], group[order]
    boundary = np.ones(len(order), dtype=bool)
    boundary[1:] = (group[1:] != group[:-1]) | (np.diff(start) > tie_s)
    instant = np.cumsum(boundary)
    return updates[order[np.lexsort((batch[order], instant))]]


def _rank_within(sorted_keys: np.ndarray) -> np.ndarray:
    """0, 1, 2, ... restarting wherever the (sorted) key changes."""
    if len(sorted_keys) == 0:
        return np.zeros(0, dtype=np.int64)
    first = np.searchsorted(sorted_keys, sorted_keys, side="left")
    return np.arange(len(sorted_keys)) - first


def _by_key(key: np.ndarray, ranked_writes: np.ndarray, reads: np.ndarray):
    """Yield (write rows in rank order, read rows) for every (group, layer) key that has reads."""
    write_keys = key[ranked_writes]
    read_order = reads[np.argsort(key[reads], kind="stable")]
    read_keys = key[read_order]
    for value in np.unique(read_keys):
        lo, hi = np.searchsorted(read_keys, [value, value + 1])
        wlo, whi = np.searchsorted(write_keys, [value, value + 1])
        yield ranked_writes[wlo:whi], read_order[lo:hi]


def timeline_spans(timeline: Timeline, worker_names: list[str], worker_devices: list[str]) -> list[Span]:
    """Spans sorted by start time, then record order (deterministic)."""
    order = np.argsort(timeline.start_s, kind="stable")
    columns = (
        [worker_names[w] for w in timeline.worker[order].tolist()],
        [worker_devices[w] for w in timeline.worker[order].tolist()],
        [OPS[o] for o in timeline.op[order].tolist()],
        _optional(timeline.batch[order]),
        _optional(timeline.layer[order]),
        timeline.start_s[order].tolist(),
        timeline.end_s[order].tolist(),
        _optional(timeline.version[order]),
    )
    return list(starmap(_make_span, zip(*columns, strict=True)))


def _optional(column: np.ndarray) -> list[int | None]:
    values = column.tolist()
    if column.min(initial=0) >= 0:
        return values
    return [None if value < 0 else value for value in values]


def _span_maker() -> Callable[..., Span]:
    """Span(*fields), made about twice as fast by filling the slots directly (Span is a frozen, slotted
    dataclass whose __init__ only assigns; millions of spans are built per trace). Checked against the real
    constructor; falls back to it if Span ever changes shape."""
    names = tuple(f.name for f in fields(Span))
    if getattr(Span, "__slots__", None) != names:
        return Span
    new = object.__new__
    s0, s1, s2, s3, s4, s5, s6, s7 = (getattr(Span, name).__set__ for name in names)

    def make(worker, device, op, batch, layer, start_s, end_s, version) -> Span:
        span = new(Span)
        s0(span, worker), s1(span, device), s2(span, op), s3(span, batch)
        s4(span, layer), s5(span, start_s), s6(span, end_s), s7(span, version)
        return span

    sample = ("w", "d", "forward", 1, 2, 0.5, 1.5, 3)
    return make if make(*sample) == Span(*sample) else Span


_make_span = _span_maker()
