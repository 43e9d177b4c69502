"""Methods across ranks on this machine: ddp, lapsgd and lppsgd on 2 ranks x 1 thread, gossip-lu on 2 ranks x
(1 forward + 1 backward thread) (gloo, a process each), in exchange and push mode, beside single-process
sequential and hogwild (2 threads), and gossip-lu's compute without communication (gossip_mode "none": the
same two ranks, launcher and start barrier, no gossip until the final average), real training on digits.

For every method: its throughput (global batches/s, and each rank's own batches/s), the same under a
20 ms compute straggler on rank 1 (`r1/worker:0`, a sleep before every one of its batches) and under a
20 ms communication delay on rank 1 (before each of its communication ops), and the wall time to 96% test
accuracy (from the run's accuracy curve, snapshots evaluated after the run), and beside each measured
throughput and staleness the simulator's prediction, as `pdasgd compare` makes it (the profile of the
network, the run's device and slots, the network the ranks probed). Rounds interleave the configurations;
figures are medians over rounds, every round's value kept in the JSON.

`--pace-sweep 0,0.01,0.05` instead measures gossip-lu (exchange) against its pipelines without
communication at each `distributed.gossip_every_s`, each pace right beside a baseline run of its own
(which goes first alternates): the throughput ratio, the
exchanges, the time to the target and the final accuracy (the trade-off a user picks a pace on).

    .venv/bin/python benchmarks/bench_distributed.py --rounds 3 --pace-sweep 0,0.01,0.02,0.05,0.1

    .venv/bin/python benchmarks/bench_distributed.py --rounds 3 --json benchmarks/results/distributed.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections import defaultdict

from bench_time_to_accuracy import digits_mlp, time_to_target  # this folder's sibling script

from executor.runtime import run
from pdasgd.ranks import COMM
from pdasgd.scenario import parse_scenario
from pdasgd.trace import Trace

RANKS = {"replicas": 2, "per_replica": 1}
GOSSIP = {"replicas": 2, "forward": 1, "backward": 1, "max_in_flight": 4}  # "mode": distributed.gossip_mode
METHODS = {
    "sequential": ("sequential", {}),
    "hogwild 2 threads": ("hogwild", {"replicas": 1, "per_replica": 2}),
    "ddp 2 ranks": ("ddp", RANKS),
    "lapsgd 2 ranks": ("lapsgd", RANKS),
    "lppsgd 2 ranks": ("lppsgd", RANKS),
    # max_in_flight 4: with the default 8, a 1F+1B pipeline's staleness (about 7 plus mixes) at momentum
    # 0.9 kept gossip-lu at chance accuracy (0.12-0.27 after 800 batches; 0.97 with 4)
    "gossip-lu 2 ranks, 1F+1B each": ("gossip-lu", GOSSIP),
    "gossip-lu push 2 ranks, 1F+1B each": ("gossip-lu", {**GOSSIP, "mode": "push"}),
    "2 async-lu pipelines, no communication": ("gossip-lu", {**GOSSIP, "mode": "none"}),
}
ACROSS_RANKS = ("ddp", "lapsgd", "lppsgd", "gossip-lu")
APART = "2 async-lu pipelines, no communication"  # gossip-lu's compute alone: no delays to try on it
STRAGGLER = {"gossip-lu": "r1/forward:0"}  # the rank-1 worker a compute straggler sleeps before


def delays_for(condition: str, extra_s: float, method: str = "ddp") -> dict:
    if condition == "straggler":
        worker = STRAGGLER.get(method, "r1/worker:0")
        return {"straggler": [{"worker": worker, "every": 1, "extra_s": extra_s, "kind": "sleep"}]}
    if condition == "comm delay":
        return {"comm": [{"rank": 1, "extra_s": extra_s}]}
    return {}


def scenario(
    method: str, workers: dict, condition: str, args: argparse.Namespace, seed: int, batches: int = 0
):
    averaging = {"average_every": args.average_every} if method in ("lapsgd", "lppsgd") else {}
    workers = dict(workers)
    mode = workers.pop("mode", "exchange")
    return parse_scenario(
        {
            "name": f"dist-{method}",
            "method": method,
            "workers": {**workers, **averaging},
            "train": {**digits_mlp(args), "device": "cpu"},
            "delays": delays_for(condition, args.extra_s, method),
            "run": {"batches": batches or args.batches, "warmup": 4, "seed": seed},
            "distributed": gossip_settings(method, mode, args),
        }
    )


def gossip_settings(method: str, mode: str, args: argparse.Namespace) -> dict:
    if not method.startswith("gossip"):
        return {}
    return {"gossip_mode": mode, "gossip_every_s": args.gossip_every_s}


def rank_rates(trace: Trace) -> dict[str, float]:
    """Each rank's own batches per second while it computes: its batches over the time from the first to
    the last span of its workers (its communicator's spans, e.g. a last round waiting for a slow rank,
    left out)."""
    batches: dict[str, set] = defaultdict(set)
    first: dict[str, float] = {}
    last: dict[str, float] = {}
    for span in trace.spans:
        if span.worker.endswith(f"/{COMM}"):
            continue
        rank = span.worker.split("/")[0] if "/" in span.worker else "r0"
        first[rank] = min(first.get(rank, span.start_s), span.start_s)
        last[rank] = max(last.get(rank, span.end_s), span.end_s)
        if span.op == "forward" and span.batch is not None:
            batches[rank].add(span.batch)
    return {rank: len(batches[rank]) / (last[rank] - first[rank]) for rank in sorted(batches)}


def configurations() -> list[tuple[str, str]]:
    rows = [(name, "none") for name in METHODS]
    for name, (method, _) in METHODS.items():
        if method in ACROSS_RANKS and name != APART:
            rows += [(name, "straggler"), (name, "comm delay")]
    return rows


def measure(name: str, condition: str, args: argparse.Namespace, seed: int) -> dict:
    method, workers = METHODS[name]
    sc = scenario(method, workers, condition, args, seed)
    result = run(sc, curve_points=args.points)
    prediction = predicted(sc, result.trace)
    return {
        "batches_per_s": result.summary.throughput_batches_per_s,
        "rank_batches_per_s": rank_rates(result.trace),
        "time_to_target_s": time_to_target(result.accuracy_curve, args.target)[0],
        "final_accuracy": result.trace.accuracy,
        "staleness": result.summary.staleness.mean,
        "exchanges": result.trace.info.get("gossip_exchanges"),
        "predicted_batches_per_s": prediction.throughput_batches_per_s,
        "predicted_staleness": prediction.staleness.mean,
    }


def predicted(sc, trace: Trace):
    """The simulator's summary for `sc` on the machine `trace` ran on, as `pdasgd compare` predicts it."""
    from pdasgd.cli.compare import predict_beside
    from pdasgd.cli.prediction import profiled

    return predict_beside(profiled(sc), trace)["summary"]


