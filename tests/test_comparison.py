"""Errors of predictions against measurements, and the comparison table."""

from __future__ import annotations

import pytest

from pdasgd.comparison import COLUMNS, compare_summaries, comparison_rows, markdown_table, relative_error


def summary(throughput, stale, times, util, memory, speedup=None):
    return {
        "source": "x",
        "method": "async-lu",
        "batches": 10,
        "makespan_s": 1.0,
        "throughput_batches_per_s": throughput,
        "speedup_vs_sequential": speedup,
        "staleness": {
            "mean": sum(stale) / len(stale),
            "max": max(stale),
            "per_layer_mean": stale,
            "per_layer_max": stale,
        },
        "time_staleness_s": {"per_layer_mean": times},
        "utilization": util,
        "memory_peak_bytes": memory,
        "accuracy": None,
    }


def test_relative_error_edge_cases():
    assert relative_error(11.0, 10.0) == pytest.approx(0.1)
    assert relative_error(None, 10.0) is None
    assert relative_error(1.0, 0.0) is None


def test_errors_are_relative_except_version_staleness():
    predicted = summary(11.0, [2.0, 1.0], [0.2, 0.1], {"cpu": 0.9, "sim-only": 1.0}, 1100, speedup=1.9)
    measured = summary(10.0, [2.5, 0.5], [0.25, 0.1], {"cpu": 1.0}, 1000, speedup=2.0)
    error = compare_summaries(predicted, measured, {"throughput_batches_per_s": 12.0})["error"]
    assert error["throughput_rel"] == pytest.approx(0.1)
    assert error["speedup_rel"] == pytest.approx(-0.05)
    assert error["staleness_mean_abs"] == pytest.approx(0.0)
    assert error["staleness_per_layer_abs"] == pytest.approx([-0.5, 0.5])
    assert error["time_staleness_per_layer_rel"] == pytest.approx([-0.2, 0.0])
    assert error["utilization_rel"] == {"cpu": pytest.approx(-0.1)}
    assert error["memory_peak_rel"] == pytest.approx(0.1)


def test_table_rows_and_markdown():
    predicted = summary(11.0, [2.0, 1.0], [0.2, 0.1], {"cpu": 0.9}, None)
    measured = summary(10.0, [2.5, 0.5], [0.25, 0.1], {"cpu": 1.0}, None)
    document = compare_summaries(
        predicted,
        measured,
        {"throughput_batches_per_s": 12.0, "staleness": {"mean": 1.5, "per_layer_mean": [2.0, 1.0]}},
    )
    rows = comparison_rows(document)
    assert rows[0] == ["throughput (batches/s)", 12.0, 11.0, 10.0, "+10.0%"]
    assert rows[3] == ["  layer 0 staleness", 2.0, 2.0, 2.5, "-0.50"]
    text = markdown_table(COLUMNS, rows)
    assert text.splitlines()[0] == "| quantity | theory | predicted | measured | error |"
    assert "| peak memory (bytes) | - | - | - | - |" in text
