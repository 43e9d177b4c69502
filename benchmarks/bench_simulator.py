"""Benchmark: the simulator's wall time against a bare SimPy model of the same schedule, and the fast path.

1. Shared devices (SimPy engine): 1 forward + 2 backward workers, 50 layers, 10,000 batches, all three
   workers on one 2-slot device. `simulator.simulate` (which also resolves versions, memory and builds every
   Span of the trace) against `bare_model` below: the same schedule written directly in SimPy with a
   `simpy.Resource` per device, a `simpy.Store` for the hand-off and one request/timeout/release per layer
   step, recording nothing. Target: simulate <= 1.3x bare.
2. Fast path: the same workers each on a device of its own (fixed times): `simulate_summary` on the fast path
   against the SimPy engine's `simulate` on the same scenario (and against `simulate` + `summarize`, which
   gives the same numbers); both summaries must agree. Target: >= 100x.
3. Gossip at scale (--gossip): gossip-lu on 128 simulated ranks x (1F+2B) x 16 layers x 2,000 batches per
   rank, `simulate_summary` on the gossip fast path (`simulator.fastgossip`), plain and with a slow link
   (rank 0 waits 20 ms before each round). Target: <= 60 s. Beside it, 32 ranks x 100 batches on both
   engines: the summaries must agree, and the ratio.

Medians of --repeats runs, the ratios taken inside the same run. Usage:
    .venv/bin/python benchmarks/bench_simulator.py [--batches 10000] [--layers 50] [--repeats 5]
    .venv/bin/python benchmarks/bench_simulator.py --skip-shared --skip-fast --gossip [--repeats 3]
"""

from __future__ import annotations

import argparse
import gc
import math
import statistics
import time

import simpy

from pdasgd.metrics import summarize
from pdasgd.scenario import Scenario, parse_scenario
from simulator import simulate, simulate_summary


def scenario(batches: int, layers: int, shared: bool, sizes: bool = False) -> Scenario:
    model = {"layers": layers, "forward_s": 0.027, "beta": 2.35}
    if sizes:
        model.update(activation_bytes=2**20, param_bytes=4 * 2**20)
    data = {
        "name": "bench-1f2b",
        "method": "async-lu",
        "model": model,
        "workers": {"forward": 1, "backward": 2, "max_in_flight": 8},
        "run": {"batches": batches, "warmup": 10},
    }
    if shared:
        data["device"] = [{"name": "cpu", "slots": 2}]
    return parse_scenario(data)


def bare_model(sc: Scenario) -> float:
    """The same schedule in plain SimPy (no records, no versions); returns the makespan."""
    env = simpy.Environment()
    table = sc.device_table()
    resources = {name: simpy.Resource(env, capacity=d.slots) for name, d in table.items()}
    placement = sc.device_of()
    layers = sc.model.layers
    batches, q = sc.run.batches, sc.workers.max_in_flight
    queue = simpy.Store(env)
    done = [env.event() for _ in range(batches)]

    def step(resource, duration):
        request = resource.request()
        yield request
        yield env.timeout(duration)
        resource.release(request)

    def forward(resource):
        for i in range(batches):
            if i >= q:
                yield done[i - q]
            for layer in layers:
                yield from step(resource, layer.forward_s)
            queue.put(i)

    def backward(resource):
        while True:
            i = yield queue.get()
            for layer in reversed(layers):
                yield from step(resource, layer.backward_s)
                if layer.update_s > 0:
                    yield from step(resource, layer.update_s)
            done[i].succeed()

    env.process(forward(resources[placement["forward:0"]]))
    for j in range(sc.workers.backward):
        env.process(backward(resources[placement[f"backward:{j}"]]))
    env.run()
    return env.now


def timed(function, *args, **kwargs):
    gc.collect()
    start = time.perf_counter()
    result = function(*args, **kwargs)
    return time.perf_counter() - start, result


def shared_devices(batches: int, layers: int, repeats: int) -> None:
    sc = scenario(batches, layers, shared=True)
    bare_s, sim_s, ratios = [], [], []
    for _ in range(repeats):
        seconds_bare, makespan_bare = timed(bare_model, sc)
        seconds_sim, trace = timed(simulate, sc, progress=False)
        bare_s.append(seconds_bare)
        sim_s.append(seconds_sim)
        ratios.append(seconds_sim / seconds_bare)
        makespan_sim = max(span.end_s for span in trace.spans)
    print(f"shared devices: 1F+2B on one 2-slot device, {layers} layers, {batches} batches, x{repeats}")
    print(f"  spans in trace          {len(trace.spans)}")
    print(f"  makespan bare / sim     {makespan_bare:.6f} / {makespan_sim:.6f} s (simulated)")
    _report("bare SimPy model", bare_s, "s")
    _report("simulate (simpy engine)", sim_s, "s")
    _report("ratio simulate / bare", ratios, "", note="target <= 1.3")


