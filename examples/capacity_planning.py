"""Capacity planning: how to train ResNet-18 on three GPUs, asked of the simulator before buying anything.

The costs are the paper's Table 9 ResNet timings: ResNet-18 at batch 128 takes 4.9 ms forward and 10.2 ms
backward per batch (beta = B/F = 2.08). They are split over ResNet-18's ten blocks (the stem, eight basic
blocks, the head) in proportion to each block's multiply-accumulates on a CIFAR-sized 32x32 input. Each block
also carries the memory it holds: its activations for one batch of 128 (kept from its forward until its
backward) and its parameters, counted twice (weights plus SGD momentum). The byte counts were measured with
`executor.networks` on `network = "resnet"`, depth 18, channels 64.

Three devices, gpu0..gpu2, each an `[[device]]` of the scenario; `[placement]` puts each worker on one. The
options compared are plain backprop on one GPU, synchronous data parallel with three replicas (ddp), and
the decoupled schedule with one forward and two backward workers (1F:2B: forward on gpu0, backwards on gpu1
and gpu2, layer-wise or block updates) or two forwards and one backward (2F:1B). For each, the table answers:

- throughput and speed-up over one GPU, from the simulator, with the closed form (pdasgd.closed_forms) beside
  it where it applies (the simulator reproduces it exactly at fixed times);
- the bottleneck: utilisation of every device, the busiest named;
- staleness (mean version staleness over layers) and peak memory (activations in flight plus live parameter
  versions, summed over devices);
- what a 5 ms link costs (`delays.handoff_s`, the forward-to-backward hand-off of the async schedules, and
  `delays.allreduce_s`, the latency of each of ddp's gradient all-reduces: DistributedDataParallel's
  25 MiB buckets, here three per step, the first ones overlapping the rest of the backward), both with the
  window
  `max_in_flight` unchanged and with the smallest window that hides the link again.

Each async option runs with the smallest window Q that still reaches its steady-state throughput,
Q = ceil((F + d + B) / max(F/n_f, B/k)); a larger window buys nothing but staleness and memory, which the
row with the default Q = 8 shows. Hogwild is left out: its workers share one copy of the parameters
lock-free, which three GPUs do not have. Note that a ddp step trains on three batches at once (one update
per 384 samples), while the async schedules update after every batch of 128.

Time to accuracy: the other half of the question is how many batches each schedule's staleness costs. The
ResNet-18 timings say nothing about accuracy, so a stand-in task answers it: digits (8x8 images, in the
package) on a ResNet-18 of 4 channels (the same ten blocks), trained by replaying each option's simulated
schedule (`pdasgd replay`: every forward reads the versions the schedule gives it). The column is the time,
on the ResNet-18 timeline, at which the stand-in first reaches 95% test accuracy (80% with --small, which
replays fewer batches). For ddp a step is three batches (one per rank) averaged into one update.

Run: `python examples/capacity_planning.py [--out DIR] [--small]`. DIR gets capacity_options.png (throughput
and memory per option), capacity_gantt.png (the timeline of the best option under the 5 ms link) and
capacity_planning.md (the table).
"""

from __future__ import annotations

import argparse
import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import simulator
from pdasgd.cli.common import format_table
from pdasgd.closed_forms import theory_for
from pdasgd.comparison import markdown_table
from pdasgd.metrics import Summary
from pdasgd.plots import gantt
from pdasgd.ranks import ddp_buckets
from pdasgd.scenario import Scenario, scenario_from_toml
from theory.speedup import cycle_time

