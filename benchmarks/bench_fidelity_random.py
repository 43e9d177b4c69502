"""Fidelity on scenarios nobody tuned for: a seeded random draw, each compared several times.

Draws `--scenarios` scenarios from a seeded space: networks and their sizes (MLP, ResNet, LSTM), batch
sizes, methods (sequential, async-lu, async-bu, hogwild), forward and backward workers, max_in_flight,
hand-off and update-visibility delays, stragglers of both kinds, and run lengths of 100-400 batches. Each
goes through `pdasgd compare`'s own path: `compare_one(runs=--runs)` measures `--runs` real runs and
judges its prediction against their mean and the 95% t-interval over them (what `compare --runs N`
does), and `compared` judges `--repeats` - 1 more predictions against the same measurement, each from its
own profile: the first two predictions from a fresh profile each (so they show how reproducible a fresh
profile makes them), the later ones reusing the cached profile as a user's second compare would. Speed-ups
are left out (no baseline run).

Per prediction it records the relative throughput error against the mean of the runs, the prediction's
and the measurement's 95% intervals, whether they meet and whether the prediction lies inside the
measured interval (over runs) and inside the first run's own interval (over its batches), the per-layer
mean staleness errors (versions), the calibrated role speeds and the prediction at a fair time slice
(speeds 1). The first prediction's row holds each run's throughput and interval. `--report` reads files
of this form and of the one before it (one run per prediction, each judged against its own run), and for
this form also scores the predictions as that one did (repeat i against run i).

    .venv/bin/python benchmarks/bench_fidelity_random.py --seed 1 --json draw1.json
    .venv/bin/python benchmarks/bench_fidelity_random.py --report draw1.json

Results are appended to the JSON file as they come, so an interrupted run keeps what it measured, and a
re-run with the same file skips what is there. Run it on a quiet machine, and nothing else at the same time.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time
from pathlib import Path

METHODS = ("sequential", "async-lu", "async-lu", "async-bu", "hogwild")  # async-lu drawn twice as often


def draw(seed: int, count: int) -> list[dict]:
    """`count` scenario tables from the seeded space (module docstring)."""
    rng = random.Random(seed)
    return [_one(rng, seed, index) for index in range(count)]


def _network(rng: random.Random) -> dict:
    kind = rng.choice(("mlp", "mlp", "resnet", "lstm"))
    if kind == "mlp":
        return {
            "network": "mlp",
            "width": rng.choice((256, 384, 512, 768, 1024, 1536)),
            "depth": rng.randint(2, 8),
            "batch_size": rng.choice((32, 64, 128, 256)),
        }
    if kind == "resnet":
        return {
            "network": "resnet",
            "depth": rng.choice((8, 14)),
            "channels": rng.choice((8, 16)),
            "batch_size": rng.choice((16, 32)),
        }
    return {"network": "lstm", "hidden": rng.choice((64, 128, 192)), "batch_size": rng.choice((16, 32))}


def _one(rng: random.Random, seed: int, index: int) -> dict:
    method = rng.choice(METHODS)
    workers = {"max_in_flight": rng.randint(2, 8)}
    if method in ("async-lu", "async-bu"):
        workers |= {"forward": rng.choice((1, 1, 2)), "backward": rng.randint(1, 3)}
        names = [f"forward:{i}" for i in range(workers["forward"])]
        names += [f"backward:{i}" for i in range(workers["backward"])]
    elif method == "hogwild":
        workers |= {"replicas": 1, "per_replica": rng.choice((2, 3))}
        names = [f"worker:{i}" for i in range(workers["per_replica"])]
    else:
        names = ["worker:0"]
    delays: dict = {}
    if method != "sequential" and rng.random() < 0.3:
        delays["handoff_s"] = round(rng.uniform(0.001, 0.01), 4)
    if rng.random() < 0.2:
        delays["visibility_s"] = round(rng.uniform(0.001, 0.01), 4)
    if rng.random() < 0.25:
        delays["straggler"] = [
            {
                "worker": rng.choice(names),
                "every": rng.randint(2, 5),
                "extra_s": round(rng.uniform(0.005, 0.03), 4),
                "kind": rng.choice(("sleep", "busy")),
            }
        ]
    batches = rng.randint(100, 400)
    return {
        "name": f"draw{seed}-{index:02d}",
        "method": method,
        "workers": workers,
        "delays": delays,
        "train": {**_network(rng), "dataset": "synthetic"},
        "run": {"batches": batches, "warmup": max(10, batches // 8), "seed": index},
    }


def compare_scenario(table: dict, repeats: int, runs: int) -> list[dict]:
    """`repeats` predictions of one scenario, each from its own profile (the first two fresh, the later
    ones reusing the cached profile), all judged against one measurement of `runs` real runs, through
    compare's own path: `compare_one(runs=...)` for the first, `compared` on the same measurement for the
    others."""
    from pdasgd.cli.compare import compare_one, compared
    from pdasgd.cli.prediction import profiled
    from pdasgd.scenario import parse_scenario

    scenario = parse_scenario(table)
    started = time.perf_counter()
    first = compare_one(scenario, fresh=True, baseline=False, runs=runs)
    items = [(first, time.perf_counter() - started)]
    measurement = first.measurement
    for repeat in range(1, repeats):
        started = time.perf_counter()
        item = compared(profiled(scenario, fresh=repeat < 2), measurement)
        items.append((item, time.perf_counter() - started))
    runs_ = _runs(first)  # the bootstrap intervals of the shared runs, once per scenario
    rows = [
        {**_row(table, item, repeat < 2, wall_s, runs_[0]["interval"]), "repeat": repeat}
        for repeat, (item, wall_s) in enumerate(items)
    ]
    rows[0]["runs"] = runs_
    return rows


def _runs(item) -> list[dict]:
    """Each real run's throughput and its own interval over its batches (`pdasgd.intervals`)."""
    from pdasgd.intervals import throughput_interval

    intervals = [throughput_interval(trace) for trace in item.runs()]
    return [{"measured": i.value, "interval": i.to_dict()} for i in intervals]


