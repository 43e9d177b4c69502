"""Trace JSON round trip, atomic writes and the Chrome trace export."""

from __future__ import annotations

import json

import pytest

from pdasgd.io import atomic_write_bytes
from pdasgd.trace import Span, Trace, TraceError


def small_trace() -> Trace:
    spans = [
        Span("forward:0", "gpu0", "forward", 0, 0, 0.0, 0.1, 0),
        Span("forward:0", "gpu0", "forward", 0, 1, 0.1, 0.30000000000000004, 0),
        Span("backward:0", "gpu1", "backward", 0, 1, 0.30000000000000004, 0.7, None),
        Span("backward:0", "gpu1", "update", 0, 1, 0.7, 0.71, 0),
        Span("backward:0", "gpu1", "comm", None, None, 0.71, 0.8, None),
    ]
    return Trace(
        spans,
        "simulator",
        "async-lu",
        layers=2,
        batches=1,
        device_slots={"gpu0": 1, "gpu1": 2},
        sequential_batch_s=1.0 / 3.0,
        info={"seed": 7, "note": "ü"},
    )


def test_json_round_trip_is_lossless(tmp_path):
    trace = small_trace()
    path = trace.save(tmp_path / "t.json")
    loaded = Trace.load(path)
    assert loaded == trace
    assert loaded.spans[1].end_s == 0.30000000000000004
    assert loaded.to_json() == trace.to_json()


def test_save_replaces_atomically_and_leaves_no_temp_files(tmp_path):
    target = tmp_path / "t.json"
    target.write_text("old")
    small_trace().save(target)
    assert Trace.load(target) == small_trace()
    assert [p.name for p in tmp_path.iterdir()] == ["t.json"]


def test_failed_write_keeps_the_old_file(tmp_path):
    target = tmp_path / "keep.txt"
    target.write_text("precious")
    with pytest.raises(TypeError):
        atomic_write_bytes(target, "not bytes")  # type: ignore[arg-type]
    assert target.read_text() == "precious"
    assert [p.name for p in tmp_path.iterdir()] == ["keep.txt"]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d.update(format="other"), "not a pdasgd-trace"),
        (lambda d: d["spans"][0].__setitem__(2, "dance"), r"spans\[0\].op: must be one of"),
        (lambda d: d["spans"][0].__setitem__(6, -1.0), r"spans\[0\]: ends"),
        (lambda d: d["spans"][0].__setitem__(4, 5), r"spans\[0\].layer: 5 outside 0..1"),
        (lambda d: d.update(source="oracle"), "source: must be one of"),
        (lambda d: d.update(columns=["a"]), "columns"),
    ],
)
def test_malformed_traces_are_rejected(change, message):
    document = json.loads(small_trace().to_json())
    change(document)
    with pytest.raises(TraceError, match=message):
        Trace.from_json(json.dumps(document))


def test_not_json_is_rejected():
    with pytest.raises(TraceError, match="not JSON"):
        Trace.from_json("{")


def test_chrome_trace_has_one_track_per_worker_with_batch_and_layer_args(tmp_path):
    trace = small_trace()
    document = json.loads(trace.save_chrome(tmp_path / "c.json").read_text())
    events = document["traceEvents"]
    names = {e["tid"]: e["args"]["name"] for e in events if e["ph"] == "M" and e["name"] == "thread_name"}
    assert names == {0: "forward:0", 1: "backward:0"}
    complete = [e for e in events if e["ph"] == "X"]
    assert len(complete) == len(trace.spans)
    first = complete[0]
    assert first["tid"] == 0 and first["ts"] == 0.0 and first["dur"] == pytest.approx(1e5)
    assert first["args"] == {"batch": 0, "layer": 0, "version": 0, "device": "gpu0"}
    assert complete[3]["name"] == "update b0 L1" and complete[3]["tid"] == 1
    assert complete[4]["name"] == "comm"
