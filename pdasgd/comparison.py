"""Predicted vs measured: the errors of a prediction, and the side-by-side table and report.

`compare_summaries(predicted, measured, theory)` takes two summaries (pdasgd.metrics) and the closed forms
(pdasgd.closed_forms) and returns the `compare --json` document: the three inputs and an `error` section.
Errors are relative, (predicted - measured) / measured, for throughput, speed-up, time staleness,
utilisation and memory, and absolute, predicted - measured in versions, for version staleness. A figure
missing on either side gives a null error.
"""

from __future__ import annotations

import math
from typing import Any


def relative_error(predicted: float | None, measured: float | None) -> float | None:
    """(predicted - measured) / measured, or None when either is missing or measured is 0."""
    if predicted is None or measured is None or measured == 0 or not math.isfinite(measured):
        return None
    return (predicted - measured) / measured


def _layer_errors(predicted: list[float], measured: list[float], relative: bool) -> list[float | None]:
    if len(predicted) != len(measured):
        return []
    if relative:
        return [relative_error(p, m) for p, m in zip(predicted, measured, strict=True)]
    return [p - m for p, m in zip(predicted, measured, strict=True)]


def errors(predicted: dict[str, Any], measured: dict[str, Any]) -> dict[str, Any]:
    """The error section of a comparison."""
    stale_p, stale_m = predicted["staleness"], measured["staleness"]
    time_p = predicted["time_staleness_s"]["per_layer_mean"]
    time_m = measured["time_staleness_s"]["per_layer_mean"]
    devices = [d for d in predicted["utilization"] if d in measured["utilization"]]
    return {
        "throughput_rel": relative_error(
            predicted["throughput_batches_per_s"], measured["throughput_batches_per_s"]
        ),
        "speedup_rel": relative_error(predicted["speedup_vs_sequential"], measured["speedup_vs_sequential"]),
        "staleness_mean_abs": stale_p["mean"] - stale_m["mean"],
        "staleness_per_layer_abs": _layer_errors(stale_p["per_layer_mean"], stale_m["per_layer_mean"], False),
        "time_staleness_per_layer_rel": _layer_errors(time_p, time_m, True),
        "utilization_rel": {
            d: relative_error(predicted["utilization"][d], measured["utilization"][d]) for d in devices
        },
        "memory_peak_rel": relative_error(predicted["memory_peak_bytes"], measured["memory_peak_bytes"]),
    }


def compare_summaries(
    predicted: dict[str, Any], measured: dict[str, Any], theory: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The `compare --json` document."""
    return {
        "predicted": predicted,
        "measured": measured,
        "theory": theory or {},
        "error": errors(predicted, measured),
    }


def comparison_rows(document: dict[str, Any]) -> list[list[Any]]:
    """Rows of quantity, theory, predicted, measured, error for a text or markdown table."""
    p, m, t, e = document["predicted"], document["measured"], document["theory"], document["error"]
    t_stale = t.get("staleness", {})
    rows = [
        [
            "throughput (batches/s)",
            t.get("throughput_batches_per_s"),
            p["throughput_batches_per_s"],
            m["throughput_batches_per_s"],
            _pct(e["throughput_rel"]),
        ],
        [
            "speed-up vs sequential",
            t.get("speedup_vs_sequential"),
            p["speedup_vs_sequential"],
            m["speedup_vs_sequential"],
            _pct(e["speedup_rel"]),
        ],
        [
            "mean staleness (versions)",
            t_stale.get("mean"),
            p["staleness"]["mean"],
            m["staleness"]["mean"],
            _abs(e["staleness_mean_abs"]),
        ],
    ]
    layers = range(len(p["staleness"]["per_layer_mean"]))
    for layer, error in zip(layers, e["staleness_per_layer_abs"] or [None] * len(layers), strict=False):
        theory_layer = t_stale.get("per_layer_mean", [None] * (layer + 1))
        rows.append(
            [
                f"  layer {layer} staleness",
                theory_layer[layer] if layer < len(theory_layer) else None,
                p["staleness"]["per_layer_mean"][layer],
                _at(m["staleness"]["per_layer_mean"], layer),
                _abs(error),
            ]
        )
    for layer, error in enumerate(e["time_staleness_per_layer_rel"]):
        rows.append(
            [
                f"  layer {layer} time staleness (s)",
                None,
                p["time_staleness_s"]["per_layer_mean"][layer],
                m["time_staleness_s"]["per_layer_mean"][layer],
                _pct(error),
            ]
        )
    for device, error in e["utilization_rel"].items():
        rows.append(
            [f"utilisation {device}", None, p["utilization"][device], m["utilization"][device], _pct(error)]
        )
    rows.append(
        [
            "peak memory (bytes)",
            None,
            p["memory_peak_bytes"],
            m["memory_peak_bytes"],
            _pct(e["memory_peak_rel"]),
        ]
    )
    return rows


COLUMNS = ["quantity", "theory", "predicted", "measured", "error"]


def _at(values: list, index: int) -> Any:
    return values[index] if index < len(values) else None


def _pct(value: float | None) -> str | None:
    return None if value is None else f"{100 * value:+.1f}%"


def _abs(value: float | None) -> str | None:
    return None if value is None else f"{value:+.2f}"


def markdown_table(headers: list[str], rows: list[list[Any]]) -> str:
    """A GitHub-flavoured markdown table; floats get 4 significant digits, None shows as '-'."""

    def cell(value: Any) -> str:
        if value is None:
            return "-"
        return f"{value:.4g}" if isinstance(value, float) else str(value)

    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)