def _row(table: dict, item, fresh: bool, wall_s: float, first_run: dict) -> dict:
    """One prediction's row; `first_run` is the first real run's own interval over its batches."""
    import simulator
    from pdasgd.machine import on_machine

    document, intervals = item.document, item.document["intervals"]
    raw = simulator.simulate_summary(
        on_machine(item.scenario, item.measured.device_slots, document["machine"]["jitter_cv"]),
        progress=False,
    )
    layers = document["error"]["staleness_per_layer_abs"]
    return {
        "name": table["name"],
        "fresh_profile": fresh,
        "predicted": document["predicted"]["throughput_batches_per_s"],
        "measured": document["measured"]["throughput_batches_per_s"],
        "throughput_rel": document["error"]["throughput_rel"],
        "predicted_at_fair_share": raw.throughput_batches_per_s,
        "speeds": document["machine"]["speeds"],
        "throughput_intervals": intervals["throughput"],
        "staleness_intervals": intervals["staleness"],
        "measured_interval": intervals["measured_interval"],
        "inside_first_run": first_run["low"]
        <= document["predicted"]["throughput_batches_per_s"]
        <= first_run["high"],
        "staleness_layer_abs": [abs(x) for x in layers],
        "staleness_mean_abs": statistics.fmean(abs(x) for x in layers) if layers else 0.0,
        "profile": document["profile"],
        "warnings": intervals["warnings"],
        "wall_s": wall_s,
    }


