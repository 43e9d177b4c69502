"""Sweeps: a grid over scenario keys, each point simulated (and optionally run), written as CSV rows.

`parse_vary("workers.backward=1,2,3")` reads one `--vary` flag; values are parsed as TOML (so `2` is an
integer, `2.5` a float, `"a"` or a bare word a string). `grid(base, varies)` expands the Cartesian product
into (overrides, scenario) points, validating each. `sweep_row` flattens one point's summaries into the CSV
columns, so the CSV and the plots read the same numbers.
"""

from __future__ import annotations

import csv
import io
import itertools
import tomllib
from collections.abc import Mapping
from typing import Any

from pdasgd.scenario import Scenario, ScenarioError


def parse_value(text: str) -> Any:
    """A TOML value (`2`, `2.5`, `true`, `"x"`) or, failing that, the bare string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def parse_vary(flag: str) -> tuple[str, list[Any]]:
    """`KEY=V1,V2,...` -> (key, values)."""
    key, sep, values = flag.partition("=")
    if not sep or not key or not values:
        raise ScenarioError(f"--vary {flag!r}: expected KEY=V1,V2,... (e.g. workers.backward=1,2,3)")
    return key.strip(), [parse_value(v.strip()) for v in values.split(",")]


def grid(base: Scenario, varies: list[tuple[str, list[Any]]]) -> list[tuple[dict[str, Any], Scenario]]:
    """Every combination of the varied values, as (overrides, resolved scenario)."""
    keys = [key for key, _ in varies]
    points = []
    for values in itertools.product(*(values for _, values in varies)):
        overrides = dict(zip(keys, values, strict=True))
        try:
            points.append((overrides, base.with_overrides(overrides)))
        except ScenarioError as error:
            raise ScenarioError(f"--vary {_describe(overrides)}: {error}") from None
    return points


def _describe(overrides: Mapping[str, Any]) -> str:
    return ", ".join(f"{key}={value}" for key, value in overrides.items())


def sweep_row(
    overrides: Mapping[str, Any],
    predicted: dict[str, Any],
    theory: dict[str, Any],
    measured: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """One CSV row: the varied keys, then predicted, theory and (with --real) measured figures."""
    row = dict(overrides)
    row.update(_figures("predicted", predicted))
    row["theory_throughput_batches_per_s"] = theory.get("throughput_batches_per_s")
    row["theory_speedup_vs_sequential"] = theory.get("speedup_vs_sequential")
    row["theory_staleness_mean"] = theory.get("staleness", {}).get("mean")
    if measured is not None:
        row.update(_figures("measured", measured))
        row["measured_accuracy"] = measured.get("accuracy")
    return row


def _figures(prefix: str, summary: dict[str, Any]) -> dict[str, Any]:
    return {
        f"{prefix}_throughput_batches_per_s": summary.throughput_batches_per_s,
        f"{prefix}_speedup_vs_sequential": summary.speedup_vs_sequential,
        f"{prefix}_staleness_mean": summary.staleness.mean,
        f"{prefix}_staleness_max": summary.staleness.max,
        f"{prefix}_memory_peak_bytes": summary.memory_peak_bytes,
    }


def to_csv(rows: list[dict[str, Any]]) -> str:
    """Rows as CSV text with the union of their columns, in first-seen order."""
    columns = list(dict.fromkeys(key for row in rows for key in row))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()
