"""Does the theory hold? The closed forms against the simulator, and both against real PyTorch training.

Part 1, theory vs simulator, exact. On a grid of backward/forward ratios beta, backward workers k, forward
workers n_f and hand-off delays d, with fixed op times, a device per worker and no in-flight bound (the
closed forms' assumptions), the SimPy engine (not the fast path, which is itself the recursion of
docs/theory.md) must reproduce, to float precision:

- the makespan T2 = B + d + max over q of [(floor((b-1-qk)/n_f) + 1) F + q B] (`theory.speedup.async_time`);
- in the forward-bound regime (n_f = 1, B <= kF), the version staleness of every layer and every
  steady-state batch, ceil(Delta_m / F) - 1 (`theory.staleness.version_staleness`), for LU and BU alike.

It prints the n_f = 1 part of the grid and the largest absolute difference over all of it (0 is the
only acceptable answer).

Part 2, theory vs simulator vs executor, approximate. A small MLP on scikit-learn's digits is trained for
real with async-lu and async-bu, one and two backward threads, through `pdasgd compare`'s `compare_one`:
profile the layers, run, then simulate the same schedule on the machine the run used (all workers share its
cores, with the op-time noise the profile saw). The theory assumes a device per worker and fixed times, so
on a small CPU it is an upper bound on throughput, while the simulator is the prediction; the table shows
throughput, speed-up over a measured sequential run and mean version staleness from all three, with the
errors of the two predictions against the measurement (relative for throughput and speed-up, absolute in
versions for staleness). Measured figures depend on the machine and on what else runs on it.

Run: `python examples/validate_theory.py [--out DIR] [--small]`. DIR gets validate_theory.png (throughput
and staleness, theory / predicted / measured per configuration) and validate_theory.md (both tables).
"""

from __future__ import annotations

import argparse
import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import simulator
from pdasgd.cli.common import format_table
from pdasgd.comparison import markdown_table, relative_error
from pdasgd.scenario import Scenario, scenario_from_toml
from theory.speedup import async_time
from theory.staleness import uniform_layers, version_staleness

GRID = {"beta": (0.5, 1.0, 2.0, 3.0), "k": (1, 2, 3), "n_f": (1, 2), "handoff_s": (0.0, 0.37)}
GRID_LAYERS = 4
CONFIGS = (("async-lu", 1), ("async-lu", 2), ("async-bu", 1), ("async-bu", 2))
DPI = 120  # as pdasgd.plots

MLP_TOML = """\
name = "validate-mlp"
method = "sequential"

[workers]
forward = 1
backward = 1
max_in_flight = 4

[train]
network = "mlp"
width = {width}
depth = {depth}
dataset = "digits"
batch_size = {batch_size}
lr = 0.05

[run]
batches = {batches}
warmup = {warmup}
seed = 0
"""

SIZES = {
    "full": {"width": 512, "depth": 4, "batch_size": 128, "batches": 300, "warmup": 30, "grid_batches": 200},
    "small": {"width": 64, "depth": 2, "batch_size": 32, "batches": 40, "warmup": 8, "grid_batches": 40},
}


# --- part 1: theory vs simulator, fixed times ---------------------------------------------------------


@dataclass(frozen=True)
class GridPoint:
    """One fixed-time scenario of the grid, its simulated and closed-form makespan and staleness."""

    beta: float
    k: int
    n_f: int
    handoff_s: float
    makespan_sim: dict[str, float]  # method -> makespan
    makespan_theory: float
    staleness_sim: dict[str, list[float]]  # method -> per-layer max and mean, concatenated
    staleness_theory: dict[str, list[int]]  # method -> per layer; empty when not forward-bound

    @property
    def makespan_error(self) -> float:
        return max(abs(value - self.makespan_theory) for value in self.makespan_sim.values())

    @property
    def staleness_error(self) -> float:
        """Largest |simulated - theory| over methods, layers and (mean, max); 0 when theory is silent."""
        gaps = [
            abs(value - theory)
            for method, per_layer in self.staleness_theory.items()
            for value, theory in zip(self.staleness_sim[method], per_layer * 2, strict=True)
        ]
        return max(gaps, default=0.0)


