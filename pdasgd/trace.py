"""Traces: what happened (or is predicted to happen) during a run, as a flat list of spans.

Both engines emit a `Trace`, and every figure a user sees is computed from one by `pdasgd.metrics`. A span is
one operation of one worker: a layer's forward, backward or update, a communication, a wait or an
all-reduce, or a gossip mix (a new version of a layer from a peer's copy, `pdasgd.gossip`). For a forward
span `version` is the version of that layer's parameters the forward read (at the start of the layer's
forward); for an update or a mix span it is the layer's version just before it.

Traces save to JSON losslessly (floats are written with `repr`, so `load(save(t)) == t`) and export to the
Chrome trace format, which Perfetto (ui.perfetto.dev) and chrome://tracing open: one track per worker, with
batch, layer, version and device in each event's args.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from pdasgd.io import atomic_write_text

OPS = ("forward", "backward", "update", "comm", "wait", "allreduce", "mix")
SOURCES = ("simulator", "executor")
FORMAT = "pdasgd-trace"
FORMAT_VERSION = 1


class TraceError(ValueError):
    """A trace file or span is malformed."""


@dataclass(frozen=True, slots=True)
class Span:
    worker: str
    device: str
    op: str
    batch: int | None
    layer: int | None
    start_s: float
    end_s: float
    version: int | None = None

    @property
    def duration_s(self) -> float:
        return self.end_s - self.start_s


SPAN_COLUMNS = tuple(f.name for f in fields(Span))


@dataclass(frozen=True)
class Trace:
    """Spans plus what metrics need to interpret them; built once and never changed afterwards.

    `sequential_batch_s` is the time per batch of plain sequential backprop on the same layer costs
    (simulator) or measured (executor); `speedup_vs_sequential` divides it by the steady-state time per batch.
    `device_slots` maps each device to the number of ops it can run at once (for utilisation).
    """

    spans: list[Span]
    source: str
    method: str
    layers: int
    batches: int
    warmup: int = 0
    device_slots: dict[str, int] = field(default_factory=dict)
    sequential_batch_s: float | None = None
    memory_peak_bytes: int | None = None
    accuracy: float | None = None
    info: dict[str, Any] = field(default_factory=dict)

    def validate(self) -> None:
        """Raise TraceError on an unknown op or source, a span ending before it starts, or a bad layer."""
        if self.source not in SOURCES:
            raise TraceError(f"source: must be one of {', '.join(SOURCES)}, got {self.source!r}")
        for i, span in enumerate(self.spans):
            if span.op not in OPS:
                raise TraceError(f"spans[{i}].op: must be one of {', '.join(OPS)}, got {span.op!r}")
            if span.end_s < span.start_s:
                raise TraceError(f"spans[{i}]: ends ({span.end_s}) before it starts ({span.start_s})")
            if span.layer is not None and not 0 <= span.layer < self.layers:
                raise TraceError(f"spans[{i}].layer: {span.layer} outside 0..{self.layers - 1}")

    def to_json(self) -> str:
        meta = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "spans"}
        rows = [list(asdict(span).values()) for span in self.spans]
        document = {"format": FORMAT, "format_version": FORMAT_VERSION, **meta}
        document["columns"] = list(SPAN_COLUMNS)
        body = ",\n".join(json.dumps(row) for row in rows)
        head = json.dumps(document, indent=1, sort_keys=True)
        return head[:-2] + ',\n "spans": [\n' + body + "\n ]\n}\n"

    @classmethod
    def from_json(cls, text: str) -> Trace:
        try:
            document = json.loads(text)
        except json.JSONDecodeError as error:
            raise TraceError(f"not JSON: {error}") from None
        if not isinstance(document, dict) or document.get("format") != FORMAT:
            raise TraceError(f"not a {FORMAT} file")
        if document.get("columns") != list(SPAN_COLUMNS):
            raise TraceError(f"columns: expected {list(SPAN_COLUMNS)}")
        spans = [Span(*row) for row in document["spans"]]
        meta = {f.name: document[f.name] for f in fields(cls) if f.name in document and f.name != "spans"}
        trace = cls(spans=spans, **meta)
        trace.validate()
        return trace

    def save(self, path: str | os.PathLike) -> Path:
        """Write the trace as JSON, atomically."""
        return atomic_write_text(path, self.to_json())

    @classmethod
    def load(cls, path: str | os.PathLike) -> Trace:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except FileNotFoundError:
            raise TraceError(f"{path}: file not found") from None
        return cls.from_json(text)

    def workers(self) -> list[str]:
        """Worker names in order of first appearance."""
        return list(dict.fromkeys(span.worker for span in self.spans))

    def to_chrome(self) -> dict[str, Any]:
        """The trace as a Chrome trace-event document (times in microseconds)."""
        return chrome_trace(self)

    def save_chrome(self, path: str | os.PathLike) -> Path:
        return atomic_write_text(path, json.dumps(self.to_chrome()))


def chrome_trace(trace: Trace) -> dict[str, Any]:
    """Complete ('X') events on one track per worker, with thread names as metadata events."""
    track = {worker: i for i, worker in enumerate(trace.workers())}
    process = {"ph": "M", "pid": 0, "name": "process_name", "args": {"name": f"pdasgd {trace.source}"}}
    events: list[dict[str, Any]] = [process]
    for worker, tid in track.items():
        events.append({"ph": "M", "pid": 0, "tid": tid, "name": "thread_name", "args": {"name": worker}})
        events.append(
            {"ph": "M", "pid": 0, "tid": tid, "name": "thread_sort_index", "args": {"sort_index": tid}}
        )
    for span in trace.spans:
        events.append(_chrome_event(span, track[span.worker]))
    return {"traceEvents": events, "displayTimeUnit": "ms", "otherData": {"method": trace.method}}


def _chrome_event(span: Span, tid: int) -> dict[str, Any]:
    label = span.op if span.batch is None else f"{span.op} b{span.batch}"
    if span.layer is not None:
        label += f" L{span.layer}"
    args = {"batch": span.batch, "layer": span.layer, "version": span.version, "device": span.device}
    return {
        "ph": "X",
        "pid": 0,
        "tid": tid,
        "name": label,
        "cat": span.op,
        "ts": span.start_s * 1e6,
        "dur": span.duration_s * 1e6,
        "args": args,
    }
