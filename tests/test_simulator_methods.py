"""Shared devices, jitter, stragglers and the defining behaviour of each method."""

from __future__ import annotations

import random
from collections import Counter, defaultdict

import pytest

from pdasgd.methods import BUILT_IN, split_rank
from pdasgd.metrics import makespan_s, steady_time_per_batch_s, summarize
from pdasgd.scenario import ScenarioError, parse_scenario
from simulator import simulate


def scenario(method: str, **sections) -> object:
    data = {"method": method, "model": {"layers": 2, "forward_s": 1.0, "beta": 1.0}, "run": {"batches": 12}}
    data.update(sections)
    data["run"] = {"warmup": 0, **data["run"]}
    return parse_scenario(data)


def max_concurrency(spans) -> int:
    events = sorted(
        [(s.start_s, 1) for s in spans] + [(s.end_s, -1) for s in spans], key=lambda e: (e[0], e[1])
    )
    level = peak = 0
    for _, delta in events:
        level += delta
        peak = max(peak, level)
    return peak


def test_no_device_ever_runs_more_ops_than_it_has_slots() -> None:
    rng = random.Random(5)
    for trial in range(30):
        method = rng.choice([m.name for m in BUILT_IN])
        devices = [
            {"name": f"d{i}", "slots": rng.randint(1, 2), "speed": rng.choice([0.5, 1.0, 2.0])}
            for i in range(2)
        ]
        sc = scenario(
            method,
            model={"layers": 3, "forward_s": 0.3, "beta": rng.uniform(0.5, 3), "update_s": 0.01},
            workers={"forward": 2, "backward": 2, "replicas": 2, "per_replica": 2, "max_in_flight": 4},
            delays={"jitter_cv": rng.choice([0.0, 0.3]), "handoff_s": 0.01},
            device=devices,
            run={"batches": 24, "seed": trial},
        )
        trace = simulate(sc)
        by_device = defaultdict(list)
        for span in trace.spans:
            if span.op in ("forward", "backward", "update") and span.end_s > span.start_s:
                by_device[span.device].append(span)
        slots = trace.device_slots
        assert all(max_concurrency(spans) <= slots[name] for name, spans in by_device.items()), trial


BOUND_CASES = [
    # (placement, devices, bound on the time per batch with F = 1, B = beta)
    ({"forward": ["cpu"], "backward": ["cpu", "cpu"]}, [{"name": "cpu", "slots": 2}], lambda b: (1 + b) / 2),
    ({"forward": ["cpu"], "backward": ["cpu", "cpu"]}, [{"name": "cpu", "slots": 1}], lambda b: 1 + b),
    (
        {"forward": ["f"], "backward": ["g", "g"]},
        [{"name": "f", "speed": 2.0}, {"name": "g", "slots": 1}],
        lambda b: max(0.5, b),
    ),
    (
        {"forward": ["f"], "backward": ["f", "g"]},
        [{"name": "f", "slots": 1}, {"name": "g", "slots": 1, "speed": 0.5}],
        lambda b: (1 + b) / 3,  # the two devices together do at most 1 + 0.5 units of work per unit time
    ),
]


@pytest.mark.parametrize(("placement", "devices", "bound"), BOUND_CASES)
def test_throughput_never_beats_the_busiest_device(placement, devices, bound) -> None:
    """Fixed times: the whole run takes at least batches x bound, and the measured steady time per batch is
    at least the bound up to the work already in flight when the measuring window opens (<= Q batches)."""
    batches, warmup, q = 300, 50, 6
    for method in ("async-lu", "async-bu"):
        for beta in (0.5, 1.0, 2.35, 3.0):
            sc = scenario(
                method,
                model={"layers": 4, "forward_s": 1.0, "beta": beta},
                workers={"forward": 1, "backward": 2, "max_in_flight": q},
                device=devices,
                placement=placement,
                run={"batches": batches, "warmup": warmup},
            )
            trace = simulate(sc)
            assert makespan_s(trace) >= batches * bound(beta) * (1 - 1e-12), (method, beta)
            window = (batches - warmup) / (batches - warmup + q)
            assert steady_time_per_batch_s(trace) >= bound(beta) * window, (method, beta)


@pytest.mark.parametrize("method", [m.name for m in BUILT_IN if m.name != "lppsgd"])
def test_one_single_slot_device_is_never_faster_than_sequential(method: str) -> None:
    for beta in (0.5, 2.0, 3.0):
        sc = scenario(
            method,
            model={"layers": 3, "forward_s": 1.0, "beta": beta, "update_s": 0.05},
            workers={"forward": 2, "backward": 3, "replicas": 2, "per_replica": 2, "average_every": 2},
            device=[{"name": "cpu", "slots": 1}],
            run={"batches": 20},
        )
        sequential = 20 * (1.0 + beta + 3 * 0.05)
        assert makespan_s(simulate(sc)) >= sequential - 1e-9, (method, beta)


