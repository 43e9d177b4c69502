"""The same schedule in both engines: every executor method with every delay knob, on the timed network,
against the simulator's prediction of the same scenario with one device per worker.

The timed network's blocks sleep their [model] costs (executor.networks_timed), so the executor's threads
behave as if each worker had a device of its own. Measured throughput must be within 3% of the prediction
and each layer's mean version staleness within 0.25 versions. docs/design.md derives both tolerances from
the measured sleep accuracy and wake-up lag (docs/platform.md). Each case has its own layer costs (forward,
backward, update in ms per layer), chosen so that in the predicted steady state no read of a layer lands
within 1 ms (3 ms with two forward workers, whose lanes keep a phase shift once one wakes late) of an update
of it becoming visible, except the exact ties the schedule forces (a layer-0 read right after a batch ends
on the same thread or opens the window), which both engines count as visible:
`test_case_costs_keep_reads_clear_of_updates` checks that precondition. Hogwild's identical workers would
run in lockstep, every read tying with the other worker's update; a 3 ms sleep of worker:1 on every second
batch keeps them apart.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

import simulator.core
from executor.runtime import run
from pdasgd.machine import with_network
from pdasgd.metrics import summarize
from pdasgd.scenario import Scenario, parse_scenario
from simulator.engine import worker_groups
from simulator.records import FORWARD, UPDATE

THROUGHPUT_REL = 0.03
STALENESS_ABS = 0.25
CLEARANCE_S = 0.001
LANES_CLEARANCE_S = 0.003  # two forward workers: a late wake-up shifts one lane's phase for good


def sleep(worker: str, every: int = 3, extra_s: float = 0.02) -> dict:
    return {"straggler": [{"worker": worker, "every": every, "extra_s": extra_s, "kind": "sleep"}]}


def busy(worker: str, every: int = 3, extra_s: float = 0.02) -> dict:
    return {"straggler": [{"worker": worker, "every": every, "extra_s": extra_s, "kind": "busy"}]}


APART = sleep("worker:1", every=2, extra_s=0.003)
WINDOW = {"backward": 2, "max_in_flight": 2}
APART_R0, APART_R1 = (sleep(f"r{r}/worker:1", every=2, extra_s=0.004)["straggler"][0] for r in (0, 1))
TWO_FORWARD = {"forward": 2, "backward": 3}

# name: (method, workers, delays, per-layer (forward, backward, update) ms)
CASES = {
    "sequential": ("sequential", {}, {}, [(5.9, 12.0, 1.6), (4.5, 7.2, 1.4), (6.7, 11.7, 1.5)]),
    "sequential-visibility": (
        "sequential",
        {},
        {"visibility_s": 0.007},
        [(5.5, 10.7, 1.7), (6.8, 10.7, 1.9), (3.1, 9.3, 1.9)],
    ),
    "sequential-sleep": (
        "sequential",
        {},
        sleep("worker:0"),
        [(7.0, 10.3, 1.7), (5.3, 7.7, 0.9), (6.7, 10.5, 1.2)],
    ),
    "sequential-busy": (
        "sequential",
        {},
        busy("worker:0"),
        [(6.7, 10.4, 1.9), (6.7, 7.9, 0.6), (5.6, 11.7, 1.6)],
    ),
    "lu": ("async-lu", {}, {}, [(3.9, 11.6, 0.7), (3.6, 10.7, 1.7), (6.6, 11.3, 1.3)]),
    "lu-handoff": ("async-lu", {}, {"handoff_s": 0.01}, [(6.2, 8.6, 1.8), (6.9, 9.9, 1.5), (5.0, 11.9, 1.0)]),
    "lu-visibility": (
        "async-lu",
        {},
        {"visibility_s": 0.007},
        [(4.9, 12.0, 1.1), (6.6, 9.7, 0.7), (5.5, 9.9, 2.0)],
    ),
    "lu-sleep": ("async-lu", {}, sleep("backward:1"), [(6.1, 10.4, 1.6), (3.8, 11.6, 0.9), (6.5, 11.1, 1.9)]),
    "lu-busy": ("async-lu", {}, busy("backward:1"), [(4.7, 9.0, 1.6), (3.5, 8.7, 1.6), (6.3, 11.9, 0.9)]),
    "lu-window": ("async-lu", WINDOW, {}, [(9.1, 23.0, 3.2), (6.4, 23.9, 3.8), (6.6, 23.1, 2.3)]),
    "lu-2f": ("async-lu", TWO_FORWARD, {}, [(14.0, 24.0, 3.5), (11.7, 17.2, 1.7), (8.3, 14.7, 3.3)]),
    "bu": ("async-bu", {}, {}, [(4.8, 10.7, 0.8), (6.7, 11.0, 1.4), (6.3, 7.9, 0.6)]),
    "bu-handoff": ("async-bu", {}, {"handoff_s": 0.01}, [(3.5, 7.3, 1.7), (3.5, 8.2, 1.1), (6.5, 7.4, 1.2)]),
    "bu-visibility": (
        "async-bu",
        {},
        {"visibility_s": 0.007},
        [(3.0, 11.8, 1.4), (6.9, 8.0, 0.9), (6.9, 9.5, 1.3)],
    ),
    "bu-sleep": ("async-bu", {}, sleep("backward:1"), [(6.5, 8.9, 1.0), (6.9, 7.7, 1.6), (5.6, 7.2, 1.8)]),
    "bu-busy": ("async-bu", {}, busy("backward:1"), [(6.5, 8.9, 1.0), (6.9, 7.7, 1.6), (5.6, 7.2, 1.8)]),
    "bu-window": ("async-bu", WINDOW, {}, [(13.9, 17.8, 1.5), (7.6, 18.2, 1.9), (13.8, 14.6, 1.9)]),
    "bu-2f": ("async-bu", TWO_FORWARD, {}, [(13.2, 16.5, 2.6), (14.0, 19.3, 1.6), (12.1, 14.6, 1.5)]),
    "hogwild": ("hogwild", {"per_replica": 2}, APART, [(3.8, 8.9, 0.6), (4.6, 11.0, 1.5), (5.0, 10.2, 1.2)]),
    "hogwild-visibility": (
        "hogwild",
        {"per_replica": 2},
        {**APART, "visibility_s": 0.007},
        [(3.8, 7.4, 1.9), (6.7, 7.3, 1.6), (4.8, 7.6, 1.8)],
    ),
    "hogwild-sleep": (
        "hogwild",
        {"per_replica": 2},
        sleep("worker:1"),
        [(3.2, 11.2, 0.7), (5.4, 9.8, 1.4), (4.2, 9.1, 1.4)],
    ),
    "hogwild-busy": (
        "hogwild",
        {"per_replica": 2},
        busy("worker:1"),
        [(3.2, 11.2, 0.7), (5.4, 9.8, 1.4), (4.2, 9.1, 1.4)],
    ),
    # across 2 ranks (a process each): communication delays, averaging rounds, DDP's bucketed all-reduce
    "ddp-ranks": (  # twice the others' costs: DDP's reducer and the comm hook take ~0.5 ms a step
        "ddp",
        {"replicas": 2},
        {"allreduce_s": 0.004, "comm": [{"rank": 1, "extra_s": 0.006}]},
        [(8.2, 16.6, 2.4), (10.4, 18.2, 3.0), (7.4, 15.4, 2.2)],
    ),
    "lapsgd-ranks": (
        "lapsgd",
        {"replicas": 2, "per_replica": 2, "average_every": 4},
        {"allreduce_s": 0.002, "straggler": [{**APART_R0, "extra_s": 0.006}, {**APART_R1, "extra_s": 0.006}]},
        [(3.2, 11.2, 0.7), (5.4, 9.8, 1.4), (4.2, 9.1, 1.4)],
    ),
    "lapsgd-ranks-blocking": (
        "lapsgd",
        {"replicas": 2, "per_replica": 1, "average_every": 2, "averaging": "blocking"},
        {"allreduce_s": 0.004, **sleep("r1/worker:0", every=3, extra_s=0.01)},
        [(3.9, 8.8, 1.3), (5.1, 9.6, 1.2), (4.4, 8.1, 1.6)],
    ),
    "lppsgd-ranks": (
        "lppsgd",
        {"replicas": 2, "per_replica": 2, "average_every": 4},
        {"allreduce_s": 0.002, "comm": [{"rank": 0, "extra_s": 0.004}], "straggler": [APART_R0, APART_R1]},
        [(3.2, 11.2, 0.7), (5.4, 9.8, 1.4), (4.2, 9.1, 1.4)],
    ),
    "gossip-lu-ranks": (
        "gossip-lu",
        {"replicas": 2, "backward": 2, "max_in_flight": 3},
        {"allreduce_s": 0.012, "comm": [{"rank": 1, "extra_s": 0.01}]},
        [(3.7, 9.7, 1.2), (4.8, 10.1, 0.8), (3.0, 11.2, 1.0)],
    ),
}
# one case per knob and method in the default suite; the rest are marked slow
FAST = {
    "ddp-ranks",
    "lapsgd-ranks",
    "sequential",
    "lu",
    "bu-handoff",
    "lu-visibility",
    "bu-sleep",
    "lu-busy",
    "bu-window",
    "lu-2f",
    "hogwild",
}


def scenario(name: str) -> Scenario:
    method, workers, delays, costs = CASES[name]
    layers = [
        {"name": f"l{i}", "forward_s": f / 1000, "backward_s": b / 1000, "update_s": u / 1000}
        for i, (f, b, u) in enumerate(costs)
    ]
    batches = 24 if method == "sequential" else 40
    return parse_scenario(
        {
            "method": method,
            "model": {"layer": layers},
            "workers": {"forward": 1, "backward": 3, "max_in_flight": 8, **workers},
            "delays": delays,
            "train": {"network": "timed", "batch_size": 4},
            "run": {"batches": batches, "warmup": batches // 5},
        }
    )


GOSSIP = {"gossip-lu-ranks"}  # checked by their own test (below)
MIX_ROUNDS = 2  # gossip: mixes per rank and layer within two rounds of the prediction (of about 11)
GOSSIP_STALENESS_ABS = 0.5


def cases() -> list:
    return [
        pytest.param(name, marks=() if name in FAST else pytest.mark.slow)
        for name in CASES
        if name not in GOSSIP
    ]


def clearance_s(sc: Scenario) -> float:
    """The least time between a steady-state read of a layer and an update of it becoming visible, in the
    predicted schedule, leaving out the ties the schedule forces: a read that starts exactly when the
    update's batch ended, on the same worker or because that end opened the window."""
    rows = simulator.core.run_simpy(sc)
    copy = worker_groups(sc)  # across ranks a read can only see its own rank's updates
    reads = np.flatnonzero((rows.op == FORWARD) & (rows.batch >= sc.run.warmup))
    # gossip mixes are left out: their rounds run on the communicator's clock, which drifts against the
    # workers' by the real collectives' cost, so no choice of costs keeps every read clear of them
    updates = np.flatnonzero(rows.op == UPDATE)
    back = sc.workers.max_in_flight * sc.definition.rank_count(sc.workers)  # a rank trains every R-th batch
    least = np.inf
    for layer in range(len(sc.model.layers)):
        r = reads[rows.layer[reads] == layer]
        u = updates[rows.layer[updates] == layer]
        gap = np.abs(rows.start_s[r][:, None] - rows.visible_s[u][None, :])
        gap[copy[rows.worker[r]][:, None] != copy[rows.worker[u]][None, :]] = np.inf
        same_worker = rows.worker[r][:, None] == rows.worker[u][None, :]
        window = rows.batch[r][:, None] - back == rows.batch[u][None, :]
        forced = (gap < 1e-9) & (same_worker | (window & sc.definition.windowed))
        least = min(least, float(gap[~forced].min()))
    return least


