"""Methods as data: the definitions, their rules, their text form, and a variant defined only here that
both engines and the theory run without any engine file changing."""

from __future__ import annotations

import pytest

from pdasgd import methods
from pdasgd.closed_forms import theory_for
from pdasgd.methods import (
    BACKWARD,
    PUBLISH,
    UPDATE,
    Dispatch,
    Method,
    MethodError,
    Role,
    Step,
    backward_steps,
    decoupled_roles,
    forward_steps,
    update_steps,
)
from pdasgd.metrics import summarize
from pdasgd.scenario import ScenarioError, Workers, parse_scenario
from simulator import simulate, simulate_summary

SCHEDULES = {
    "sequential": "F0 F1 F2 B2 U2 B1 U1 B0 U0",
    "async-lu": "F0 F1 F2 | B2 U2 B1 U1 B0 U0",
    "async-bu": "F0 F1 F2 | B2 B1 B0 U2 U1 U0 P2,1,0",
    "hogwild": "F0 F1 F2 B2 B1 B0 U2 U1 U0",
    "lapsgd": "F0 F1 F2 B2 B1 B0 U2 U1 U0",
    "lppsgd": "worker:0  F0 F1 F2 B2 B1 B0 U0\nworker:1  F0 F1 F2 B2 B1 U2 U1",
    "ddp": "F0 F1 F2 B2 B1 B0 AR U2 U1 U0",
}


@pytest.mark.parametrize(("name", "text"), SCHEDULES.items())
def test_every_built_in_method_prints_its_schedule(name: str, text: str) -> None:
    assert methods.lookup(name).schedule_text(3, Workers()) == text


def test_unknown_methods_are_rejected_in_one_place_with_the_list() -> None:
    with pytest.raises(
        MethodError, match=r"^unknown method 'adam' \(methods: sequential, async-lu, async-bu"
    ):
        methods.lookup("adam")
    with pytest.raises(ScenarioError, match=r"^method: unknown method 'adam'"):
        parse_scenario({"method": "adam"})


def test_worker_names_and_placement_groups_come_from_the_roles() -> None:
    workers = Workers(forward=2, backward=3, replicas=2, per_replica=2)
    lu = methods.lookup("async-lu")
    assert lu.worker_names(workers) == ["forward:0", "forward:1", "backward:0", "backward:1", "backward:2"]
    assert lu.placement_groups(workers) == {
        "forward": ["forward:0", "forward:1"],
        "backward": ["backward:0", "backward:1", "backward:2"],
    }
    lapsgd = methods.lookup("lapsgd")
    assert lapsgd.worker_names(workers) == ["r0/worker:0", "r0/worker:1", "r1/worker:0", "r1/worker:1"]
    assert lapsgd.local_names(workers) == ["worker:0", "worker:1"]
    assert lapsgd.role_of(3, workers) == (lapsgd.roles[0], 1)
    assert methods.lookup("ddp").worker_names(workers) == ["r0/worker:0", "r1/worker:0"]
    assert methods.split_rank("r12/worker:3") == (12, "worker:3")
    assert methods.split_rank("worker:3") == (None, "worker:3")
    assert methods.split_worker("r1/backward:2") == ("backward", 2)
    assert lu.role_of(3, workers) == (lu.roles[1], 1)
    assert lu.windowed and not methods.lookup("hogwild").windowed


def test_worker_order_follows_the_roles() -> None:
    names = ["backward:10", "worker:2", "backward:2", "forward:1", "forward:0"]
    assert methods.worker_order("async-bu", names) == [
        "forward:0",
        "forward:1",
        "backward:2",
        "backward:10",
        "worker:2",
    ]
    assert methods.split_worker("backward:12") == ("backward", 12)
    assert methods.split_worker("odd") == ("odd", -1)


def bad_role(steps) -> Role:
    return Role("worker", "workers", (), Dispatch.ROUND_ROBIN, lambda layers, index, workers: steps(layers))


BAD_STEPS = [  # (steps on M layers, what the refusal says); methods are checked on 4 layers
    (lambda m: tuple(reversed(forward_steps(m))), "forward of every layer, input first"),
    (lambda m: (*forward_steps(m), Step(BACKWARD, 0)), "from the output layer down"),
    (lambda m: (*forward_steps(m), Step(UPDATE, m - 1), Step(BACKWARD, m - 1)), "U3: needs a backward"),
    (lambda m: (*forward_steps(m), *backward_steps(m), Step(PUBLISH, 1)), "P1: needs a update"),
    (lambda m: (*forward_steps(m), *backward_steps(m), *update_steps([1, 1])), "U1: needs a backward"),
    (lambda m: (*forward_steps(m), Step(BACKWARD, m + 1)), "layer 5"),
    (lambda m: (*forward_steps(m), Step("jump", 0)), "unknown step op"),
]


@pytest.mark.parametrize(("steps", "message"), BAD_STEPS)
def test_definitions_that_break_the_rules_are_refused(steps, message: str) -> None:
    with pytest.raises(MethodError, match=message):
        methods.register(Method("broken", "broken", (bad_role(steps),)))
    assert "broken" not in methods.names()


def test_role_shapes_that_no_engine_runs_are_refused() -> None:
    roles = decoupled_roles(
        lambda layers, index, workers: backward_steps(layers) + update_steps(range(layers))
    )
    three = Method("three", "three roles", (*roles, roles[1]))
    with pytest.raises(MethodError, match="at most two roles"):
        methods.register(three)
    fed_first = Method("fed", "hand-off first", (roles[1], roles[0]))
    with pytest.raises(MethodError, match="only the second is fed by hand-off"):
        methods.register(fed_first)
    counter_second = Method("counter", "a counter fed by nobody", (roles[0], bad_role(lambda m: ())))
    with pytest.raises(MethodError, match="fed by hand-off"):
        methods.register(counter_second)


