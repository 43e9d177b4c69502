"""The compare report: a markdown page with the side-by-side table and the plots, written atomically.

`write_report(out_dir, documents, plots)` takes one or more comparison documents (pdasgd.comparison), keyed
by a label (the method, usually), and the plot files already in `out_dir`, and writes `report.md` there.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pdasgd.comparison import COLUMNS, comparison_rows, markdown_table
from pdasgd.io import atomic_write_text

SUMMARY_COLUMNS = [
    "run",
    "batches/s predicted",
    "measured",
    "error",
    "staleness predicted",
    "measured",
    "error",
    "accuracy",
]


def summary_rows(documents: Mapping[str, dict[str, Any]]) -> list[list[Any]]:
    """One line per comparison: throughput and mean staleness, predicted vs measured, and accuracy."""
    rows = []
    for label, document in documents.items():
        p, m, e = document["predicted"], document["measured"], document["error"]
        rows.append(
            [
                label,
                p["throughput_batches_per_s"],
                m["throughput_batches_per_s"],
                _pct(e["throughput_rel"]),
                p["staleness"]["mean"],
                m["staleness"]["mean"],
                f"{e['staleness_mean_abs']:+.2f}",
                m["accuracy"],
            ]
        )
    return rows


def interval_lines(document: dict[str, Any]) -> list[str]:
    """The prediction's and the measurement's 95% intervals, whether they meet, the profile's precision
    and any warning, as markdown lines."""
    intervals = document.get("intervals")
    if not intervals:
        return []
    lines = ["| quantity | predicted (interval) | measured (interval) | intervals meet | predicted inside |"]
    lines.append("|---|---|---|---|---|")
    for key, label in (("throughput", "throughput (batches/s)"), ("staleness", "mean staleness")):
        row = intervals[key]
        lines.append(
            f"| {label} | {_interval(row['predicted'])} | {_interval(row['measured'])} | "
            f"{'yes' if row['consistent'] else 'no'} | {'yes' if row['inside'] else 'no'} |"
        )
    over = intervals.get("measured_interval")
    notes = [*document.get("profile", {}).get("notes", []), *([f"measured: {over}"] if over else [])]
    notes += intervals["warnings"]
    return [*lines, "", *[f"- {note}" for note in notes], ""]


def _interval(row: dict[str, float]) -> str:
    return f"{row['value']:.4g} ({row['low']:.4g} to {row['high']:.4g})"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:+.1f}%"


def render_report(
    title: str, documents: Mapping[str, dict[str, Any]], plots: Mapping[str, str], notes: list[str]
) -> str:
    """The markdown text of the report."""
    parts = [f"# {title}", ""]
    parts += [f"- {note}" for note in notes] + [""]
    parts += ["## Summary", "", markdown_table(SUMMARY_COLUMNS, summary_rows(documents)), ""]
    for label, document in documents.items():
        parts += [f"## {label}", "", markdown_table(COLUMNS, comparison_rows(document)), ""]
        parts += interval_lines(document)
        theory_note = document["theory"].get("note")
        if theory_note:
            parts += [f"Theory column: {theory_note}.", ""]
    for caption, file_name in plots.items():
        parts += [f"### {caption}", "", f"![{caption}]({file_name})", ""]
    return "\n".join(parts)


def write_report(
    out_dir: str | os.PathLike,
    title: str,
    documents: Mapping[str, dict[str, Any]],
    plots: Mapping[str, str],
    notes: list[str],
) -> Path:
    return atomic_write_text(Path(out_dir) / "report.md", render_report(title, documents, plots, notes))