@pytest.mark.parametrize("name", list(CASES))
def test_case_costs_keep_reads_clear_of_updates(name: str) -> None:
    sc = scenario(name)
    assert clearance_s(sc) >= (LANES_CLEARANCE_S if sc.workers.forward > 1 else CLEARANCE_S)


@pytest.mark.parametrize("name", cases())
def test_the_executor_runs_the_schedule_the_simulator_predicts(name: str) -> None:
    sc = scenario(name)
    result = run(sc, curve_points=0)
    measured = result.summary
    # across ranks the real collective's own cost comes on top of the modelled one: predict with both, as
    # compare does (the probe the ranks measured)
    predicted = simulator.simulate_summary(with_network(sc, result.trace.info.get("allreduce_probe")))
    error = measured.throughput_batches_per_s / predicted.throughput_batches_per_s - 1
    assert abs(error) <= THROUGHPUT_REL, f"throughput {error:+.2%}"
    stale_p, stale_m = predicted.staleness.per_layer_mean, measured.staleness.per_layer_mean
    assert stale_m == pytest.approx(stale_p, abs=STALENESS_ABS), (stale_p, stale_m)


@pytest.mark.slow  # the output layer's staleness missed 0.5 in 1 of 4 runs (2.0 predicted, 1.44 measured)
@pytest.mark.parametrize("name", sorted(GOSSIP))
def test_gossip_ranks_run_the_rounds_the_simulator_predicts(name: str) -> None:
    """Gossip rounds run on the communicator's clock: each real round costs about 1.5 ms more than the
    modelled latency and bytes plus the probed collective (two collectives, copies and mixes in Python on
    a loaded machine; measured 36 against 34.4 ms per round here). So the rounds drift against the workers,
    and whether a mix lands between a batch's read and its update of a short-lived layer (the output
    layer: 20 ms) differs by up to half a version on average (measured 1.5 against 2.0). Throughput must
    hold to 3%, the mixes to two rounds (of about 11) per rank and layer, each layer's staleness to 0.5."""
    sc = scenario(name)
    result = run(sc, curve_points=0)
    predicted_trace = simulator.simulate(with_network(sc, result.trace.info.get("allreduce_probe")))
    predicted, measured = summarize(predicted_trace), result.summary
    error = measured.throughput_batches_per_s / predicted.throughput_batches_per_s - 1
    assert abs(error) <= THROUGHPUT_REL, f"throughput {error:+.2%}"
    mixes_p, mixes_m = _mixes(predicted_trace), _mixes(result.trace)
    assert set(mixes_m) == set(mixes_p)
    assert all(abs(mixes_m[key] - mixes_p[key]) <= MIX_ROUNDS for key in mixes_p), (mixes_p, mixes_m)
    stale_p, stale_m = predicted.staleness.per_layer_mean, measured.staleness.per_layer_mean
    assert stale_m == pytest.approx(stale_p, abs=GOSSIP_STALENESS_ABS), (stale_p, stale_m)


def _mixes(trace) -> Counter:
    return Counter((span.worker, span.layer) for span in trace.spans if span.op == "mix")
