"""`pdasgd profile`: measure the per-layer costs of the scenario's network and write them as a scenario.

Costs are measured on the executor's own code path (`executor.profile`): warm-up batches first, then every
layer's forward, backward and update times on the scenario's device with its threads per worker, each
with the gap before it (per-op overhead). `--pipelined` measures them instead in a short forward + backward
pipeline (async-lu, 1F+1B), as the pipelined methods pay them: on a 2-core CPU 20-35% higher than alone.
With `-o` the command writes the whole scenario with `[model]` replaced by `[[model.layer]]` entries (mean
costs, activation and parameter bytes), atomically, ready for `pdasgd simulate`; otherwise it prints a table
with means and medians.
"""

from __future__ import annotations

import argparse
import dataclasses

from pdasgd.cli.common import add_json_flag, check_range, eprint, format_table, output_file, print_json
from pdasgd.scenario import Model, load_scenario, save_scenario


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "profile",
        help="measure per-layer forward, backward and update costs into [[model.layer]]",
        description="Train the [train] network of SCENARIO.toml for a few batches with one executor worker "
        "and measure each layer's forward, backward and update time (means of the measured batches, after "
        "warm-up) and its activation and parameter bytes. -o writes the scenario with these layers as its "
        "[[model.layer]] entries.",
    )
    parser.add_argument("scenario", help="scenario TOML file")
    parser.add_argument("-o", "--output", metavar="F", help="write the profiled scenario (TOML) to F")
    parser.add_argument("--batches", type=int, default=30, help="measured batches (30)")
    parser.add_argument("--warmup", type=int, default=5, help="batches run first and not measured (5)")
    parser.add_argument(
        "--pipelined",
        action="store_true",
        help="measure op times in a forward + backward pipeline, as async-lu/async-bu/hogwild pay them",
    )
    add_json_flag(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    scenario = load_scenario(args.scenario)
    check_range("--batches", args.batches, 1, 100_000)
    check_range("--warmup", args.warmup, 0, 100_000)
    output = output_file(args.output, "-o/--output")
    from executor.profile import measure, measure_pipelined

    samples = measure(scenario, args.batches, args.warmup)
    if args.pipelined:
        samples = measure_pipelined(scenario, samples, args.batches, max(args.warmup, 10))
    layers = tuple(layer.layer("mean") for layer in samples)
    if output:
        save_scenario(dataclasses.replace(scenario, model=Model(layers)), output)
        eprint(f"pdasgd profile: wrote {len(layers)} layers to {output}")
    if args.json:
        print_json([dataclasses.asdict(layer) for layer in layers])
    elif not args.output:
        print(format_table(HEADERS, [_row(layer) for layer in samples]))
    return 0


HEADERS = [
    "layer",
    "forward_s",
    "(median)",
    "backward_s",
    "(median)",
    "update_s",
    "(median)",
    "activation_bytes",
    "param_bytes",
]


def _row(samples) -> list:
    row: list = [samples.name]
    for op in ("forward", "backward", "update"):
        row += [samples.cost(op, "mean"), samples.cost(op, "median")]
    return row + [samples.activation_bytes, samples.param_bytes]
