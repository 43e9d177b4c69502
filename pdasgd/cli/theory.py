"""`pdasgd theory`: the closed forms (docs/theory.md) from flags, the paper's numbers beside corrected ones.

Times are in units of one batch's forward time unless `--forward-s` gives it in seconds. The flags describe
a uniform scenario (each of M layers takes 1/M of the forward and backward time), and the numbers come from
`pdasgd.closed_forms`, the same code that puts theory beside simulator and executor in `compare`.
Staleness is the closed form in the forward-bound regime (one forward worker, B <= k F) and the exact
recursion elsewhere.
"""

from __future__ import annotations

import argparse
from typing import Any

from pdasgd.cli.common import UsageError, add_json_flag, format_table, print_json
from pdasgd.scenario import Scenario, ScenarioError, parse_scenario


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "theory",
        help="closed-form speed-up, cycle time and staleness (paper vs corrected)",
        description="Evaluate the closed forms of docs/theory.md: the paper's speed-up "
        "lambda = (1+beta) b/(b+beta) beside the exact one for k backward workers, its limit, "
        "the steady-state cycle time and the per-layer staleness of layer-wise (LU) vs block (BU) updates.",
    )
    parser.add_argument("--beta", type=float, required=True, help="backward / forward time ratio")
    parser.add_argument("--batches", type=int, required=True, help="number of batches b")
    parser.add_argument("--backward", type=int, required=True, help="backward workers k")
    parser.add_argument("--forward", type=int, default=1, help="forward workers n_f (default 1)")
    parser.add_argument("--handoff-s", type=float, default=0.0, help="forward-to-backward hand-off delay d")
    parser.add_argument("--layers", type=int, default=4, help="uniform layers M for staleness (default 4)")
    parser.add_argument("--max-in-flight", type=int, default=None, help="in-flight bound Q (default none)")
    parser.add_argument("--forward-s", type=float, default=1.0, help="forward time F of a batch (default 1)")
    add_json_flag(parser)
    parser.set_defaults(func=run)


FLAG_OF_FIELD = {
    "model.beta": "--beta",
    "model.layers": "--layers",
    "model.forward_s": "--forward-s",
    "workers.forward": "--forward",
    "workers.backward": "--backward",
    "workers.max_in_flight": "--max-in-flight",
    "delays.handoff_s": "--handoff-s",
    "run.batches": "--batches",
}


def flag_scenario(args: argparse.Namespace, method: str) -> Scenario:
    """The uniform scenario the flags describe (no in-flight bound unless --max-in-flight)."""
    try:
        return _parse_flags(args, method)
    except ScenarioError as error:
        field, _, problem = str(error).partition(": ")
        raise UsageError(f"{FLAG_OF_FIELD.get(field, field)}: {problem}") from None


def _parse_flags(args: argparse.Namespace, method: str) -> Scenario:
    return parse_scenario(
        {
            "method": method,
            "model": {"layers": args.layers, "forward_s": args.forward_s, "beta": args.beta},
            "workers": {
                "forward": args.forward,
                "backward": args.backward,
                "max_in_flight": _unbounded(args) if args.max_in_flight is None else args.max_in_flight,
            },
            "delays": {"handoff_s": args.handoff_s},
            "run": {"batches": args.batches, "warmup": 0},
        }
    )


def _unbounded(args: argparse.Namespace) -> int:
    """An in-flight bound that never binds: one per batch (within the bound a scenario allows)."""
    from pdasgd.scenario import MAX_BATCHES

    return min(max(args.batches, 1), MAX_BATCHES)


def closed_forms(args: argparse.Namespace) -> dict[str, Any]:
    """Every closed form the flags determine, as plain data."""
    from pdasgd.closed_forms import theory_for
    from theory.speedup import sequential_time
    from theory.staleness import block_delay, fresh_layer_fraction, paper_relative_staleness

    lu = theory_for(flag_scenario(args, "async-lu"))
    bu = theory_for(flag_scenario(args, "async-bu"))
    model = flag_scenario(args, "async-lu").model
    return {
        "inputs": {key: value for key, value in vars(args).items() if key not in ("func", "command", "json")},
        "sequential_time_s": sequential_time(args.batches, model.forward_s, model.backward_s),
        "async_time_s": lu["makespan_s"],
        "paper_speedup": lu["paper_speedup"],
        "speedup": lu["speedup_makespan"],
        "speedup_limit": lu["speedup_limit"],
        "cycle_time_s": lu["cycle_time_s"],
        "staleness": {"async-lu": lu["staleness"], "async-bu": bu["staleness"]},
        "block_delay_s": block_delay([layer.backward_s for layer in model.layers]),
        "paper_relative_staleness_s": paper_relative_staleness(args.beta, args.layers, args.forward_s),
        "fresh_layer_fraction": fresh_layer_fraction(args.layers, args.beta),
    }


def run(args: argparse.Namespace) -> int:
    forms = closed_forms(args)
    if args.json:
        print_json(forms)
    else:
        print(render(forms))
    return 0


def render(forms: dict[str, Any]) -> str:
    """The closed forms as two text tables."""
    rows = [
        ["sequential time T1", forms["sequential_time_s"], "b (F + B)"],
        ["async time T2", forms["async_time_s"], "exact, FIFO dispatch, one device per worker"],
        ["paper lambda", forms["paper_speedup"], "(1+beta) b/(b+beta): exact only if k >= beta"],
        ["lambda = T1/T2", forms["speedup"], "corrected"],
        ["lambda limit", forms["speedup_limit"], "(1+beta) min(n_f, k/beta), b -> inf"],
        ["cycle time c", forms["cycle_time_s"], "max(F/n_f, B/k, (F+d+B)/Q)"],
        ["fresh-layer fraction", forms["fresh_layer_fraction"], "layers reading the previous LU update"],
    ]
    lu, bu = forms["staleness"]["async-lu"], forms["staleness"]["async-bu"]
    layer_rows = [
        [
            m,
            lu["per_layer_mean"][m],
            bu["per_layer_mean"][m],
            forms["block_delay_s"][m],
            forms["paper_relative_staleness_s"][m],
        ]
        for m in range(forms["inputs"]["layers"])
    ]
    headers = ["layer", "LU staleness", "BU staleness", "BU-LU delay", "paper's delay"]
    source = f"staleness: {lu['source']}"
    if lu["source"] == "recursion":
        source += " (mean over the second half of the batches)"
        if forms["inputs"]["max_in_flight"] is None and forms["cycle_time_s"] > forms["inputs"]["forward_s"]:
            source += "; backward-bound with no in-flight bound: it grows without limit (set --max-in-flight)"
    return "\n".join(
        [format_table(["quantity", "value", "note"], rows), "", format_table(headers, layer_rows), source]
    )