def grid_scenario(method: str, beta: float, k: int, n_f: int, handoff_s: float, batches: int) -> Scenario:
    """Uniform layers, F = 1, no in-flight bound, a device per worker (the closed forms' assumptions)."""
    text = f"""
        name = "grid"
        method = "{method}"
        [model]
        layers = {GRID_LAYERS}
        forward_s = 1.0
        beta = {beta}
        [workers]
        forward = {n_f}
        backward = {k}
        max_in_flight = {batches}
        [delays]
        handoff_s = {handoff_s}
        [run]
        batches = {batches}
        warmup = {batches // 2}
    """
    return scenario_from_toml("\n".join(line.strip() for line in text.splitlines()))


def grid_point(beta: float, k: int, n_f: int, handoff_s: float, batches: int) -> GridPoint:
    makespans, simulated, theory = {}, {}, {}
    forward_bound = n_f == 1 and beta <= k
    for method in ("async-lu", "async-bu"):
        scenario = grid_scenario(method, beta, k, n_f, handoff_s, batches)
        summary = simulator.simulate_summary(scenario, engine="simpy")
        stale = summary.staleness
        makespans[method] = summary.makespan_s
        simulated[method] = [*stale.per_layer_mean, *stale.per_layer_max]
        if forward_bound:
            forward, backward = uniform_layers(1.0, GRID_LAYERS), uniform_layers(beta, GRID_LAYERS)
            theory[method] = version_staleness(forward, backward, k, method == "async-lu", handoff_s)
    return GridPoint(
        beta,
        k,
        n_f,
        handoff_s,
        makespans,
        async_time(batches, 1.0, beta, k, n_f, handoff_s),
        simulated,
        theory,
    )


def theory_grid(batches: int) -> list[GridPoint]:
    """Every point of GRID, simulated with the SimPy engine."""
    values = itertools.product(GRID["beta"], GRID["k"], GRID["n_f"], GRID["handoff_s"])
    return [grid_point(beta, k, n_f, d, batches) for beta, k, n_f, d in values]


GRID_HEADERS = ["beta", "k", "d", "T2 theory", "T2 sim LU, BU", "LU theory", "LU sim", "BU theory", "BU sim"]


def grid_row(point: GridPoint) -> list[Any]:
    layers = slice(0, GRID_LAYERS)

    def theory(method: str) -> list[int] | str:
        return point.staleness_theory.get(method, "backward-bound")

    return [
        point.beta,
        point.k,
        point.handoff_s,
        point.makespan_theory,
        list(point.makespan_sim.values()),
        theory("async-lu"),
        point.staleness_sim["async-lu"][layers],
        theory("async-bu"),
        point.staleness_sim["async-bu"][layers],
    ]


# --- part 2: theory vs simulator vs executor, a real MLP -----------------------------------------------


QUANTITIES = (
    ("throughput (batches/s)", ("throughput_batches_per_s",), "rel"),
    ("speed-up vs sequential", ("speedup_vs_sequential",), "rel"),
    ("mean staleness (versions)", ("staleness", "mean"), "abs"),
)


def pick(summary: dict[str, Any], keys: tuple[str, ...]) -> float | None:
    for key in keys:
        if summary is None:
            return None
        summary = summary.get(key)
    return summary


def error(predicted: float | None, measured: float | None, kind: str) -> float | None:
    if kind == "rel":
        return relative_error(predicted, measured)
    return None if predicted is None or measured is None else predicted - measured


@dataclass(frozen=True)
class RealRow:
    """One quantity of one real configuration: theory, simulator prediction, measurement, errors."""

    config: str
    quantity: str
    theory: float | None
    predicted: float | None
    measured: float | None
    kind: str  # "rel" or "abs"

    @property
    def predicted_error(self) -> float | None:
        return error(self.predicted, self.measured, self.kind)

    @property
    def theory_error(self) -> float | None:
        return error(self.theory, self.measured, self.kind)


def real_rows(config: str, document: dict[str, Any]) -> list[RealRow]:
    sides = document["theory"], document["predicted"], document["measured"]
    return [
        RealRow(config, name, *(pick(side, keys) for side in sides), kind) for name, keys, kind in QUANTITIES
    ]


def real_comparisons(size: dict[str, int]) -> list[RealRow]:
    """Sequential reference, then every configuration in CONFIGS, profiled, run and simulated."""
    from pdasgd.cli.compare import compare_one

    base = scenario_from_toml(MLP_TOML.format(**size), origin="<validate_theory>")
    reference = compare_one(base)
    sequential_s = reference.measured.sequential_batch_s
    rows = []
    for method, k in CONFIGS:
        scenario = base.with_overrides({"method": method, "workers.backward": k})
        rows += real_rows(f"{method} k={k}", compare_one(scenario, sequential_s).document)
    return rows


