"""`pdasgd demo`: the built-in default, end to end on this machine, with no input needed.

It prints the built-in scenario's closed-form predictions (speed-up, cycle time, staleness of layer-wise vs
block updates). The scenario text is in `pdasgd.defaults`; `--show-scenario` prints it so it can be copied
and edited.
"""

from __future__ import annotations

import argparse

from pdasgd.cli.common import add_json_flag, format_table, print_json
from pdasgd.defaults import DEMO_TOML, demo_scenario


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="run the built-in default scenario end to end",
        description="Run the built-in default scenario (an MLP, one forward and two backward workers) and "
        "print what the theory predicts for it.",
    )
    parser.add_argument("--show-scenario", action="store_true", help="print the built-in scenario and exit")
    add_json_flag(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pdasgd.closed_forms import theory_for

    if args.show_scenario:
        print(DEMO_TOML, end="")
        return 0
    scenario = demo_scenario()
    forms = {method: theory_for(scenario.with_overrides({"method": method})) for method in METHODS}
    if args.json:
        print_json({"scenario": scenario.to_dict(), "theory": forms})
        return 0
    print(
        f"scenario {scenario.name}: {len(scenario.model.layers)} layers, "
        f"F = {scenario.model.forward_s:.4g} s, "
        f"beta = {scenario.model.beta:.3g}, {scenario.workers.forward} forward + "
        f"{scenario.workers.backward} backward workers, {scenario.run.batches} batches\n"
    )
    print("closed-form predictions (fixed times, one device per worker):")
    print(
        format_table(
            ["method", "batches/s", "speed-up", "mean staleness", "per-layer staleness"],
            [_row(method, forms[method]) for method in METHODS],
        )
    )
    return 0


METHODS = ("sequential", "async-bu", "async-lu")


def _row(method: str, forms: dict) -> list:
    stale = forms["staleness"]
    return [
        method,
        forms["throughput_batches_per_s"],
        forms["speedup_vs_sequential"],
        stale["mean"],
        stale["per_layer_mean"],
    ]
