"""Metrics on small hand-built traces with exact expected values."""

from __future__ import annotations

import dataclasses

import pytest

from pdasgd.metrics import SUMMARY_KEYS, completion_times, staleness_table, summarize
from pdasgd.trace import Span, Trace


def pipeline_trace(warmup: int = 0) -> Trace:
    """One forward worker, one backward worker, two layers, three batches, LU updates.

    F per layer 1 s, B per layer 1 s, updates instantaneous. Batch i's forward runs [2i, 2i+2]; the
    backward of batch i starts when the forward ends and the backward worker is free (4 s per batch).
    """
    spans: list[Span] = []
    versions = [0, 0]
    backward_free = 0.0
    timeline: list[tuple[float, Span]] = []
    for batch in range(3):
        start = 2.0 * batch
        for layer in range(2):
            timeline.append((start + layer, ("forward", batch, layer, start + layer)))
        backward_start = max(start + 2.0, backward_free)
        for step, layer in enumerate((1, 0)):
            t = backward_start + step
            timeline.append((t + 1.0, ("update", batch, layer, t + 1.0)))
            timeline.append((t, ("backward", batch, layer, t)))
        backward_free = backward_start + 2.0
    # Replay in time order so versions are what a reader at that instant sees (updates first on ties).
    for _, (op, batch, layer, t) in sorted(timeline, key=lambda e: (e[0], e[1][0] != "update")):
        if op == "forward":
            spans.append(Span("forward:0", "f", "forward", batch, layer, t, t + 1.0, versions[layer]))
        elif op == "backward":
            spans.append(Span("backward:0", "b", "backward", batch, layer, t, t + 1.0))
        else:
            spans.append(Span("backward:0", "b", "update", batch, layer, t, t, versions[layer]))
            versions[layer] += 1
    return Trace(
        spans,
        "simulator",
        "async-lu",
        layers=2,
        batches=3,
        warmup=warmup,
        device_slots={"f": 1, "b": 1},
        sequential_batch_s=4.0,
    )


def test_completion_times():
    # Backwards of the three batches run back to back: [2,4], [4,6], [6,8].
    assert completion_times(pipeline_trace()) == {0: 4.0, 1: 6.0, 2: 8.0}


def test_version_and_time_staleness():
    table = staleness_table(pipeline_trace())
    # Layer 0 of batch 1 is read at t=2; batch 0 updates it at t=4 (visible at the tie), before batch 1's
    # own update at t=6: staleness 1. Layer 1 of batch 1 is read at t=3, batch 0 updates it at t=3 (tie:
    # visible), so nothing lands in between: staleness 0.
    assert table.versions == [[0, 1, 1], [0, 0, 0]]
    assert table.times_s == [[4.0, 4.0, 4.0], [2.0, 2.0, 2.0]]


def test_summary_exact_values():
    summary = summarize(pipeline_trace()).to_dict()
    assert tuple(summary) == SUMMARY_KEYS
    assert summary["batches"] == 3
    assert summary["makespan_s"] == 8.0
    assert summary["throughput_batches_per_s"] == 3 / 8.0
    assert summary["speedup_vs_sequential"] == 4.0 * 3 / 8.0
    assert summary["staleness"] == {
        "mean": 1 / 3,
        "max": 1,
        "per_layer_mean": [2 / 3, 0.0],
        "per_layer_max": [1, 0],
    }
    assert summary["time_staleness_s"] == {"per_layer_mean": [4.0, 2.0]}
    assert summary["utilization"] == {"f": 6.0 / 8.0, "b": 6.0 / 8.0}
    assert summary["memory_peak_bytes"] is None and summary["accuracy"] is None


def test_warmup_drops_early_batches_from_throughput_and_staleness():
    summary = summarize(pipeline_trace(warmup=1)).to_dict()
    assert summary["throughput_batches_per_s"] == 2 / (8.0 - 4.0)
    assert summary["staleness"]["per_layer_mean"] == [1.0, 0.0]


def test_wait_spans_are_not_busy_and_slots_divide():
    trace = pipeline_trace()
    trace.spans.append(Span("forward:0", "f", "wait", None, None, 6.0, 8.0))
    trace.device_slots["b"] = 2
    assert summarize(trace).utilization == {"f": 6.0 / 8.0, "b": 6.0 / 16.0}


def test_no_speedup_without_a_sequential_reference():
    trace = dataclasses.replace(pipeline_trace(), sequential_batch_s=None)
    assert summarize(trace).speedup_vs_sequential is None
    assert summarize(trace, sequential_batch_s=4.0).speedup_vs_sequential == 4.0 * 3 / 8.0


def test_update_spans_without_forward_are_skipped():
    trace = pipeline_trace()
    trace = dataclasses.replace(
        trace, spans=[s for s in trace.spans if not (s.op == "forward" and s.batch == 2)]
    )
    assert staleness_table(trace).versions == [[0, 1], [0, 0]]


def test_empty_trace_summarizes_without_crashing():
    summary = summarize(Trace([], "executor", "sequential", layers=1, batches=0)).to_dict()
    assert summary["batches"] == 0 and summary["makespan_s"] == 0.0
    assert summary["staleness"]["per_layer_mean"] == [0.0]


@pytest.mark.parametrize("warmup", [0, 2])
def test_throughput_inverse_of_steady_time(warmup):
    summary = summarize(pipeline_trace(warmup)).to_dict()
    assert summary["throughput_batches_per_s"] > 0


def test_busy_slot_time_counts_at_most_slots_ops_at_once() -> None:
    from pdasgd.metrics import busy_slot_s

    intervals = [(0.0, 2.0), (1.0, 3.0), (1.5, 2.5)]
    assert busy_slot_s(intervals, 3) == pytest.approx(5.0)  # never more than 3 open: the sum of durations
    assert busy_slot_s(intervals, 2) == pytest.approx(4.5)  # 1.5 -> 2.0 three are open, two count
    assert busy_slot_s([(0.0, 1.0), (1.0, 2.0)], 1) == pytest.approx(2.0)  # touching intervals do not overlap
    assert busy_slot_s([], 2) == 0.0


def test_the_summary_of_several_runs_is_each_figure_s_mean_and_the_largest_maxima() -> None:
    from pdasgd.metrics import mean_summary

    first = summarize(pipeline_trace())
    slower = dataclasses.replace(
        pipeline_trace(), spans=[scaled_span(s, 2.0) for s in pipeline_trace().spans]
    )
    second = summarize(slower)
    both = mean_summary([first, second]).to_dict()
    assert both["throughput_batches_per_s"] == (3 / 8.0 + 3 / 16.0) / 2
    assert both["makespan_s"] == 12.0
    assert both["speedup_vs_sequential"] == (4.0 * 3 / 8.0 + 4.0 * 3 / 16.0) / 2
    assert both["time_staleness_s"] == {"per_layer_mean": [6.0, 3.0]}  # times double, versions do not
    assert both["staleness"] == first.to_dict()["staleness"]
    assert both["utilization"] == first.utilization and both["accuracy"] is None
    assert mean_summary([first]) is first


def scaled_span(span: Span, factor: float) -> Span:
    return dataclasses.replace(span, start_s=span.start_s * factor, end_s=span.end_s * factor)