def test_registry_guards_built_ins_and_duplicates() -> None:
    with pytest.raises(MethodError, match="already defined"):
        methods.register(methods.lookup("async-lu"))
    with pytest.raises(MethodError, match="built in"):
        methods.unregister("sequential")


# --- a variant defined only here ------------------------------------------------------------------------


def pairwise_bu(layers: int, index: int, workers) -> tuple[Step, ...]:
    """BU that publishes every second layer: the whole backward, then the updates output first, each pair
    of layers published together after its second update."""
    steps = list(backward_steps(layers))
    for top in range(layers - 1, -1, -2):
        pair = [m for m in (top, top - 1) if m >= 0]
        steps += [Step(UPDATE, m) for m in pair] + [Step(PUBLISH, m) for m in pair]
    return tuple(steps)


PAIRWISE = Method(
    "pairwise-bu",
    "block updates published two layers at a time (a variant defined in a test)",
    decoupled_roles(pairwise_bu),
    theory="decoupled",
)

LAYERS = [
    {"name": f"l{i}", "forward_s": f, "backward_s": b, "update_s": u}
    for i, (f, b, u) in enumerate(
        [(0.36, 0.9, 0.22), (0.35, 0.96, 0.3), (0.46, 0.96, 0.16), (0.45, 0.96, 0.24)]
    )
]


def variant_scenario(**sections):
    data = {
        "method": "pairwise-bu",
        "model": {"layer": LAYERS},
        "workers": {"forward": 1, "backward": 4, "max_in_flight": 16},
        "run": {"batches": 60, "warmup": 20},
    }
    data.update(sections)
    return parse_scenario(data)


def test_the_variant_prints_its_schedule_and_is_validated_like_a_built_in() -> None:
    with methods.registered(PAIRWISE):
        assert PAIRWISE.schedule_text(4, Workers()) == "F0 F1 F2 F3 | B3 B2 B1 B0 U3 U2 P3,2 U1 U0 P1,0"
        assert variant_scenario().worker_names() == ["forward:0"] + [f"backward:{j}" for j in range(4)]
    with pytest.raises(ScenarioError, match="unknown method 'pairwise-bu'"):
        variant_scenario()


def test_the_variant_runs_in_both_simulator_engines_and_matches_its_closed_form() -> None:
    with methods.registered(PAIRWISE):
        sc = variant_scenario()
        fast, slow = summarize(simulate(sc, engine="fast")), summarize(simulate(sc, engine="simpy"))
        assert fast.staleness == slow.staleness
        assert fast.throughput_batches_per_s == pytest.approx(slow.throughput_batches_per_s, rel=1e-12)
        stale = slow.staleness.per_layer_mean
        theory = theory_for(sc)
        assert theory["applies"] and theory["staleness"]["source"] == "closed form"
        assert stale == theory["staleness"]["per_layer_mean"]
        # each pair becomes visible together, between the layer-wise and the block schedule
        bu = simulate_summary(variant_scenario(method="async-bu")).staleness.per_layer_mean
        lu = simulate_summary(variant_scenario(method="async-lu")).staleness.per_layer_mean
        assert (lu, stale, bu) == ([3, 2, 1, 1], [3, 3, 3, 2], [3, 3, 3, 3])


def test_the_variant_trains_in_the_executor_with_exact_gradients() -> None:
    from executor_probe import Recorder
    from executor_probe import scenario as executor_scenario

    from executor.runtime import run

    with methods.registered(PAIRWISE):
        sc = executor_scenario("pairwise-bu", workers={"forward": 1, "backward": 2, "max_in_flight": 4})
        recorder = Recorder()
        result = run(sc, probe=recorder)
        trace = result.trace
        assert trace.method == "pairwise-bu" and len(trace.layers * [0]) == 4
        updates = [s for s in trace.spans if s.op == "update"]
        assert sorted(s.version for s in updates if s.layer == 0) == list(range(sc.run.batches))
        for batch in range(sc.run.batches):  # the updates come after the whole backward, pair by pair
            ops = [(s.op, s.layer) for s in sorted(trace.spans, key=lambda s: s.start_s) if s.batch == batch]
            assert ops[4:] == [("backward", m) for m in (3, 2, 1, 0)] + [("update", m) for m in (3, 2, 1, 0)]
        from test_executor_exact import fresh_blocks, reference_gradients

        blocks = fresh_blocks(sc)
        for i in range(sc.run.batches):
            expected = reference_gradients(blocks, recorder, i)
            for m in range(4):
                version, grads = recorder.grads[(i, m)]
                assert version == recorder.reads[(i, m)][0]
                for got, want in zip(grads, expected[m], strict=True):
                    assert got.allclose(want, rtol=1e-5, atol=1e-6)


def test_replayable_methods_are_one_shared_copy_ranks_that_stay_equal_or_gossip() -> None:
    replayable = {name for name in methods.names() if methods.lookup(name).replayable}
    assert replayable == {"sequential", "async-lu", "async-bu", "hogwild", "ddp", "gossip-lu", "gossip-bu"}
    assert {name for name in methods.names() if methods.lookup(name).synchronous} == {"ddp"}
