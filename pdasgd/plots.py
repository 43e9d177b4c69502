"""Plots of traces and summaries, for predicted (simulator) and measured (executor) runs alike.

- `gantt(trace, path)`: a timeline in the spirit of the paper's Figure 1: one row per worker, forward and
  backward work coloured per batch (forward light, backward dark, labelled F3 / B3 where there is room),
  updates marked by ticks, waits and all-reduces in grey and purple; idle time is the white space.
- `staleness_plot({label: Summary or Trace}, path)`: per-layer version staleness (mean, and max dashed) and
  time staleness, input layer on the left; typically async-lu against async-bu.
- `accuracy_plot({label: replay dict}, path)`: test accuracy against the trace's time and against batches,
  and the training loss against batches, of replayed schedules (`executor.replay`'s `to_dict`).

Both take what `pdasgd.trace` and `pdasgd.metrics` define, never engine internals. matplotlib is imported
inside the functions (object API on the Agg canvas: no pyplot state, no display needed), and files are
written atomically.
"""

from __future__ import annotations

import io
import os
from collections import defaultdict
from collections.abc import Mapping
from pathlib import Path

from pdasgd.io import atomic_write_bytes
from pdasgd.methods import worker_order
from pdasgd.metrics import Summary, summarize
from pdasgd.trace import Span, Trace

DEFAULT_GANTT_BATCHES = 12
OTHER_COLOURS = {"wait": "#bdbdbd", "allreduce": "#7b3294", "comm": "#4d4d4d", "mix": "#1b9e77"}


def gantt(
    trace: Trace,
    path: str | os.PathLike,
    batches: int | None = DEFAULT_GANTT_BATCHES,
    title: str | None = None,
) -> Path:
    """Draw the first `batches` batches (None: all) of `trace` as a Gantt chart PNG at `path`."""
    spans = _window(trace, batches)
    workers = worker_order(trace.method, trace.workers())
    figure, axes = _figure(width=11, height=1.2 + 0.55 * max(1, len(workers)))
    rows = {worker: row for row, worker in enumerate(workers)}
    _draw_work(axes, spans, rows)
    _draw_updates(axes, spans, rows)
    _draw_other(axes, spans, rows)
    axes.set_yticks(range(len(rows)), list(rows))
    axes.set_ylim(len(rows) - 0.4, -0.6)
    axes.set_xlabel("time (s)")
    shown = "all batches" if batches is None else f"first {batches} batches"
    axes.set_title(title or f"{trace.method} ({trace.source}), {shown}")
    axes.grid(axis="x", alpha=0.3)
    axes.legend(handles=_legend_handles(), loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8)
    return _save(figure, path)


def _window(trace: Trace, batches: int | None) -> list[Span]:
    """Spans of batches < `batches`, plus batch-less spans (waits, all-reduces) up to their last end."""
    if batches is None:
        return list(trace.spans)
    chosen = [s for s in trace.spans if s.batch is not None and s.batch < batches]
    end_s = max((s.end_s for s in chosen), default=0.0)
    return chosen + [s for s in trace.spans if s.batch is None and s.start_s < end_s]


def work_blocks(spans: list[Span], op: str) -> dict[tuple[str, int], list[tuple[float, float]]]:
    """(worker, batch) -> time blocks of `op`, consecutive layer spans merged."""
    merged: dict[tuple[str, int], list[tuple[float, float]]] = defaultdict(list)
    for span in sorted((s for s in spans if s.op == op), key=lambda s: s.start_s):
        blocks = merged[(span.worker, span.batch)]
        if blocks and span.start_s - blocks[-1][1] <= 1e-12 * max(1.0, abs(span.start_s)):
            blocks[-1] = (blocks[-1][0], span.end_s)
        else:
            blocks.append((span.start_s, span.end_s))
    return merged


def _colour(batch: int, dark: bool) -> tuple[float, float, float, float]:
    from matplotlib import colormaps

    palette = colormaps["tab20"]
    return palette((batch % 10) * 2 + (0 if dark else 1))


