"""Plots render from a Trace (or summary) alone, whatever engine made it, and write PNGs atomically."""

from __future__ import annotations

import pytest

from pdasgd.methods import worker_order
from pdasgd.metrics import summarize
from pdasgd.plots import _window, gantt, staleness_plot
from pdasgd.scenario import parse_scenario
from pdasgd.trace import Span, Trace
from simulator import simulate

PNG = b"\x89PNG\r\n\x1a\n"


def predicted(method: str, **workers) -> Trace:
    data = {
        "method": method,
        "model": {"layers": 4, "forward_s": 1.0, "beta": 2.0},
        "workers": {"forward": 1, "backward": 2, **workers},
        "delays": {"handoff_s": 0.2, "jitter_cv": 0.2},
        "run": {"batches": 30, "warmup": 5},
    }
    return simulate(parse_scenario(data))


@pytest.mark.parametrize("method", ["async-lu", "sequential", "ddp", "lapsgd"])
def test_gantt_writes_a_png(tmp_path, method: str) -> None:
    trace = predicted(method, replicas=2, per_replica=2, average_every=2)
    path = gantt(trace, tmp_path / "sub" / "gantt.png", batches=8)
    assert path.read_bytes().startswith(PNG)
    assert list(path.parent.iterdir()) == [path]  # no temporary file left behind


def test_gantt_of_a_hand_made_measured_trace(tmp_path) -> None:
    spans = [
        Span("forward:0", "cpu", "forward", 0, 0, 0.0, 0.5, 0),
        Span("backward:0", "cpu", "backward", 0, 0, 0.6, 1.5),
        Span("backward:0", "cpu", "update", 0, 0, 1.5, 1.6, 0),
        Span("backward:0", "cpu", "wait", None, None, 1.6, 1.8),
    ]
    trace = Trace(spans=spans, source="executor", method="async-lu", layers=1, batches=1)
    assert gantt(trace, tmp_path / "g.png", batches=None).read_bytes().startswith(PNG)


def test_gantt_window_keeps_the_first_batches_and_their_waits() -> None:
    trace = predicted("lapsgd", replicas=2, per_replica=1, average_every=1)  # averaging rounds: no batch
    window = _window(trace, 3)
    assert {s.batch for s in window} == {0, 1, 2, None}
    last = max(s.end_s for s in window if s.batch is not None)
    assert all(s.start_s < last for s in window if s.batch is None)


def test_worker_rows_go_forward_then_backward_then_by_number() -> None:
    names = ["backward:10", "worker:2", "backward:2", "forward:0", "worker:10"]
    assert worker_order("async-lu", names) == [
        "forward:0",
        "backward:2",
        "backward:10",
        "worker:2",
        "worker:10",
    ]


def test_staleness_plot_takes_summaries_and_traces(tmp_path) -> None:
    lu = predicted("async-lu")
    bu = summarize(predicted("async-bu"))
    path = staleness_plot({"LU": lu, "BU": bu}, tmp_path / "staleness.png", title="LU vs BU")
    assert path.read_bytes().startswith(PNG)
