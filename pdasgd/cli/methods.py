"""`pdasgd methods [NAME]`: the methods there are, as their definitions say (`pdasgd.methods`).

Without a name, one line per method: its roles and how they get batches, the engines that run it, the
closed forms that describe it and its per-batch steps on `--layers` layers. With a name, that method in
full. The steps print as in torch.distributed.pipelining's schedules: `F2` is layer 2's forward, `B2` its
backward, `U2` its update, `P2,1,0` publishes the updates of layers 2, 1 and 0 together, `AR` an all-reduce,
and `|` separates the roles (forward workers | backward workers).
"""

from __future__ import annotations

import argparse
from typing import Any

from pdasgd import methods
from pdasgd.cli.common import add_json_flag, format_table, int_between, print_json
from pdasgd.scenario import Workers


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "methods",
        help="list the methods and their per-batch schedules",
        description="Print every method's definition (roles, dispatch, steps, engines, closed forms), or "
        "one method's in full. Steps: F forward, B backward, U update, P publish, AR all-reduce; "
        "'|' separates the roles.",
    )
    parser.add_argument("name", nargs="?", help="one method (default: all)")
    parser.add_argument(
        "--layers", type=int_between(1, 64), default=3, metavar="N", help="layers in the schedule (3)"
    )
    add_json_flag(parser)
    parser.set_defaults(func=run)


def describe(method: methods.Method, layers: int, workers: Any = None) -> dict[str, Any]:
    """A method's definition as plain data, its steps on `layers` layers with `workers` (the defaults)."""
    workers = workers or Workers()
    return {
        "name": method.name,
        "description": method.description,
        "roles": [
            {
                "name": role.name,
                "count": " x ".join(f"workers.{key}" for key in role.count) or "1",
                "dispatch": role.dispatch.value,
                "placement": role.placement,
            }
            for role in method.roles
        ],
        "copies": method.copies.value,
        "max_in_flight_applies": method.windowed,
        "averaging": method.averaging,
        "engines": list(method.engines),
        "closed_forms": method.theory,
        "schedule": method.schedule_text(layers, workers),
    }


def run(args: argparse.Namespace) -> int:
    chosen = [methods.lookup(args.name)] if args.name else [methods.lookup(n) for n in methods.names()]
    described = [describe(method, args.layers) for method in chosen]
    if args.json:
        print_json(described[0] if args.name else described)
    elif args.name:
        print(_details(described[0]))
    else:
        print(format_table(["method", "roles", "engines", "theory", "steps"], [_row(d) for d in described]))
    return 0


def _roles(described: dict[str, Any]) -> str:
    return " | ".join(f"{r['name']} ({r['dispatch']})" for r in described["roles"])


def _row(described: dict[str, Any]) -> list[Any]:
    schedule = described["schedule"].replace("\n", "; ")
    engines = "+".join(described["engines"])
    return [described["name"], _roles(described), engines, described["closed_forms"], schedule]


def _details(described: dict[str, Any]) -> str:
    roles = [
        f"  {r['name']}: {r['count']} workers, batches {r['dispatch']}, placed by placement.{r['placement']}"
        for r in described["roles"]
    ]
    lines = [
        f"{described['name']}: {described['description']}",
        "roles:",
        *roles,
        f"parameter copies: {described['copies']}",
        f"max_in_flight applies: {'yes' if described['max_in_flight_applies'] else 'no'}",
        f"averaging every workers.average_every batches: {'yes' if described['averaging'] else 'no'}",
        f"engines: {', '.join(described['engines'])}",
        f"closed forms: {described['closed_forms'] or 'none'}",
        "steps of one batch:",
        *[f"  {line}" for line in described["schedule"].splitlines()],
    ]
    return "\n".join(lines)