REAL_HEADERS = ["configuration", "quantity", "theory", "predicted", "measured", "pred. error", "theory error"]


def real_row(row: RealRow) -> list[Any]:
    def shown(value: float | None) -> str | None:
        if value is None:
            return None
        return f"{100 * value:+.1f}%" if row.kind == "rel" else f"{value:+.2f}"

    cells = [row.theory, row.predicted, row.measured, shown(row.predicted_error), shown(row.theory_error)]
    return [row.config, row.quantity, *cells]


def real_plot(rows: list[RealRow], path: Path) -> Path:
    """Grouped bars: theory, predicted and measured throughput and mean staleness per configuration."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(11, 4.2), layout="constrained")
    panels = figure.subplots(1, 2)
    for axes, quantity in zip(panels, (QUANTITIES[0][0], QUANTITIES[2][0]), strict=True):
        chosen = [row for row in rows if row.quantity == quantity]
        for offset, side in enumerate(("theory", "predicted", "measured")):
            values = [getattr(row, side) or 0.0 for row in chosen]
            places = [i + (offset - 1) * 0.27 for i in range(len(chosen))]
            axes.bar(places, values, width=0.27, label=side, color=f"C{offset}")
        axes.set_xticks(range(len(chosen)), [row.config for row in chosen])
        axes.set_ylabel(quantity)
        axes.grid(axis="y", alpha=0.3)
        axes.margins(y=0.2)  # room for the legend above the bars
        axes.legend(fontsize=8, ncols=3, loc="upper left")
    figure.suptitle("MLP on digits: theory (a device per worker) vs simulator (this machine) vs measured")
    FigureCanvasAgg(figure)
    figure.savefig(path, format="png", dpi=DPI)
    return path


# --- main ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Validation:
    """What main computed: the fixed-time grid and the real comparisons."""

    grid: list[GridPoint]
    real: list[RealRow]

    @property
    def makespan_error(self) -> float:
        return max(point.makespan_error for point in self.grid)

    @property
    def staleness_error(self) -> float:
        return max(point.staleness_error for point in self.grid)


def print_grid(grid: list[GridPoint], batches: int) -> None:
    print(f"Part 1: theory vs simulator (SimPy), {batches} batches, {GRID_LAYERS} layers, F = 1, n_f = 1:\n")
    print(format_table(GRID_HEADERS, [grid_row(point) for point in grid if point.n_f == 1]))
    checked = sum(1 for point in grid if point.staleness_theory)
    print(
        f"\nover all {len(grid)} points (n_f = 1, 2): max |T2 sim - theory| = "
        f"{max(p.makespan_error for p in grid):.3g}; over the {checked} forward-bound points, max |staleness "
        f"sim - theory| (every layer, mean and max, LU and BU) = {max(p.staleness_error for p in grid):.3g}"
    )


def write_outputs(result: Validation, out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    grid = markdown_table(GRID_HEADERS, [grid_row(p) for p in result.grid if p.n_f == 1])
    real = markdown_table(REAL_HEADERS, [real_row(row) for row in result.real])
    (out / "validate_theory.md").write_text(f"{grid}\n\n{real}\n", encoding="utf-8")
    return [real_plot(result.real, out / "validate_theory.png"), out / "validate_theory.md"]


def main(argv: list[str] | None = None) -> Validation:
    """Print both tables and write the plot under --out; returns what was computed."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("validate-theory"), help="folder for plots")
    parser.add_argument("--small", action="store_true", help="a tiny MLP, few batches (what the tests run)")
    args = parser.parse_args(argv)
    size = SIZES["small" if args.small else "full"]
    grid = theory_grid(size["grid_batches"])
    print_grid(grid, size["grid_batches"])
    print(
        f"\nPart 2: theory vs simulator vs executor, MLP width {size['width']} depth {size['depth']} on "
        f"digits, batch {size['batch_size']}, {size['batches']} batches (profile, run, simulate):"
    )
    result = Validation(grid, real_comparisons(size))
    print(format_table(REAL_HEADERS, [real_row(row) for row in result.real]))
    for path in write_outputs(result, args.out):
        print(f"wrote {path}")
    return result


if __name__ == "__main__":
    main()
