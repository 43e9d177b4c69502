"""The two engines agree; the fast summary equals summarize(trace); traces are deterministic."""

from __future__ import annotations

import itertools
import math

import pytest

import simulator.fastsummary as fastsummary
from pdasgd.metrics import summarize
from pdasgd.scenario import ScenarioError, parse_scenario
from simulator import choose_engine, simulate, simulate_summary

FIXED_GRID = list(
    itertools.product(
        ("sequential", "async-lu", "async-bu"),
        (1, 4),  # layers
        (0.5, 2.0, 2.3),  # beta
        (1, 2),  # forward workers
        (1, 3),  # backward workers
        (2, 100),  # max_in_flight
        (0.0, 0.37),  # hand-off
        (0.0, 0.6),  # update visibility delay
        (1.0, 0.1),  # forward time (0.1: rounding differs between engines)
    )
)


def fixed(method, layers, beta, n_f, k, q, handoff_s, visibility_s, forward_s, batches=17):
    return parse_scenario(
        {
            "method": method,
            "model": {
                "layers": layers,
                "forward_s": forward_s,
                "beta": beta,
                "update_s": 0.01 if visibility_s else 0.0,
                "activation_bytes": 7,
                "param_bytes": 13,
            },
            "workers": {"forward": n_f, "backward": k, "max_in_flight": q},
            "delays": {"handoff_s": handoff_s, "visibility_s": visibility_s},
            "run": {"batches": batches, "warmup": 3},
        }
    )


def spans_by_key(trace):
    return {(s.worker, s.op, s.batch, s.layer): s for s in trace.spans}


def test_fast_path_equals_simpy_span_for_span() -> None:
    for case in FIXED_GRID:
        if case[0] == "sequential" and case[3:6] != (1, 1, 2):
            continue
        sc = fixed(*case)
        slow, quick = simulate(sc, engine="simpy"), simulate(sc, engine="fast")
        a, b = spans_by_key(slow), spans_by_key(quick)
        assert a.keys() == b.keys(), case
        for key, span in a.items():
            other = b[key]
            assert span.start_s == pytest.approx(other.start_s, abs=1e-9), (case, key)
            assert span.end_s == pytest.approx(other.end_s, abs=1e-9), (case, key)
            assert span.version == other.version, (case, key)
        assert slow.memory_peak_bytes == quick.memory_peak_bytes, case


def assert_same_summary(fast_summary, reference_summary) -> None:
    """Exactly equal, except utilisation (busy times summed in another order)."""
    fast, reference = fast_summary.to_dict(), reference_summary.to_dict()
    assert list(fast) == list(reference)
    for key in fast:
        if key == "utilization":
            assert fast[key].keys() == reference[key].keys()
            for device, value in fast[key].items():
                assert math.isclose(value, reference[key][device], rel_tol=1e-12)
        else:
            assert fast[key] == reference[key], key


def test_fast_summary_equals_summarize_of_the_trace() -> None:
    for case in FIXED_GRID[::7]:
        sc = fixed(*case)
        assert_same_summary(simulate_summary(sc), summarize(simulate(sc, engine="fast")))


def test_fast_summary_in_small_chunks_equals_one_chunk(monkeypatch: pytest.MonkeyPatch) -> None:
    cases = [
        fixed("async-lu", 4, 2.3, 2, 3, 5, 0.37, 0.6, 0.1, 300),
        fixed("async-bu", 3, 0.5, 1, 1, 2, 0, 0, 1, 300),
    ]
    whole = [simulate_summary(sc).to_dict() for sc in cases]
    monkeypatch.setattr(fastsummary, "CHUNK_STEPS", 7)
    for sc, expected in zip(cases, whole, strict=True):
        chunked = simulate_summary(sc).to_dict()
        times = chunked.pop("time_staleness_s")["per_layer_mean"]
        assert times == pytest.approx(expected.pop("time_staleness_s")["per_layer_mean"], rel=1e-15)
        assert chunked == expected


def test_fast_summary_handles_a_million_batches() -> None:
    sc = fixed("async-lu", 3, 2.3, 1, 2, 8, 0.0, 0.0, 1.0, batches=1_000_000)
    summary = simulate_summary(sc, progress=False)
    assert summary.batches == 1_000_000
    assert summary.throughput_batches_per_s == pytest.approx(1 / 1.15, rel=1e-6)  # c = B / k
    assert summary.memory_peak_bytes > 0