def mean_time_per_batch_s(method: str, extra: dict, jitter_cv: float, seed: int, batches: int = 600) -> float:
    model = {"layers": 4, "forward_s": 1.0, "beta": 2.0}
    run = {"batches": batches, "seed": seed}
    sc = scenario(method, model=model, delays={"jitter_cv": jitter_cv}, run=run, **extra)
    return makespan_s(simulate(sc)) / batches


# Schedules where workers wait for each other: noise costs time (E[max] > max E), seen in every seeded run.
SYNCHRONISING = [
    ("async-lu", {"workers": {"forward": 1, "backward": 2, "max_in_flight": 3}}),  # F = B / k = (F + B) / Q
    ("async-bu", {"workers": {"forward": 1, "backward": 3, "max_in_flight": 3}}),  # the window binds
    ("ddp", {"workers": {"replicas": 3}}),
    ("lapsgd", {"workers": {"replicas": 2, "per_replica": 2, "average_every": 4, "averaging": "blocking"}}),
]
# Schedules with one busy resource and no waiting: noise averages out; the seeds' mean must not be lower
# than the fixed time by more than three standard errors.
INDEPENDENT = [
    ("sequential", {}),
    ("hogwild", {"workers": {"replicas": 1, "per_replica": 3}, "device": [{"name": "cpu", "slots": 2}]}),
    ("async-lu", {"workers": {"forward": 1, "backward": 3}}),
]


@pytest.mark.parametrize(("method", "extra"), SYNCHRONISING)
def test_jitter_never_makes_the_mean_time_per_batch_shorter(method: str, extra: dict) -> None:
    fixed = mean_time_per_batch_s(method, extra, 0.0, 0)
    for seed in range(4):
        assert mean_time_per_batch_s(method, extra, 0.4, seed) >= fixed, (method, seed)


@pytest.mark.parametrize(("method", "extra"), INDEPENDENT)
def test_jitter_without_waiting_averages_out(method: str, extra: dict) -> None:
    fixed = mean_time_per_batch_s(method, extra, 0.0, 0)
    runs = [mean_time_per_batch_s(method, extra, 0.4, seed) for seed in range(4)]
    mean = sum(runs) / len(runs)
    spread = (sum((x - mean) ** 2 for x in runs) / (len(runs) - 1)) ** 0.5
    assert mean >= fixed - 3 * spread / len(runs) ** 0.5


STRAGGLER = {"worker": "worker:1", "every": 2, "extra_s": 0.5, "kind": "busy"}


def test_ddp_straggler_slows_every_replica_exactly() -> None:
    """F = B = 1 per batch, update 0.1 per layer, all-reduce 0.2 (one bucket: no parameter bytes): a step is
    2 + 0.2 + 0.2 = 2.4 s, and rank 1's worker is 0.5 s late on its 2nd, 4th and 6th batch; rank 0 waits
    for it inside the all-reduce."""
    sc = scenario(
        "ddp",
        model={"layers": 2, "forward_s": 1.0, "beta": 1.0, "update_s": 0.1},
        workers={"replicas": 2},
        delays={"allreduce_s": 0.2, "straggler": [{**STRAGGLER, "worker": "r1/worker:0"}]},
    )
    trace = simulate(sc)
    assert makespan_s(trace) == pytest.approx(6 * 2.4 + 3 * 0.5, abs=1e-9)
    allreduce = defaultdict(list)
    for span in trace.spans:
        if span.op == "allreduce":
            allreduce[span.worker].append(round(span.duration_s, 9))
    assert allreduce == {"r0/comm": [0.2, 0.7] * 3, "r1/comm": [0.2] * 6}
    assert not [s for s in trace.spans if s.op == "wait"]
    assert summarize(trace).staleness.max == 0