FORWARD_S = 0.0049  # paper, Table 9: ResNet-18, batch 128
BACKWARD_S = 0.0102
LINK_S = 0.005
DEFAULT_WINDOW = 8
# the stand-in task for time to accuracy: digits on a ResNet-18 (ten blocks, as the model) of 4 channels
STAND_IN = {
    "network": "resnet",
    "depth": 18,
    "channels": 4,
    "dataset": "digits",
    "batch_size": 32,
    "lr": 0.05,
    "momentum": 0.9,
}
TARGET, SMALL_TARGET = 0.95, 0.8
ACCURACY_BATCHES, SMALL_ACCURACY_BATCHES = 600, 120
DEVICES = ("gpu0", "gpu1", "gpu2")
BLOCKS = ("stem", "block1", "block2", "block3", "block4", "block5", "block6", "block7", "block8", "head")
BLOCK_MACS_M = (1.77, 75.5, 75.5, 58.7, 75.5, 58.7, 75.5, 58.7, 75.5, 0.005)
ACTIVATION_BYTES = (
    68689920,
    134234112,
    134234112,
    83935232,
    67141632,
    42041344,
    33619968,
    21168128,
    16908288,
    267264,
)
PARAM_BYTES = (7424, 295936, 295936, 920576, 1181696, 3676160, 4722688, 14692352, 18882560, 20520)
GIB = 2**30
DPI = 120  # as pdasgd.plots


@dataclass(frozen=True)
class Option:
    """One way to use the three GPUs: a method, its workers and where they run."""

    label: str
    method: str
    workers: dict[str, int]
    placement: dict[str, list[str]]


OPTIONS = (
    Option("sequential (1 GPU)", "sequential", {}, {"workers": ["gpu0"]}),
    Option("ddp x3", "ddp", {"replicas": 3}, {"workers": list(DEVICES)}),
    Option(
        "async-lu 1F:2B",
        "async-lu",
        {"forward": 1, "backward": 2},
        {"forward": ["gpu0"], "backward": ["gpu1", "gpu2"]},
    ),
    Option(
        "async-bu 1F:2B",
        "async-bu",
        {"forward": 1, "backward": 2},
        {"forward": ["gpu0"], "backward": ["gpu1", "gpu2"]},
    ),
    Option(
        "async-lu 2F:1B",
        "async-lu",
        {"forward": 2, "backward": 1},
        {"forward": ["gpu0", "gpu1"], "backward": ["gpu2"]},
    ),
)


@dataclass(frozen=True)
class Row:
    """One line of the table: an option at a link delay and window, simulated, with the theory beside."""

    label: str
    window: int | None
    link_s: float
    scenario: Scenario
    summary: Summary
    theory: dict[str, Any]
    to_target: Any = None  # executor.replay.CurvePoint where the stand-in first reaches the target

    @property
    def throughput(self) -> float:
        return self.summary.throughput_batches_per_s

    @property
    def memory_gib(self) -> float:
        return self.summary.memory_peak_bytes / GIB

    @property
    def staleness(self) -> float:
        return self.summary.staleness.mean


def base_toml(batches: int, warmup: int) -> str:
    """The shared part of every option's scenario: ResNet-18's blocks, the three GPUs, the run length."""
    total = sum(BLOCK_MACS_M)
    lines = ['name = "resnet18-3gpu"', 'method = "sequential"', "", "[run]"]
    lines += [f"batches = {batches}", f"warmup = {warmup}", ""]
    for name in DEVICES:
        lines += ["[[device]]", f'name = "{name}"', ""]
    for name, macs, act, par in zip(BLOCKS, BLOCK_MACS_M, ACTIVATION_BYTES, PARAM_BYTES, strict=True):
        lines += [
            "[[model.layer]]",
            f'name = "{name}"',
            f"forward_s = {FORWARD_S * macs / total!r}",
            f"backward_s = {BACKWARD_S * macs / total!r}",
            f"activation_bytes = {act}",
            f"param_bytes = {2 * par}  # weights + momentum",
            "",
        ]
    return "\n".join(lines)


def smallest_window(workers: dict[str, int], link_s: float) -> int:
    """The smallest max_in_flight that keeps the async schedule at max(F/n_f, B/k) per batch."""
    forward, backward = workers["forward"], workers["backward"]
    per_batch_s = cycle_time(FORWARD_S, BACKWARD_S, forward, backward, link_s)
    return math.ceil((FORWARD_S + link_s + BACKWARD_S) / per_batch_s - 1e-9)


def option_scenario(base: Scenario, option: Option, link_s: float, window: int | None) -> Scenario:
    overrides: dict[str, Any] = {
        "name": option.label,
        "method": option.method,
        "workers": dict(option.workers),
        "placement": option.placement,
        "delays.handoff_s": link_s,
        "delays.allreduce_s": link_s,
    }
    if window is not None:
        overrides["workers"]["max_in_flight"] = window
    return base.with_overrides(overrides)