def test_same_scenario_and_seed_give_byte_identical_trace_files(tmp_path) -> None:
    data = {
        "method": "async-lu",
        "model": {"layers": 5, "forward_s": 0.02, "beta": 2.2, "activation_bytes": 3, "param_bytes": 5},
        "workers": {"forward": 1, "backward": 2, "max_in_flight": 4},
        "delays": {
            "jitter_cv": 0.3,
            "handoff_s": 0.001,
            "straggler": [{"worker": "backward:1", "every": 3, "extra_s": 0.01}],
        },
        "device": [{"name": "cpu", "slots": 2}],
        "run": {"batches": 60, "seed": 7},
    }
    paths = []
    for i in range(2):
        paths.append(simulate(parse_scenario(data)).save(tmp_path / f"t{i}.json"))
    assert paths[0].read_bytes() == paths[1].read_bytes()
    other = simulate(parse_scenario({**data, "run": {"batches": 60, "seed": 8}}))
    assert other.save(tmp_path / "t2.json").read_bytes() != paths[0].read_bytes()


def test_engine_choice() -> None:
    sc = fixed("async-lu", 2, 2.0, 1, 2, 8, 0, 0, 1)
    assert choose_engine(sc) == "fast"
    assert choose_engine(sc.with_overrides({"delays.jitter_cv": 0.1})) == "simpy"
    shared = sc.with_overrides({"device": [{"name": "cpu", "slots": 3}]})
    assert choose_engine(shared) == "simpy"
    with pytest.raises(ScenarioError, match="workers share a device"):
        choose_engine(shared, "fast")
    with pytest.raises(ScenarioError, match="engine"):
        choose_engine(sc, "quantum")
    assert choose_engine(sc.with_overrides({"method": "hogwild"})) == "simpy"


def test_own_devices_with_role_speeds_take_the_fast_path_and_agree() -> None:
    data = {
        "method": "async-bu",
        "model": {"layers": 3, "forward_s": 1.0, "beta": 2.0},
        "workers": {"forward": 1, "backward": 2},
        "device": [{"name": "f", "speed": 2.0}, {"name": "b0", "speed": 0.5}, {"name": "b1", "speed": 0.5}],
        "placement": {"forward": ["f"], "backward": ["b0", "b1"]},
        "run": {"batches": 20},
    }
    sc = parse_scenario(data)
    assert choose_engine(sc) == "fast"
    fast, slow = simulate(sc, engine="fast"), simulate(sc, engine="simpy")
    assert summarize(fast).makespan_s == pytest.approx(summarize(slow).makespan_s, abs=1e-9)
    forward = [s for s in fast.spans if s.op == "forward" and s.batch == 0]
    assert sum(s.duration_s for s in forward) == pytest.approx(0.5)  # cost 1 on a device of speed 2


def test_no_model_costs_is_a_one_line_error() -> None:
    sc = parse_scenario({"method": "async-lu", "train": {"network": "mlp"}})
    with pytest.raises(ScenarioError, match="pdasgd profile"):
        simulate(sc)


def test_fast_path_prefix_is_the_first_batches_of_the_full_run() -> None:
    """What `pdasgd simulate --gantt` relies on: batch i's schedule depends on earlier batches only."""
    sc = fixed("async-lu", 4, 2.3, 2, 3, 5, 0.37, 0.6, 0.1, batches=60)
    full = simulate(sc, engine="fast")
    prefix = simulate(sc.with_overrides({"run.batches": 12, "run.warmup": 0}), engine="fast")
    assert prefix.spans == [s for s in full.spans if s.batch < 12]


@pytest.mark.parametrize("method", ["lapsgd", "async-lu", "sequential"])
def test_a_batch_never_reads_its_own_update(method: str) -> None:
    """A zero-cost output layer puts a batch's read and its own update of it at the same instant; the tie
    rule must not count that update (staleness would come out negative)."""
    layers = [
        {"name": "in", "forward_s": 1.0, "backward_s": 1.0, "update_s": 0.25, "param_bytes": 3},
        {"name": "out", "forward_s": 0.0, "backward_s": 0.0, "update_s": 0.0, "param_bytes": 5},
    ]
    workers = {"backward": 1, "replicas": 2, "per_replica": 2}
    sc = parse_scenario(
        {"method": method, "model": {"layer": layers}, "workers": workers, "run": {"batches": 20}}
    )
    trace = simulate(sc, engine="simpy")
    assert min(summarize(trace).staleness.per_layer_max) >= 0
    assert all(s.version >= 0 for s in trace.spans if s.op == "forward")
    if method != "lapsgd":
        assert_same_summary(simulate_summary(sc), summarize(trace))