def test_ddp_buckets_overlap_the_backward_and_run_one_after_another() -> None:
    """4 layers of 1 ms forward, 2 ms backward and 1 MB each; buckets of 1.5 MB hold layers (3, 2) and
    (1, 0), ready at 8 and 12 ms. An all-reduce costs 1 ms + 2 MB / (1 GB/s) = 3 ms, and rank 1 waits 2 ms
    before each of its communication ops: bucket 0 ends at 8 + 2 + 3 = 13 ms, bucket 1 starts when both
    it is ready and bucket 0 is done (13 ms) and ends at 13 + 2 + 3 = 18 ms: a step of 18 ms."""
    sc = scenario(
        "ddp",
        model={"layers": 4, "forward_s": 0.004, "beta": 2.0, "param_bytes": 1_000_000},
        workers={"replicas": 2},
        delays={
            "allreduce_s": 0.001,
            "allreduce_bytes_per_s": 1e9,
            "comm": [{"rank": 1, "extra_s": 0.002}],
        },
        distributed={"bucket_mb": 1.5 / 1.048576},
        run={"batches": 4},
    )
    trace = simulate(sc)
    comm = sorted(
        ((s.worker, s.op, s.batch, s.layer, round(s.start_s, 9), round(s.end_s, 9)) for s in trace.spans)
        for _ in [0]
    )[0]
    first_step = [row for row in comm if row[0].endswith("/comm") and row[2] in (0, 1)]
    assert sorted(first_step) == [
        ("r0/comm", "allreduce", 0, 0, 0.013, 0.018),
        ("r0/comm", "allreduce", 0, 2, 0.008, 0.013),
        ("r1/comm", "allreduce", 1, 0, 0.015, 0.018),
        ("r1/comm", "allreduce", 1, 2, 0.01, 0.013),
        ("r1/comm", "wait", 1, 0, 0.013, 0.015),
        ("r1/comm", "wait", 1, 2, 0.008, 0.01),
    ]
    assert makespan_s(trace) == pytest.approx(2 * 0.018, abs=1e-12)


def test_methods_across_ranks_need_the_same_batches_on_every_rank() -> None:
    with pytest.raises(ScenarioError, match=r"^run.batches: ddp gives every rank the same number"):
        scenario("ddp", workers={"replicas": 3}, run={"batches": 7})


def test_a_straggler_costs_ddp_more_than_async_lu() -> None:
    model = {"layers": 2, "forward_s": 1.0, "beta": 1.0}
    run = {"batches": 200, "warmup": 20}

    def per_batch(method, workers, straggler):
        delays = {"straggler": [straggler]} if straggler else {}
        return steady_time_per_batch_s(
            simulate(scenario(method, model=model, workers=workers, delays=delays, run=run))
        )

    ddp = {"replicas": 2}
    lu = {"forward": 1, "backward": 2}
    ddp_straggler = {**STRAGGLER, "worker": "r1/worker:0"}
    ddp_slowdown = per_batch("ddp", ddp, ddp_straggler) / per_batch("ddp", ddp, None)
    lu_slowdown = per_batch("async-lu", lu, {**STRAGGLER, "worker": "backward:1"}) / per_batch(
        "async-lu", lu, None
    )
    assert ddp_slowdown == pytest.approx(1 + 0.25 / 2, rel=1e-2)  # 0.5 s every other 2 s step
    assert lu_slowdown == pytest.approx(1.0, abs=1e-9)  # the backward worker has the slack to absorb it


def test_hogwild_waits_for_nobody() -> None:
    sc = scenario(
        "hogwild",
        workers={"replicas": 1, "per_replica": 3},
        delays={"straggler": [{"worker": "worker:2", "every": 1, "extra_s": 1.0, "kind": "busy"}]},
        run={"batches": 30},
    )
    trace = simulate(sc)
    assert not [s for s in trace.spans if s.op in ("wait", "allreduce")]
    for worker in trace.workers():
        spans = sorted((s for s in trace.spans if s.worker == worker), key=lambda s: s.start_s)
        never_idle = (a.end_s == pytest.approx(b.start_s) for a, b in zip(spans, spans[1:], strict=False))
        assert all(never_idle)
    handled = Counter(s.worker for s in trace.spans if s.op == "forward" and s.layer == 0)
    assert handled["worker:2"] < handled["worker:0"] == handled["worker:1"]
    assert sum(handled.values()) == 30


def test_hogwild_versions_are_shared_by_all_workers() -> None:
    """Two workers in lockstep: batch 2j+1 updates right after batch 2j did (same instant, batch order), so
    half the batches see one update in between."""
    trace = simulate(scenario("hogwild", workers={"replicas": 1, "per_replica": 2}, run={"batches": 20}))
    assert summarize(trace).staleness.per_layer_mean == [0.5, 0.5]


def test_lapsgd_with_one_rank_is_hogwild() -> None:
    workers = {"replicas": 1, "per_replica": 2, "average_every": 3}
    lapsgd = simulate(scenario("lapsgd", workers=workers))
    hogwild = simulate(scenario("hogwild", workers=workers))
    local = [
        (split_rank(s.worker)[1], s.op, s.batch, s.layer, s.start_s, s.end_s, s.version) for s in lapsgd.spans
    ]
    assert local == [(s.worker, s.op, s.batch, s.layer, s.start_s, s.end_s, s.version) for s in hogwild.spans]


LAPSGD = {
    "model": {"layers": 2, "forward_s": 1.0, "beta": 1.0, "update_s": 0.1},
    "delays": {"allreduce_s": 0.2},
}