def evaluate(base: Scenario, option: Option, link_s: float, window: int | None) -> Row:
    scenario = option_scenario(base, option, link_s, window)
    summary = simulator.simulate_summary(scenario)
    return Row(option.label, window, link_s, scenario, summary, theory_for(scenario))


def option_rows(base: Scenario, option: Option) -> list[Row]:
    """No link; the 5 ms link at the same window; and at the window that hides it, if that differs."""
    if option.method == "sequential":
        return [evaluate(base, option, 0.0, None)]
    if option.method == "ddp":
        return [evaluate(base, option, 0.0, None), evaluate(base, option, LINK_S, None)]
    window = smallest_window(option.workers, 0.0)
    rows = [evaluate(base, option, 0.0, window), evaluate(base, option, LINK_S, window)]
    wider = smallest_window(option.workers, LINK_S)
    if wider != window:
        rows.append(evaluate(base, option, LINK_S, wider))
    return rows


def plan(batches: int, warmup: int) -> list[Row]:
    """Every row of the table, in the order printed."""
    base = scenario_from_toml(base_toml(batches, warmup), origin="<capacity planning>")
    rows = [row for option in OPTIONS for row in option_rows(base, option)]
    rows.append(evaluate(base, OPTIONS[2], 0.0, DEFAULT_WINDOW))
    return rows


