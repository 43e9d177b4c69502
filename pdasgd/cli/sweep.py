"""`pdasgd sweep`: a grid over scenario keys, simulated in parallel processes, as CSV plus plots.

`--vary KEY=V1,V2,...` (repeatable) names any scenario key in dotted form (`workers.backward`, `model.beta`,
`delays.handoff_s`, `method`). Every point is validated before anything runs. Points are simulated in a
process pool with a progress bar; `--real` also runs each point for real with the executor (one at a time,
since a real run wants every core) and adds measured columns. `--accuracy` replays every point's simulated
trace on the real network (`pdasgd replay`; with op noise, five noise seeds of it and their medians) and
adds the predicted time and batches to `--target` accuracy and the final accuracy (with `--real`, the
measured ones too, from the real runs' traces). DIR gets sweep.csv, throughput.png and staleness.png
(predicted against the first varied key, one line per combination of the others, with the closed-form
theory dashed where it applies), and time_to_accuracy.png with --accuracy.
"""

from __future__ import annotations

import argparse
import os
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

from pdasgd.cli.common import (
    add_json_flag,
    check_range,
    eprint,
    fail,
    folder_name,
    format_table,
    output_dir,
    print_json,
)
from pdasgd.cli.replay import (
    accuracy_of,
    add_accuracy_flags,
    check_accuracy_args,
    median_accuracy,
    noise_schedules,
)
from pdasgd.io import atomic_write_text
from pdasgd.scenario import Scenario, load_scenario
from pdasgd.sweep import grid, parse_vary, sweep_row, to_csv

MAX_JOBS = 256


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "sweep",
        help="simulate a grid over scenario keys (CSV + plots)",
        description="Simulate SCENARIO.toml at every combination of the --vary values, in parallel, and "
        "write sweep.csv with throughput, speed-up, staleness and memory (predicted, theory, and "
        "measured with --real) plus plots against the first varied key.",
    )
    parser.add_argument("scenario", help="scenario TOML file")
    parser.add_argument(
        "--vary", action="append", required=True, metavar="KEY=V1,V2", help="a key and its values (repeat)"
    )
    parser.add_argument("--out", metavar="DIR", help="output folder (default pdasgd-sweep/<name>)")
    parser.add_argument("--real", action="store_true", help="also run every point with the executor")
    add_accuracy_flags(parser, "every point's simulated trace replayed")
    parser.add_argument(
        "--jobs", type=int, default=os.cpu_count() or 1, help="parallel processes (default: the cores)"
    )
    parser.add_argument("--no-progress", action="store_true", help="never show a progress bar")
    add_json_flag(parser)
    parser.set_defaults(func=run)


def simulate_point(scenario: Scenario) -> tuple[dict[str, Any], dict[str, Any]]:
    """Predicted summary and closed forms of one point (runs in a worker process)."""
    import simulator
    from pdasgd.closed_forms import theory_for

    return simulator.simulate_summary(scenario, progress=False), theory_for(scenario)


def simulate_all(points: list, jobs: int, progress: bool) -> list[tuple[dict, dict]]:
    """Simulate every point in a process pool, keeping the grid's order."""
    from tqdm import tqdm

    results: list[Any] = [None] * len(points)
    with ProcessPoolExecutor(max_workers=max(1, jobs)) as pool:
        futures = {pool.submit(simulate_point, scenario): i for i, (_, scenario) in enumerate(points)}
        try:
            for future in tqdm(as_completed(futures), total=len(futures), desc="sweep", disable=not progress):
                results[futures[future]] = future.result()
        except KeyboardInterrupt:
            pool.shutdown(wait=False, cancel_futures=True)
            raise
    return results


def measure_all(points: list, progress: bool) -> list:
    """Run every point for real, one after the other, each with its own sequential baseline."""
    import executor

    return [executor.run(scenario, progress=progress, baseline=True) for _, scenario in points]