def _draw_work(axes, spans: list[Span], rows: dict[str, int]) -> None:
    width_s = max((s.end_s for s in spans), default=1.0) - min((s.start_s for s in spans), default=0.0)
    for op, letter, dark in (("forward", "F", False), ("backward", "B", True)):
        for (worker, batch), blocks in work_blocks(spans, op).items():
            ranges = [(start, end - start) for start, end in blocks]
            axes.broken_barh(ranges, (rows[worker] - 0.35, 0.7), facecolors=_colour(batch, dark))
            start, end = blocks[0][0], blocks[-1][1]
            if end - start > 0.025 * width_s:
                colour = "white" if dark else "black"
                axes.text(
                    (start + end) / 2,
                    rows[worker],
                    f"{letter}{batch}",
                    ha="center",
                    va="center",
                    fontsize=7,
                    color=colour,
                )


def _draw_updates(axes, spans: list[Span], rows: dict[str, int]) -> None:
    ticks = defaultdict(list)
    for span in spans:
        if span.op == "update":
            ticks[span.worker].append(span.end_s)
    for worker, times in ticks.items():
        row = rows[worker]
        axes.vlines(times, row + 0.2, row + 0.42, colors="black", linewidth=0.6)


def _draw_other(axes, spans: list[Span], rows: dict[str, int]) -> None:
    for op, colour in OTHER_COLOURS.items():
        by_worker = defaultdict(list)
        for span in spans:
            if span.op == op:
                by_worker[span.worker].append((span.start_s, span.duration_s))
        for worker, ranges in by_worker.items():
            hatch = "//" if op == "wait" else None
            axes.broken_barh(ranges, (rows[worker] - 0.35, 0.7), facecolors=colour, hatch=hatch, alpha=0.8)


def _legend_handles() -> list:
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    return [
        Patch(facecolor=_colour(0, False), label="forward (light, per batch)"),
        Patch(facecolor=_colour(0, True), label="backward (dark, per batch)"),
        Line2D([], [], color="black", marker="|", linestyle="none", markersize=8, label="update"),
        Patch(facecolor=OTHER_COLOURS["wait"], hatch="//", label="wait"),
        Patch(facecolor=OTHER_COLOURS["allreduce"], label="all-reduce"),
        Patch(facecolor=OTHER_COLOURS["mix"], label="gossip mix"),
        Patch(facecolor="white", edgecolor="#999999", label="idle"),
    ]


def staleness_plot(
    runs: Mapping[str, Summary | Trace],
    path: str | os.PathLike,
    title: str | None = None,
) -> Path:
    """Per-layer staleness of each run (a Summary or a Trace), one line per label."""
    figure, (versions, times) = _figure(width=11, height=4.2, columns=2)
    for index, (label, run) in enumerate(runs.items()):
        summary = summarize(run) if isinstance(run, Trace) else run
        mean = summary.staleness.per_layer_mean
        colour = f"C{index}"
        layers = range(len(mean))
        versions.plot(layers, mean, marker="o", color=colour, label=f"{label} mean")
        versions.plot(
            layers,
            summary.staleness.per_layer_max,
            linestyle="--",
            color=colour,
            alpha=0.7,
            label=f"{label} max",
        )
        times.plot(layers, summary.time_staleness_s.per_layer_mean, marker="o", color=colour, label=label)
    versions.set_ylabel("version staleness (updates)")
    times.set_ylabel("time staleness (s)")
    for axes in (versions, times):
        axes.set_xlabel("layer (0 = input)")
        axes.grid(alpha=0.3)
        axes.legend(fontsize=8)
        axes.set_ylim(bottom=0)
    figure.suptitle(title or "per-layer staleness")
    return _save(figure, path)