def with_time_to_accuracy(row: Row, batches: int, target: float) -> Row:
    """`row` with the moment the stand-in task first reaches `target` on its simulated schedule."""
    from executor.replay import replay

    scenario = row.scenario.with_overrides({"train": STAND_IN, "run.batches": batches, "run.warmup": 0})
    result = replay(scenario, simulator.simulate(scenario), eval_points=batches // 15)
    return dataclasses.replace(row, to_target=result.time_to(target))


def busiest(utilization: dict[str, float]) -> str:
    """The busiest device(s): every device within half a percent of the maximum."""
    top = max(utilization.values())
    names = [name for name, value in utilization.items() if value >= top - 0.005]
    return f"{'+'.join(names)} {100 * top:.0f}%"


HEADERS = [
    "option",
    "Q",
    "link ms",
    "theory b/s",
    "sim b/s",
    "speed-up",
    "bound by",
    "busiest",
    "util % gpu0/1/2",
    "theory stale",
    "sim stale",
    "memory GiB",
    "to target s",
    "batches",
]


def bound_by(row: Row) -> str:
    """What limits throughput; async: the largest term of the cycle time max(F/n_f, B/k, (F+d+B)/Q)."""
    method, workers = row.scenario.method, row.scenario.workers
    if method == "sequential":
        return "one device"
    if method == "ddp":
        return "compute + all-reduce" if row.link_s > 0 else "compute"
    terms = {
        "forward": FORWARD_S / workers.forward,
        "backward": BACKWARD_S / workers.backward,
        "window Q": (FORWARD_S + row.link_s + BACKWARD_S) / workers.max_in_flight,
    }
    top = max(terms.values())
    return "+".join(name for name, value in terms.items() if value >= top * (1 - 1e-9))


def table_row(row: Row) -> list[Any]:
    util = row.summary.utilization
    stale = row.theory.get("staleness", {}).get("mean")
    return [
        row.label,
        row.window,
        round(1000 * row.link_s, 1),
        row.theory.get("throughput_batches_per_s"),
        row.throughput,
        row.summary.speedup_vs_sequential,
        bound_by(row),
        busiest(util),
        "/".join(f"{100 * util[name]:.0f}" for name in DEVICES),
        stale,
        row.staleness,
        round(row.memory_gib, 2),
        row.to_target.time_s if row.to_target else "not reached",
        row.to_target.batches if row.to_target else "-",
    ]


def best_under_link(rows: list[Row]) -> Row:
    """Highest throughput with the 5 ms link; ties go to the lower staleness, then the lower memory."""
    linked = [row for row in rows if row.link_s > 0]
    return max(linked, key=lambda row: (round(row.throughput, 6), -row.staleness, -row.memory_gib))


def options_plot(rows: list[Row], path: Path) -> Path:
    """Horizontal bars per row: throughput (theory as crosses) and peak memory."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(11, 0.35 * len(rows) + 1.6), layout="constrained")
    speed, memory = figure.subplots(1, 2, sharey=True)
    labels = [f"{r.label}, Q={r.window}, link {1000 * r.link_s:.0f} ms" for r in rows]
    colours = ["C1" if r.link_s > 0 else "C0" for r in rows]
    places = range(len(rows))
    speed.barh(places, [r.throughput for r in rows], color=colours)
    theory = [(i, r.theory.get("throughput_batches_per_s")) for i, r in enumerate(rows)]
    theory = [(i, t) for i, t in theory if t is not None]
    speed.plot([t for _, t in theory], [i for i, _ in theory], "kx")
    memory.barh(places, [r.memory_gib for r in rows], color=colours)
    speed.set_yticks(list(places), [label.replace(", Q=None", "") for label in labels], fontsize=8)
    speed.invert_yaxis()
    speed.set_xlabel("throughput (batches of 128 per s)")
    memory.set_xlabel("peak memory, all devices (GiB)")
    for axes in (speed, memory):
        axes.grid(axis="x", alpha=0.3)
    figure.suptitle("ResNet-18 on 3 GPUs: blue no link, orange a 5 ms link, x the closed-form theory")
    return save_figure(figure, path)


def save_figure(figure: Any, path: Path) -> Path:
    """Write a matplotlib Figure as PNG at the resolution pdasgd.plots uses."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(figure)
    figure.savefig(path, format="png", dpi=DPI)
    return path


def where(row: Row) -> str:
    """Which devices each role runs on, e.g. `forward on gpu0, backward on gpu1+gpu2`."""
    roles: dict[str, list[str]] = {}
    for worker, device in row.scenario.device_of().items():
        roles.setdefault(worker.partition(":")[0], []).append(device)
    return ", ".join(f"{role} on {'+'.join(devices)}" for role, devices in roles.items())


def write_outputs(rows: list[Row], out: Path, batches: int) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    best = best_under_link(rows)
    trace = simulator.simulate(best.scenario)
    title = f"best under a 5 ms link: {best.label}, Q={best.window}, {best.throughput:.0f} batches/s"
    title += f"; {where(best)}"
    table = markdown_table(HEADERS, [table_row(row) for row in rows])
    (out / "capacity_planning.md").write_text(table + "\n", encoding="utf-8")
    return [
        options_plot(rows, out / "capacity_options.png"),
        gantt(trace, out / "capacity_gantt.png", batches=min(12, batches), title=title),
        out / "capacity_planning.md",
    ]


def find(rows: list[Row], label: str, link_s: float, window: int | None = None) -> Row:
    """The row of `label` at `link_s` (and `window`, if given; else the first such row)."""
    return next(r for r in rows if r.label == label and r.link_s == link_s and window in (None, r.window))


def link_sentence(rows: list[Row], label: str) -> str:
    """What the link costs one option: at the same window, and at the window that hides it."""
    before = find(rows, label, 0.0)
    same = find(rows, label, LINK_S, before.window)
    after = [r for r in rows if r.label == label and r.link_s == LINK_S][-1]
    text = f"{label}: {before.throughput:.0f} -> {same.throughput:.0f} batches/s at Q={before.window}"
    if after is not same:
        text += (
            f"; Q={after.window} wins it back for {after.staleness - before.staleness:+.2f} staleness, "
            f"{after.memory_gib - before.memory_gib:+.2f} GiB"
        )
    return text


def bucket_count(row: Row) -> int:
    """DistributedDataParallel's gradient buckets for the scenario's layers (pdasgd.ranks)."""
    layers = row.scenario.model.layers
    return len(ddp_buckets([layer.param_bytes for layer in layers], row.scenario.distributed.bucket_bytes))


def conclusions(rows: list[Row]) -> list[str]:
    """A few sentences computed from the rows."""
    sequential, ddp, linked = rows[0], find(rows, "ddp x3", 0.0), find(rows, "ddp x3", LINK_S)
    two_one = find(rows, "async-lu 2F:1B", 0.0).summary.utilization
    best, fastest = best_under_link(rows), max(rows, key=lambda row: row.throughput)
    lu, bu = find(rows, "async-lu 1F:2B", 0.0), find(rows, "async-bu 1F:2B", 0.0)
    wide = find(rows, "async-lu 1F:2B", 0.0, DEFAULT_WINDOW)
    beta = BACKWARD_S / FORWARD_S
    return [
        f"beta = B/F = {beta:.2f}: 1F:2B is nearly balanced (B/2 = {500 * BACKWARD_S:.1f} ms per batch vs "
        f"F = {1000 * FORWARD_S:.1f} ms); 2F:1B leaves its forward GPUs at "
        f"{100 * two_one['gpu0']:.0f}% and {100 * two_one['gpu1']:.0f}%.",
        f"fastest without a link: {fastest.label} at {fastest.throughput:.1f} batches/s "
        f"({fastest.throughput / sequential.throughput:.2f}x one GPU); async-lu 1F:2B "
        f"{lu.throughput:.1f} ({lu.throughput / sequential.throughput:.2f}x).",
        f"a {1000 * LINK_S:.0f} ms link: ddp x3 {ddp.throughput:.0f} -> {linked.throughput:.0f} batches/s "
        f"({bucket_count(linked)} bucket all-reduces per step); {link_sentence(rows, 'async-lu 1F:2B')}.",
        f"same throughput, less staleness: LU {lu.staleness:.2f} vs BU {bu.staleness:.2f} versions (Q="
        f"{lu.window}); the default Q={DEFAULT_WINDOW} adds nothing but staleness ({wide.staleness:.2f}) and "
        f"memory ({wide.memory_gib:.2f} GiB vs {lu.memory_gib:.2f}).",
        f"best under the link: {best.label}, Q={best.window}: {best.throughput:.1f} batches/s "
        f"({best.throughput / sequential.throughput:.2f}x), staleness {best.staleness:.2f}, "
        f"{best.memory_gib:.2f} GiB, busiest {busiest(best.summary.utilization)}.",
    ]


def accuracy_sentence(rows: list[Row], target: float) -> str:
    """Which option reaches the target first on the stand-in task, against sequential."""
    reached = [row for row in rows if row.to_target is not None]
    if not reached:
        return f"no option reaches {target:.0%} on the stand-in task within the replayed batches."
    first = min(reached, key=lambda row: row.to_target.time_s)
    sequential = rows[0].to_target
    versus = (
        f", {sequential.time_s / first.to_target.time_s:.2f}x sooner than one GPU "
        f"({sequential.batches} batches)"
        if sequential is not None
        else ""
    )
    return (
        f"first to {target:.0%} on the stand-in task: {first.label}, Q={first.window}, link "
        f"{1000 * first.link_s:.0f} ms, after {first.to_target.time_s:.2f} s and {first.to_target.batches} "
        f"batches{versus}."
    )


def main(argv: list[str] | None = None) -> list[Row]:
    """Print the capacity-planning table, write the plots under --out; returns the rows."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("capacity-planning"), help="folder for plots")
    parser.add_argument("--small", action="store_true", help="fewer batches (what the tests run)")
    args = parser.parse_args(argv)
    batches, warmup = (300, 30) if args.small else (3000, 120)  # warmup: whole ddp steps of 3 batches
    target, replayed = (SMALL_TARGET, SMALL_ACCURACY_BATCHES) if args.small else (TARGET, ACCURACY_BATCHES)
    rows = [with_time_to_accuracy(row, replayed, target) for row in plan(batches, warmup)]
    print(f"ResNet-18, batch 128: F = {1000 * FORWARD_S:.1f} ms, B = {1000 * BACKWARD_S:.1f} ms, 3 GPUs\n")
    print(format_table(HEADERS, [table_row(row) for row in rows]))
    print(
        f"\nto target: seconds on the ResNet-18 timeline until the stand-in task (digits on a 4-channel "
        f"ResNet-18, replayed on each simulated schedule, {replayed} batches) first reaches {target:.0%} "
        "test accuracy; a ddp step averages its three batches' gradients into one update.\n"
    )
    print("\n".join(conclusions(rows) + [accuracy_sentence(rows, target)]))
    for path in write_outputs(rows, args.out, batches):
        print(f"wrote {path}")
    return rows


if __name__ == "__main__":
    main()