def run(seed: int, count: int, repeats: int, runs: int, path: Path) -> None:
    done = json.loads(path.read_text()) if path.exists() else {"seed": seed, "scenarios": [], "rows": []}
    tables = draw(seed, count)
    done["scenarios"], done["runs"] = tables, runs
    for table in tables:
        mine = [r for r in done["rows"] if r["name"] == table["name"]]
        if len(mine) >= repeats:
            continue
        done["rows"] = [r for r in done["rows"] if r["name"] != table["name"]]  # a partial scenario anew
        for row in compare_scenario(table, repeats, runs):
            done["rows"].append(row)
            print(
                f"{row['name']} r{row['repeat']} {table['method']:<10} {table['train']['network']:<6} "
                f"pred {row['predicted']:8.2f} meas {row['measured']:8.2f} "
                f"err {100 * row['throughput_rel']:+6.1f}% "
                f"inside {row['throughput_intervals']['inside']!s:<5} "
                f"stale {row['staleness_mean_abs']:.2f} ({row['wall_s']:.0f} s)",
                flush=True,
            )
        path.write_text(json.dumps(done, indent=1))


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def report(path: Path) -> str:
    done = json.loads(path.read_text())
    rows = done["rows"]
    errors = [abs(r["throughput_rel"]) for r in rows]
    raw = [abs(_at_fair_share(r) / r["measured"] - 1) for r in rows]
    stale = [r["staleness_mean_abs"] for r in rows if r["staleness_layer_abs"]]
    layers = [x for r in rows for x in r["staleness_layer_abs"]]
    meet = [r["throughput_intervals"]["consistent"] and r["staleness_intervals"]["consistent"] for r in rows]
    meet_thr = [r["throughput_intervals"]["consistent"] for r in rows]
    inside = [r["throughput_intervals"]["inside"] for r in rows]
    repro, cached = [], []
    for repeats in by_scenario(rows).values():
        fresh = [r["predicted"] for r in repeats if r["fresh_profile"]]
        if len(fresh) >= 2:
            repro.append(abs(fresh[0] - fresh[1]) / statistics.fmean(fresh[:2]))
        mine = [r["predicted"] for r in repeats]
        if len(mine) >= 3:
            cached.append(abs(mine[2] - mine[1]) / statistics.fmean(mine[1:3]))
    lines = [
        f"draw seed {done['seed']}: {len({r['name'] for r in rows})} scenarios, {len(rows)} comparisons",
        f"|throughput error|: median {100 * statistics.median(errors):.1f}%, 90th percentile "
        f"{100 * percentile(errors, 0.9):.1f}%, worst {100 * max(errors):.1f}% "
        f"(at a fair time slice: median {100 * statistics.median(raw):.1f}%, 90th "
        f"{100 * percentile(raw, 0.9):.1f}%)",
        f"per-layer mean staleness |error| (mean over layers per comparison): median "
        f"{statistics.median(stale):.2f}, 90th percentile {percentile(stale, 0.9):.2f} versions; single "
        f"layers: median {statistics.median(layers):.2f}, 90th {percentile(layers, 0.9):.2f}",
        f"prediction and measurement intervals meet: throughput {100 * sum(meet_thr) / len(rows):.0f}%, "
        f"throughput and staleness both {100 * sum(meet) / len(rows):.0f}%; predicted throughput inside the "
        f"measured interval {100 * sum(inside) / len(rows):.0f}%",
        f"reproducibility, two fresh profiles: median {100 * statistics.median(repro):.1f}%, worst "
        f"{100 * max(repro):.1f}%; a cached profile against a fresh one: median "
        f"{100 * statistics.median(cached):.1f}%"
        if repro and cached
        else "reproducibility: too few repeats",
        _reproducibility_at_equal_cost(rows),
        _profile_precision(rows),
        _measurement_against_itself(rows),
        _inside_over_runs(rows),
        *_against_single_runs(rows),
    ]
    return "\n".join(lines)


def runs_of(repeats: list[dict]) -> list[dict]:
    """A scenario's real runs, each its throughput and its own interval: the runs of the one measurement
    its repeats share (rows with `runs`), or, in files from before it, one run per repeat."""
    if "runs" in repeats[0]:
        return repeats[0]["runs"]
    return [{"measured": r["measured"], "interval": r["throughput_intervals"]["measured"]} for r in repeats]


def _against_single_runs(rows: list[dict]) -> list[str]:
    """For files whose repeats share one measurement of several runs: the predictions judged as before it,
    each against one run (repeat i against run i), its error and whether it lies inside that run's
    interval over its batches."""
    errors, inside = [], []
    for repeats in by_scenario(rows).values():
        if "runs" not in repeats[0]:
            return []
        for row, one in zip(repeats, repeats[0]["runs"], strict=False):
            errors.append(abs(row["predicted"] / one["measured"] - 1))
            inside.append(one["interval"]["low"] <= row["predicted"] <= one["interval"]["high"])
    return [
        f"judged against single runs (repeat i against run i, as before compare --runs): |throughput "
        f"error| median {100 * statistics.median(errors):.1f}%, 90th {100 * percentile(errors, 0.9):.1f}%; "
        f"inside that run's interval over its batches {100 * sum(inside) / len(inside):.0f}%"
    ]


def by_scenario(rows: list[dict]) -> dict[str, list[dict]]:
    """The rows of each scenario, in the order its repeats ran."""
    grouped: dict[str, list[dict]] = {}
    for row in rows:
        grouped.setdefault(row["name"], []).append(row)
    return grouped


def _at_fair_share(row: dict) -> float:
    """The prediction at speed 1 (rows written before the role speeds: without the cores' efficiency)."""
    return row.get("predicted_at_fair_share", row.get("predicted_without_efficiency"))


def _reproducibility_at_equal_cost(rows: list[dict]) -> str:
    """What the two fresh profiles' predictions differ by: how much the profiled cost of a batch (mean
    forward + backward, each known to its profile's ±2%) changed between them, and what is left of the
    predictions' change once that is divided out (prediction ratio x cost ratio): the tool's own part."""
    costs, left = [], []
    for repeats in by_scenario(rows).values():
        fresh = [r for r in repeats if r["fresh_profile"]][:2]
        if len(fresh) < 2 or not all(r["profile"]["precision"] for r in fresh):
            continue
        batch = [r["profile"]["precision"] for r in fresh]
        ratio = _batch_cost(batch[0]) / _batch_cost(batch[1])
        costs.append(abs(ratio - 1))
        left.append(abs(fresh[0]["predicted"] / fresh[1]["predicted"] * ratio - 1))
    if not costs:
        return "reproducibility at equal cost: too few repeats"
    return (
        f"between the two fresh profiles the profiled cost of a batch changed by a median "
        f"{100 * statistics.median(costs):.1f}% (90th {100 * percentile(costs, 0.9):.1f}%); at equal cost "
        f"(prediction ratio x cost ratio) the predictions differ by a median "
        f"{100 * statistics.median(left):.1f}%"
    )