def accuracy_plot(
    runs: Mapping[str, dict], path: str | os.PathLike, target: float | None = None, title: str | None = None
) -> Path:
    """Accuracy against time and against batches, and the loss (a moving mean) against batches, one colour
    per run; a dotted line at `target` and a marker where each run first reaches it."""
    figure, (by_time, by_batch, by_loss) = _figure(width=13, height=4.0, columns=3)
    for index, (label, run) in enumerate(runs.items()):
        colour = f"C{index}"
        curve = run["curve"]
        by_time.plot([p["time_s"] for p in curve], [p["accuracy"] for p in curve], color=colour, label=label)
        by_batch.plot(
            [p["batches"] for p in curve], [p["accuracy"] for p in curve], color=colour, label=label
        )
        losses = [point["loss"] for point in run["losses"]]
        by_loss.plot(range(1, len(losses) + 1), _moving_mean(losses), color=colour, label=label)
        if run.get("time_to_target_s") is not None:
            by_time.plot(run["time_to_target_s"], target, "o", color=colour)
            by_batch.plot(run["batches_to_target"], target, "o", color=colour)
    for axes, xlabel in ((by_time, "time on the trace's axis (s)"), (by_batch, "batches completed")):
        axes.set_xlabel(xlabel)
        axes.set_ylabel("test accuracy")
        if target is not None:
            axes.axhline(target, linestyle=":", color="grey")
    by_loss.set_xlabel("batches completed")
    by_loss.set_ylabel("training loss (moving mean)")
    for axes in (by_time, by_batch, by_loss):
        axes.grid(alpha=0.3)
        axes.legend(fontsize=8)
    figure.suptitle(title or "replayed schedules: accuracy and loss")
    return _save(figure, path)


def _moving_mean(values: list[float], window: int = 20) -> list[float]:
    out, total = [], 0.0
    for index, value in enumerate(values):
        total += value
        if index >= window:
            total -= values[index - window]
        out.append(total / min(index + 1, window))
    return out


def _figure(width: float, height: float, columns: int = 1):
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), layout="constrained")
    axes = figure.subplots(1, columns)
    return figure, axes


def _save(figure, path: str | os.PathLike) -> Path:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(figure)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=120)
    return atomic_write_bytes(path, buffer.getvalue())


def sweep_plot(rows: list[dict], keys: list[str], column: str, path: str | os.PathLike) -> Path:
    """`predicted_<column>` (solid), `measured_<column>` (dotted) and `theory_<column>` (dashed) against
    the first varied key, one colour per combination of the other varied keys."""
    x_key, other_keys = keys[0], keys[1:]
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for row in rows:
        groups[tuple(row[key] for key in other_keys)].append(row)
    figure, axes = _figure(width=7, height=4.2)
    numeric = all(isinstance(row[x_key], int | float) for row in rows)
    for index, (group, members) in enumerate(groups.items()):
        label = ", ".join(f"{k}={v}" for k, v in zip(other_keys, group, strict=True)) or "predicted"
        xs = [row[x_key] if numeric else str(row[x_key]) for row in members]
        for prefix, style, marker, suffix in (
            ("predicted", "-", "o", ""),
            ("measured", ":", "s", " measured"),
            ("theory", "--", "x", " theory"),
        ):
            ys = [row.get(f"{prefix}_{column}") for row in members]
            if any(y is not None for y in ys):
                points = [(x, y) for x, y in zip(xs, ys, strict=True) if y is not None]
                axes.plot(
                    *zip(*points, strict=True),
                    linestyle=style,
                    marker=marker,
                    markersize=9 if marker == "x" else 6,
                    color=f"C{index}",
                    label=label + suffix,
                )
    axes.set_xlabel(x_key)
    axes.set_ylabel(column.replace("_", " "))
    axes.grid(alpha=0.3)
    if axes.get_legend_handles_labels()[0]:
        axes.legend(fontsize=8)
    else:  # e.g. no point reached the target accuracy
        axes.text(0.5, 0.5, "no values", transform=axes.transAxes, ha="center", color="grey")
    return _save(figure, path)