def pace_sweep(paces: list[float], args: argparse.Namespace) -> str:
    """gossip-lu against its pipelines without communication at each pace (module docstring)."""
    gossip = "gossip-lu 2 ranks, 1F+1B each"
    found: dict[float, list[dict]] = defaultdict(list)
    for index in range(args.rounds):
        for order, pace in enumerate(paces):  # each pace beside its own baseline run, the order alternating
            args.gossip_every_s = pace
            pair = [(APART, "none"), (gossip, "none")]
            measured = {name: measure(name, c, args, seed=index) for name, c in pair[:: 1 - 2 * (order % 2)]}
            figures, alone = measured[gossip], measured[APART]
            figures["ratio"] = figures["batches_per_s"] / alone["batches_per_s"]
            found[pace].append(figures)
            print(f"round {index} pace {pace:g}: {figures['ratio']:.2f}x", file=sys.stderr)
    lines = [
        f"gossip-lu 1F+1B x 2 ranks vs the same pipelines without communication, medians of {args.rounds} "
        "paired rounds",
        "",
        "| gossip_every_s | batches/s | ratio to no communication (rounds) | exchanges | staleness | time to "
        f"{args.target:.0%} (s) | final accuracy |",
        "|---|---|---|---|---|---|---|",
    ]
    for pace, runs in found.items():
        ratios = ", ".join(f"{r['ratio']:.2f}" for r in runs)
        tta = median([r["time_to_target_s"] for r in runs])
        reached = sum(r["time_to_target_s"] is not None for r in runs)
        cells = [f"{pace:g}", f"{median([r['batches_per_s'] for r in runs]):.1f}"]
        cells += [f"{median([r['ratio'] for r in runs]):.2f}x ({ratios})"]
        cells += [f"{median([r['exchanges'] for r in runs]):.0f}"]
        cells += [f"{median([r['staleness'] for r in runs]):.2f}"]
        cells += [f"{tta:.2f} ({reached}/{len(runs)})" if tta is not None else "not reached"]
        cells += [f"{median([r['final_accuracy'] for r in runs]):.3f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def median(values: list) -> float | None:
    known = [v for v in values if v is not None]
    return statistics.median(known) if known else None


def report(rows: dict, args: argparse.Namespace) -> str:
    lines = [
        f"MLP {args.width}x{args.depth}, batch {args.batch_size}, {args.batches} batches, lr {args.lr}, "
        f"momentum {args.momentum}, average_every {args.average_every}, gossip_every_s "
        f"{args.gossip_every_s:g}; medians of {args.rounds} rounds",
        "",
        "| method | batches/s | r0 / r1 computing | straggler 20 ms on r1: batches/s (change), r0 / r1 "
        "| comm delay 20 ms on r1: batches/s (change), r0 / r1 | time to "
        f"{args.target:.0%} (s) | final accuracy |",
        "|---|---|---|---|---|---|---|",
    ]
    for name in METHODS:
        base = rows[(name, "none")]
        cells = [name, f"{median([r['batches_per_s'] for r in base]):.1f}", _ranks(base)]
        for condition in ("straggler", "comm delay"):
            if (name, condition) not in rows:
                cells.append("-")
                continue
            under = median([r["batches_per_s"] for r in rows[(name, condition)]])
            change = under / median([r["batches_per_s"] for r in base]) - 1
            cells.append(f"{under:.1f} ({change:+.0%}), {_ranks(rows[(name, condition)])}")
        tta = median([r["time_to_target_s"] for r in base])
        reached = sum(r["time_to_target_s"] is not None for r in base)
        cells.append(f"{tta:.2f} ({reached}/{len(base)} reached)" if tta is not None else "not reached")
        final = median([r["final_accuracy"] for r in base])
        cells.append("-" if final is None else f"{final:.3f}")
        lines.append("| " + " | ".join(cells) + " |")
    apart = median([r["batches_per_s"] for r in rows[(APART, "none")]])
    for name in METHODS:
        if name.startswith("gossip"):
            rate = median([r["batches_per_s"] for r in rows[(name, "none")]])
            lines.append(f"\n{name} / {APART}: {rate / apart:.2f}x")
    return "\n".join(lines) + "\n\n" + predictions(rows)


def predictions(rows: dict) -> str:
    """The simulator's prediction beside each measured configuration (medians over rounds)."""
    lines = [
        "| method [condition] | measured batches/s | predicted | error | measured staleness | predicted |",
        "|---|---|---|---|---|---|",
    ]
    for (name, condition), runs in rows.items():
        rate, guess = (median([r[k] for r in runs]) for k in ("batches_per_s", "predicted_batches_per_s"))
        stale, stale_guess = (median([r[k] for r in runs]) for k in ("staleness", "predicted_staleness"))
        cells = [f"{name} [{condition}]", f"{rate:.1f}", f"{guess:.1f}", f"{guess / rate - 1:+.0%}"]
        cells += [f"{stale:.2f}", f"{stale_guess:.2f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _ranks(runs: list[dict]) -> str:
    per_rank = defaultdict(list)
    for run_ in runs:
        for rank, rate in run_["rank_batches_per_s"].items():
            per_rank[rank].append(rate)
    if len(per_rank) < 2:
        return "-"
    return " / ".join(f"{median(per_rank[rank]):.1f}" for rank in sorted(per_rank))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batches", type=int, default=800, help="global batches per run (all ranks)")
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--depth", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=0.02)
    parser.add_argument("--momentum", type=float, default=0.9)
    parser.add_argument("--average-every", type=int, default=8)
    parser.add_argument("--extra-s", type=float, default=0.02, help="the straggler's and the comm delay's")
    parser.add_argument("--target", type=float, default=0.96)
    parser.add_argument(
        "--gossip-every-s", type=float, default=0.0, help="gossip-lu's distributed.gossip_every_s"
    )
    parser.add_argument("--points", type=int, default=40, help="accuracy-curve points per run")
    parser.add_argument("--json", help="also write every round's figures to this file")
    parser.add_argument("--pace-sweep", help="comma-separated gossip_every_s values (module docstring)")
    args = parser.parse_args()
    if args.pace_sweep:
        print(pace_sweep([float(p) for p in args.pace_sweep.split(",")], args))
        return
    rows: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for index in range(args.rounds):
        for name, condition in configurations():
            figures = measure(name, condition, args, seed=index)
            rows[(name, condition)].append(figures)
            rate = figures["batches_per_s"]
            print(f"round {index} {name} [{condition}]: {rate:.1f} batches/s", file=sys.stderr)
    print(report(rows, args))
    if args.json:
        raw = {f"{name} [{condition}]": runs for (name, condition), runs in rows.items()}
        with open(args.json, "w") as out:
            json.dump({"args": vars(args), "rows": raw}, out, indent=1)


if __name__ == "__main__":
    main()