def _profile_precision(rows: list[dict]) -> str:
    """How well the fresh profiles said they knew a batch's cost (their 95% intervals' larger relative
    half-width), and how often they reached the ±2% target within the time cap."""
    stated = [r["profile"]["precision"] for r in rows if r["fresh_profile"] and r["profile"]["precision"]]
    if not stated:
        return "profiles' stated precision: none recorded"
    widths = [p["relative_half_width"] for p in stated]
    return (
        f"fresh profiles' stated precision (95% half-width of a batch's mean cost): median "
        f"±{100 * statistics.median(widths):.1f}%, 90th ±{100 * percentile(widths, 0.9):.1f}%; the ±2% "
        f"target reached in {sum(p['reached'] for p in stated)} of {len(stated)}; profile seconds median "
        f"{statistics.median(p['seconds'] for p in stated):.0f}"
    )


def _batch_cost(precision: dict) -> float:
    return precision["forward_s"]["value"] + precision["backward_s"]["value"]


def _measurement_against_itself(rows: list[dict]) -> str:
    """How often one repeat's measured throughput lies inside another repeat's measured interval (same
    scenario): what a prediction equal to a real run would score on "inside the measured interval"."""
    pairs, inside, spreads = 0, 0, []
    for repeats in by_scenario(rows).values():
        runs = runs_of(repeats)
        measured = [r["measured"] for r in runs]
        if len(measured) > 1:
            spreads.append((max(measured) - min(measured)) / statistics.median(measured))
        for i, one in enumerate(runs):
            interval = one["interval"]
            others = measured[:i] + measured[i + 1 :]
            pairs += len(others)
            inside += sum(interval["low"] <= value <= interval["high"] for value in others)
    if not pairs:
        return "the measurement against itself: too few repeats"
    return (
        f"the measurement against itself: another repeat's measured throughput inside a run's measured "
        f"interval in {100 * inside / pairs:.0f}% of {pairs} pairs; same-scenario measured spread "
        f"(max - min) / median: median {100 * statistics.median(spreads):.1f}%, 90th "
        f"{100 * percentile(spreads, 0.9):.1f}%"
    )


def _inside_over_runs(rows: list[dict]) -> str:
    """How often a prediction lies inside the 95% t-interval of the mean measured throughput over its
    scenario's repeats (`pdasgd.intervals.mean_interval`): an interval over runs, which sees what changes
    between runs on a shared machine, where a run's own interval over its batches does not."""
    from pdasgd.intervals import mean_interval

    judged, inside, widths = 0, 0, []
    for repeats in by_scenario(rows).values():
        runs = runs_of(repeats)
        if len(runs) < 2:
            continue
        interval = mean_interval([r["measured"] for r in runs])
        widths.append(interval.relative_half_width)
        judged += len(repeats)
        inside += sum(interval.low <= r["predicted"] <= interval.high for r in repeats)
    if not judged:
        return "inside the interval over runs: too few repeats"
    return (
        f"predicted throughput inside the 95% interval of the mean over the scenario's repeated runs: "
        f"{100 * inside / judged:.0f}% of {judged}; that interval's half-width: median "
        f"{100 * statistics.median(widths):.1f}%"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=1, help="seed of the draw")
    parser.add_argument("--scenarios", type=int, default=24)
    parser.add_argument("--repeats", type=int, default=3, help="predictions per scenario (3)")
    parser.add_argument("--runs", type=int, default=3, help="real runs per scenario, measured once (3)")
    parser.add_argument("--json", type=Path, help="results file (appended to as results come)")
    parser.add_argument("--report", type=Path, help="only report the results in this file")
    parser.add_argument("--list", action="store_true", help="print the draw and exit")
    args = parser.parse_args()
    if args.report:
        print(report(args.report))
        return
    if args.list:
        for table in draw(args.seed, args.scenarios):
            print(json.dumps(table))
        return
    path = args.json or Path(f"fidelity-random-{args.seed}.json")
    run(args.seed, args.scenarios, args.repeats, args.runs, path)
    print()
    print(report(path))


if __name__ == "__main__":
    main()