def accuracy_columns(points: list, measured: list, args: argparse.Namespace) -> list[dict[str, Any]]:
    """Per point: the predicted (the simulated trace replayed; with op noise, the medians over --schedules
    noise seeds, `median_accuracy`) and, with --real, measured time and batches to the target and final
    accuracy."""
    from tqdm import tqdm

    import simulator

    columns = []
    for (_, scenario), real in tqdm(
        list(zip(points, measured, strict=True)), desc="replay", disable=args.no_progress or args.json
    ):
        schedules = noise_schedules(scenario, simulator.simulate(scenario, progress=False), args.schedules)
        sides = {"predicted": median_accuracy(scenario, schedules, args.target, args.eval_points)}
        if real is not None:
            sides["measured"] = accuracy_of(scenario, real.trace, args.target, args.eval_points)
        row: dict[str, Any] = {}
        for side, figures in sides.items():
            row[f"{side}_time_to_target_s"] = figures["time_to_target_s"]
            row[f"{side}_batches_to_target"] = figures["batches_to_target"]
            row[f"{side}_final_accuracy"] = figures["final_accuracy"]
        columns.append(row)
    return columns


def run(args: argparse.Namespace) -> int:
    base = load_scenario(args.scenario)
    check_range("--jobs", args.jobs, 1, MAX_JOBS)
    varies = [parse_vary(flag) for flag in args.vary]
    keys = [key for key, _ in varies]
    for key in keys:
        if keys.count(key) > 1:
            fail(f"--vary {key}: given twice; give every value of a key in one --vary")
    points = grid(base, varies)
    if base.model is None:
        raise ValueError("model: no layer costs to simulate; give [model] or run `pdasgd profile` first")
    check_accuracy_args(args, [scenario for _, scenario in points])
    out_dir = output_dir(args.out or Path("pdasgd-sweep") / folder_name(base.name), "--out")
    progress = not args.no_progress and not args.json
    simulated = simulate_all(points, args.jobs, progress)
    measured = measure_all(points, progress) if args.real else [None] * len(points)
    rows = [
        sweep_row(overrides, predicted, theory, real.summary if real else None)
        for (overrides, _), (predicted, theory), real in zip(points, simulated, measured, strict=True)
    ]
    if args.accuracy:
        for row, extra in zip(rows, accuracy_columns(points, measured, args), strict=True):
            row.update(extra)
    atomic_write_text(out_dir / "sweep.csv", to_csv(rows))
    written = plot_sweep(rows, [key for key, _ in varies], out_dir, args.accuracy)
    if args.json:
        print_json(rows)
    else:
        print(compact_table(rows, [key for key, _ in varies]))
        eprint(f"\nwritten: {', '.join(str(path) for path in [out_dir / 'sweep.csv', *written])}")
    return 0


SHOWN = {
    "predicted_throughput_batches_per_s": "batches/s",
    "predicted_speedup_vs_sequential": "speed-up",
    "predicted_staleness_mean": "staleness",
    "theory_throughput_batches_per_s": "theory batches/s",
    "theory_staleness_mean": "theory staleness",
    "measured_throughput_batches_per_s": "measured batches/s",
    "measured_staleness_mean": "measured staleness",
    "predicted_time_to_target_s": "time to target (s)",
    "predicted_batches_to_target": "batches to target",
    "predicted_final_accuracy": "final accuracy",
    "measured_time_to_target_s": "measured time to target (s)",
}


def compact_table(rows: list[dict[str, Any]], keys: list[str]) -> str:
    """The varied keys and the headline columns (the CSV has them all)."""
    columns = keys + [column for column in SHOWN if column in rows[0]]
    headers = keys + [SHOWN[column] for column in columns[len(keys) :]]
    return format_table(headers, [[row[column] for column in columns] for row in rows])


def plot_sweep(
    rows: list[dict[str, Any]], keys: list[str], out_dir: Path, accuracy: bool = False
) -> list[Path]:
    """Throughput and mean staleness (and with `accuracy` the time to the target) against the first varied
    key; one line per other combination."""
    from pdasgd.plots import sweep_plot

    figures = [("throughput", "throughput_batches_per_s"), ("staleness", "staleness_mean")]
    if accuracy:
        figures.append(("time_to_accuracy", "time_to_target_s"))
    return [sweep_plot(rows, keys, column, out_dir / f"{figure}.png") for figure, column in figures]