def fast_path(batches: int, layers: int, repeats: int) -> None:
    sc = scenario(batches, layers, shared=False)
    simpy_s, summarize_s, fast_s = [], [], []
    for _ in range(repeats):
        seconds_simpy, trace = timed(simulate, sc, engine="simpy", progress=False)
        seconds_summary, slow = timed(summarize, trace)
        seconds_fast, quick = timed(simulate_summary, sc, engine="fast", progress=False)
        simpy_s.append(seconds_simpy)
        summarize_s.append(seconds_summary)
        fast_s.append(seconds_fast)
    print(f"fast path: 1F+2B, a device each, {layers} layers, {batches} batches, x{repeats}")
    print(f"  summaries agree         {_same_summary(slow.to_dict(), quick.to_dict())}")
    _report("SimPy engine simulate", simpy_s, "s")
    _report("  + metrics.summarize", summarize_s, "s")
    _report("fast path summary", fast_s, "s", digits=4)
    conservative = [a / b for a, b in zip(simpy_s, fast_s, strict=True)]
    like_for_like = [(a + c) / b for a, c, b in zip(simpy_s, summarize_s, fast_s, strict=True)]
    _report("fast vs simulate", conservative, "x", digits=0, note="target >= 100x")
    _report("fast vs simulate+summ.", like_for_like, "x", digits=0)


def _same_summary(a: dict, b: dict) -> bool:
    def close(x, y):
        if isinstance(x, dict):
            return x.keys() == y.keys() and all(close(x[k], y[k]) for k in x)
        if isinstance(x, list):
            return len(x) == len(y) and all(close(p, q) for p, q in zip(x, y, strict=True))
        if isinstance(x, float):
            return math.isclose(x, y, rel_tol=1e-9, abs_tol=1e-12)
        return x == y

    return close(a, b)


def million(layers: int) -> None:
    print(f"fast path summary, 10^6 batches x {layers} layers (one run each)")
    for sizes in (False, True):
        sc = scenario(1_000_000, layers, shared=False, sizes=sizes)
        seconds, result = timed(simulate_summary, sc, progress=False)
        label = "with layer sizes (memory peak)" if sizes else "without layer sizes"
        print(
            f"  {label:<31} {seconds:.1f} s: {result.throughput_batches_per_s:.4f} batches/s, "
            f"staleness mean {result.staleness.mean:.4f}, memory peak {result.memory_peak_bytes}"
        )


def gossip_scenario(ranks: int, per_rank: int, slow_link: bool = False) -> Scenario:
    data = {
        "name": "bench-gossip",
        "method": "gossip-lu",
        "model": {"layers": 16, "forward_s": 0.016, "beta": 2.0, "param_bytes": 4_000_000},
        "workers": {"forward": 1, "backward": 2, "replicas": ranks, "max_in_flight": 4},
        "delays": {"allreduce_s": 0.0001, "allreduce_bytes_per_s": 1e10},
        "run": {"batches": ranks * per_rank, "warmup": ranks * 10},
    }
    if slow_link:
        data["delays"]["comm"] = [{"rank": 0, "extra_s": 0.02}]
    return parse_scenario(data)


def gossip(repeats: int) -> None:
    print("gossip-lu at scale: 1F+2B per rank, 16 layers, 4 MB per layer, fast path (simulator.fastgossip)")
    for slow_link in (False, True):
        sc = gossip_scenario(128, 2000, slow_link)
        seconds = []
        for _ in range(repeats):
            elapsed, result = timed(simulate_summary, sc, engine="fast", progress=False)
            seconds.append(elapsed)
        label = "128 x 2,000, slow link" if slow_link else "128 x 2,000"
        _report(label, seconds, "s", digits=2, note="target <= 60 s")
        print(
            f"  {'':<23} {result.throughput_batches_per_s:.1f} batches/s, staleness mean "
            f"{result.staleness.mean:.4f}, memory peak {result.memory_peak_bytes}"
        )
    sc = gossip_scenario(32, 100)
    simpy_s, slow = timed(simulate_summary, sc, engine="simpy", progress=False)
    fast_s, quick = timed(simulate_summary, sc, engine="fast", progress=False)
    print(f"  32 x 100 on both engines: summaries agree {_same_summary(slow.to_dict(), quick.to_dict())}")
    ratio = simpy_s / fast_s
    print(f"  {'SimPy simulate_summary':<23} {simpy_s:.2f} s, fast path {fast_s:.3f} s: {ratio:.0f}x")


def _report(label: str, values: list[float], unit: str, digits: int = 3, note: str = "") -> None:
    every = ", ".join(f"{v:.{digits}f}" for v in values)
    median = statistics.median(values)
    print(f"  {label:<23} median {median:.{digits}f}{unit}  (all {every})  {note}".rstrip())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batches", type=int, default=10_000)
    parser.add_argument("--layers", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--skip-shared", action="store_true", help="skip the shared-device comparison")
    parser.add_argument("--skip-fast", action="store_true", help="skip the fast-path comparison")
    parser.add_argument("--million", action="store_true", help="also time the fast path on 10^6 batches")
    parser.add_argument("--gossip", action="store_true", help="also time gossip on 128 simulated ranks")
    args = parser.parse_args()
    if not args.skip_shared:
        shared_devices(args.batches, args.layers, args.repeats)
    if not args.skip_fast:
        fast_path(args.batches, args.layers, args.repeats)
    if args.million:
        million(args.layers)
    if args.gossip:
        gossip(args.repeats)


if __name__ == "__main__":
    main()