def test_lapsgd_averages_in_the_background() -> None:
    """Two ranks of one worker, 6 batches each of 2.2 s with updates; rounds after local batches 3 and 6
    and a last one: the workers never wait, the communicators average at 6.6, 13.2 and 13.4 s."""
    sc = scenario("lapsgd", workers={"replicas": 2, "per_replica": 1, "average_every": 3}, **LAPSGD)
    trace = simulate(sc)
    ends = [s.end_s for s in trace.spans if s.op == "update" and s.layer == 0 and s.worker == "r0/worker:0"]
    assert ends == pytest.approx([2.2 * k for k in range(1, 7)], abs=1e-9)
    rounds = sorted(
        (s.worker, round(s.start_s, 9), round(s.end_s, 9)) for s in trace.spans if s.op == "allreduce"
    )
    assert rounds == [
        (f"r{r}/comm", start, round(start + 0.2, 9)) for r in (0, 1) for start in (6.6, 13.2, 13.4)
    ]
    assert summarize(trace).staleness.max == 0  # one worker per rank's copy; a round is not a version


def test_blocking_averaging_holds_the_workers_for_each_round() -> None:
    workers = {"replicas": 2, "per_replica": 1, "average_every": 3, "averaging": "blocking"}
    trace = simulate(scenario("lapsgd", workers=workers, **LAPSGD))
    ends = [s.end_s for s in trace.spans if s.op == "update" and s.layer == 0 and s.worker == "r0/worker:0"]
    assert ends == pytest.approx([2.2, 4.4, 6.6, 9.0, 11.2, 13.4], abs=1e-9)  # 0.2 s after batch 3
    assert makespan_s(trace) == pytest.approx(13.4 + 0.2 + 0.2, abs=1e-9)  # round 2, then the last


@pytest.mark.parametrize("averaging", ["background", "blocking"])
def test_a_straggling_rank_holds_back_the_other_only_when_averaging_blocks(averaging: str) -> None:
    workers = {"replicas": 2, "per_replica": 1, "average_every": 2, "averaging": averaging}
    late = {"straggler": [{"worker": "r1/worker:0", "every": 2, "extra_s": 0.7, "kind": "busy"}]}

    def rank0_end(delays: dict) -> float:
        trace = simulate(scenario("lapsgd", workers=workers, delays=delays, run={"batches": 24}))
        return max(s.end_s for s in trace.spans if s.worker == "r0/worker:0")

    assert rank0_end({}) == pytest.approx(12 * 2.0)
    if averaging == "background":
        assert rank0_end(late) == rank0_end({})
    else:  # rank 0 waits at each round for rank 1's 0.7 s; the sixth comes after rank 0's last batch
        assert rank0_end(late) == pytest.approx(12 * 2.0 + 5 * 0.7, abs=1e-9)


def test_lppsgd_workers_update_only_their_partition() -> None:
    workers = {"replicas": 2, "per_replica": 2, "average_every": 2}
    model = {"layers": 4, "forward_s": 1.0, "beta": 2.0}
    trace = simulate(scenario("lppsgd", model=model, workers=workers, run={"batches": 24}))
    updated, backward = defaultdict(set), defaultdict(set)
    for span in trace.spans:
        if span.op == "update":
            updated[span.worker].add(span.layer)
        if span.op == "backward":
            backward[span.worker].add(span.layer)
    assert updated == {
        "r0/worker:0": {0, 1},
        "r0/worker:1": {2, 3},
        "r1/worker:0": {0, 1},
        "r1/worker:1": {2, 3},
    }
    assert backward["r0/worker:1"] == {2, 3} and backward["r0/worker:0"] == {0, 1, 2, 3}
    # less backward per batch: without averaging rounds holding them back, the workers get through more
    alone = {"replicas": 1, "per_replica": 2}
    lppsgd = simulate(scenario("lppsgd", model=model, workers=alone, run={"batches": 24}))
    lapsgd = simulate(scenario("lapsgd", model=model, workers=alone, run={"batches": 24}))
    assert makespan_s(lppsgd) < makespan_s(lapsgd)


def test_straggler_delay_lands_on_the_first_op_of_every_nth_batch() -> None:
    stragglers = [
        {"worker": "forward:0", "every": 3, "extra_s": 0.25, "kind": "busy"},
        {"worker": "backward:1", "every": 2, "extra_s": 0.125, "kind": "busy"},
    ]
    sc = scenario("async-lu", workers={"forward": 1, "backward": 2}, delays={"straggler": stragglers})
    trace = simulate(sc)
    forward0 = {s.batch: s.duration_s for s in trace.spans if s.op == "forward" and s.layer == 0}
    assert [b for b, d in forward0.items() if d > 0.5] == [2, 5, 8, 11]
    assert all(forward0[b] == pytest.approx(0.75) for b in (2, 5, 8, 11))
    top = [s for s in trace.spans if s.op == "backward" and s.layer == 1 and s.worker == "backward:1"]
    assert [round(s.duration_s, 9) for s in top] == [0.5, 0.625] * (len(top) // 2)
