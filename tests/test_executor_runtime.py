"""The runtime's schedule: spans and workers, the in-flight window, hand-off and update delays, stragglers,
sequential training equal to a plain PyTorch loop, memory and the accuracy curve."""

from __future__ import annotations

import pytest
import torch
from executor_probe import Recorder, plain_training, scenario

from executor.results import Snapshot, evaluate_snapshot
from executor.runtime import run
from executor.setup import make_setup
from pdasgd.metrics import summarize


def spans_of(trace, op):
    return [span for span in trace.spans if span.op == op]


def test_trace_has_one_forward_and_update_per_batch_and_layer_with_the_scenarios_workers() -> None:
    sc = scenario("async-lu", workers={"forward": 2, "backward": 2, "max_in_flight": 4})
    trace = run(sc).trace
    trace.validate()
    pairs = {(s.batch, s.layer) for s in spans_of(trace, "forward")}
    assert len(spans_of(trace, "forward")) == len(pairs) == sc.run.batches * trace.layers
    assert {(s.batch, s.layer) for s in spans_of(trace, "update")} == pairs
    assert len(spans_of(trace, "backward")) == len(pairs)
    assert set(trace.workers()) == set(sc.worker_names())
    assert {s.worker for s in spans_of(trace, "forward")} == {"forward:0", "forward:1"}
    assert all(s.worker == f"forward:{s.batch % 2}" for s in spans_of(trace, "forward"))
    assert all(s.worker.startswith("backward:") for s in spans_of(trace, "update"))
    assert trace.source == "executor" and trace.method == "async-lu" and trace.batches == sc.run.batches
    assert trace.layers == sc.train.depth + 1 and trace.device_slots.keys() == {"cpu"}
    assert all(s.version is None for s in spans_of(trace, "backward"))


def test_each_layer_is_updated_output_first_and_right_after_its_backward_in_async_lu() -> None:
    trace = run(scenario("async-lu")).trace
    for batch in range(4):
        ops = [(s.op, s.layer) for s in trace.spans if s.batch == batch and s.op in ("backward", "update")]
        top = trace.layers - 1
        assert ops == [(op, m) for m in range(top, -1, -1) for op in ("backward", "update")]


def test_async_bu_updates_all_layers_after_the_whole_backward() -> None:
    trace = run(scenario("async-bu")).trace
    for batch in range(4):
        spans = [s for s in trace.spans if s.batch == batch]
        last_backward = max(s.end_s for s in spans if s.op == "backward")
        assert all(s.start_s >= last_backward for s in spans if s.op == "update")


def test_a_forward_waits_for_the_backward_of_the_batch_max_in_flight_before() -> None:
    q = 2
    trace = run(scenario("async-lu", workers={"backward": 2, "max_in_flight": q}, run={"batches": 10})).trace
    first_forward = {
        b: min(s.start_s for s in trace.spans if s.batch == b and s.op == "forward") for b in range(10)
    }
    last_update = {
        b: max(s.end_s for s in trace.spans if s.batch == b and s.op == "update") for b in range(10)
    }
    for batch in range(q, 10):
        assert first_forward[batch] >= last_update[batch - q]


def test_handoff_delay_holds_each_batch_before_any_backward_worker_sees_it() -> None:
    handoff_s = 0.03
    trace = run(scenario("async-lu", delays={"handoff_s": handoff_s}, run={"batches": 6})).trace
    for batch in range(6):
        forward_end = max(s.end_s for s in trace.spans if s.batch == batch and s.op == "forward")
        backward_start = min(s.start_s for s in trace.spans if s.batch == batch and s.op == "backward")
        assert backward_start - forward_end >= handoff_s * 0.95


def test_a_sleeping_straggler_waits_before_every_nth_batch_of_its_worker() -> None:
    sc = scenario(
        "async-lu",
        delays={"straggler": [{"worker": "backward:1", "every": 2, "extra_s": 0.02, "kind": "sleep"}]},
        workers={"backward": 2},
        run={"batches": 8},
    )
    trace = run(sc).trace
    waits = spans_of(trace, "wait")
    assert waits and all(s.worker == "backward:1" and s.duration_s >= 0.019 for s in waits)
    assert all(s.layer is None and s.batch is not None for s in waits)
    handled = len({s.batch for s in spans_of(trace, "backward") if s.worker == "backward:1"})
    assert len(waits) == handled // 2


def test_a_busy_straggler_lengthens_the_first_op_of_every_nth_batch() -> None:
    sc = scenario(
        "async-lu",
        delays={"straggler": [{"worker": "backward:1", "every": 2, "extra_s": 0.03, "kind": "busy"}]},
        workers={"backward": 2},
        run={"batches": 8},
    )
    trace = run(sc).trace
    assert not spans_of(trace, "wait")
    top = trace.layers - 1
    first_ops = sorted(
        (s for s in spans_of(trace, "backward") if s.worker == "backward:1" and s.layer == top),
        key=lambda s: s.start_s,
    )
    long = [i for i, s in enumerate(first_ops) if s.duration_s >= 0.029]
    assert long == list(range(1, len(first_ops), 2))


def test_an_update_visibility_delay_never_holds_the_updating_worker() -> None:
    """Readers see each update `visibility_s` after it is applied; the update itself does not wait."""
    delay_s = 0.05
    sc = scenario("sequential", delays={"visibility_s": delay_s}, run={"batches": 12})
    trace = run(sc).trace
    assert not spans_of(trace, "wait")
    assert max(s.duration_s for s in spans_of(trace, "update")) < delay_s
    updates = sorted(spans_of(trace, "update"), key=lambda s: s.end_s)
    for read in spans_of(trace, "forward"):
        due = [u.end_s + delay_s for u in updates if u.layer == read.layer]
        assert sum(t <= read.start_s for t in due) >= read.version  # never sees an update early
        assert read.version >= sum(t < read.start_s - 0.01 for t in due)  # ... and sees it in time
    assert summarize(trace).staleness.max > 0  # even sequential reads stale versions now
    assert [s.version for s in updates if s.layer == 0] == list(range(12))  # no update lost


def test_sequential_run_equals_a_plain_pytorch_loop_with_momentum_and_weight_decay() -> None:
    train = {"lr": 0.05, "momentum": 0.9, "weight_decay": 0.001}
    sc = scenario("sequential", train=train, run={"batches": 15})
    result = run(sc)
    for got, want in zip(result.parameters, plain_training(sc, 15), strict=True):
        for tensor, param in zip(got, want, strict=True):
            torch.testing.assert_close(tensor, param, rtol=1e-5, atol=1e-6)


def test_batchnorm_running_statistics_are_trained_and_used_for_evaluation() -> None:
    sc = scenario("async-lu", train={"network": "resnet", "depth": 8, "channels": 4}, run={"batches": 6})
    result = run(sc)
    means = [b for b in result.buffers if b.dtype.is_floating_point]
    assert any(not torch.all(b == 0) for b in means[::2])  # running means moved off their zero start
    counts = [b for b in result.buffers if not b.dtype.is_floating_point]
    assert all(int(c) == 6 for c in counts)  # num_batches_tracked: one per forward


def test_memory_peak_counts_activations_and_versions_of_batches_in_flight() -> None:
    sequential = run(scenario("sequential", run={"batches": 8})).trace
    pipelined = run(scenario("async-lu", workers={"max_in_flight": 4}, run={"batches": 8})).trace
    param_bytes = sum(sequential.info["param_bytes"])
    activation_bytes = sum(sequential.info["activation_bytes"])
    assert sequential.memory_peak_bytes >= param_bytes + activation_bytes
    assert sequential.memory_peak_bytes <= 2 * param_bytes + activation_bytes
    assert pipelined.memory_peak_bytes > sequential.memory_peak_bytes


def test_accuracy_curve_ends_with_the_final_accuracy() -> None:
    sc = scenario("async-lu", run={"batches": 40})
    result = run(sc, curve_points=4)
    assert [point[0] for point in result.accuracy_curve] == [10, 20, 30, 40]
    times = [point[1] for point in result.accuracy_curve]
    assert times == sorted(times)
    assert result.trace.accuracy == result.accuracy_curve[-1][2] == result.summary.accuracy
    assert 0.0 <= result.trace.accuracy <= 1.0


def test_baseline_gives_a_speedup_over_sequential() -> None:
    result = run(scenario("async-lu", run={"batches": 10, "warmup": 2}), baseline=True)
    assert result.trace.sequential_batch_s > 0
    assert result.summary.speedup_vs_sequential > 0


def test_hogwild_workers_each_update_every_layer_of_their_own_batches() -> None:
    # worker:0 sleeps 10 ms before each of its batches, so worker:1 gets batches even if it starts late
    # (with a shared counter, one worker may otherwise take all 8 batches on a loaded machine)
    straggler = {"worker": "worker:0", "every": 1, "extra_s": 0.01, "kind": "sleep"}
    sc = scenario(
        "hogwild",
        workers={"replicas": 1, "per_replica": 2},
        delays={"straggler": [straggler]},
        run={"batches": 8},
    )
    trace = run(sc).trace
    assert {s.worker for s in spans_of(trace, "forward")} == {"worker:0", "worker:1"}
    assert len(spans_of(trace, "update")) == 8 * trace.layers
    for span in spans_of(trace, "update"):
        forward_worker = {s.worker for s in spans_of(trace, "forward") if s.batch == span.batch}
        assert forward_worker == {span.worker}


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("method", ["sequential", "async-lu", "hogwild"])
def test_cuda_runs_time_spans_with_events_and_report_allocator_memory(method: str) -> None:
    sc = scenario(
        method, train={"device": "cuda", "width": 256}, workers={"per_replica": 2}, run={"batches": 20}
    )
    result = run(sc)
    trace = result.trace
    trace.validate()
    assert list(trace.device_slots) == [f"cuda:{torch.cuda.current_device()}"]
    assert all(s.device in trace.device_slots for s in trace.spans)
    assert all(s.duration_s >= 0 for s in trace.spans)
    assert len(spans_of(trace, "update")) == 20 * trace.layers
    assert trace.memory_peak_bytes >= sum(trace.info["param_bytes"])
    assert result.parameters[0][0].is_cuda and 0 <= trace.accuracy <= 1


def test_backward_workers_never_accumulate_into_grad(monkeypatch) -> None:
    """Gradients come from `autograd.grad` only: nothing calls backward(), so no `.grad` is shared."""

    def forbidden(*args, **kwargs):
        raise AssertionError("a worker called backward(), which accumulates into .grad")

    monkeypatch.setattr(torch.Tensor, "backward", forbidden)
    monkeypatch.setattr(torch.autograd, "backward", forbidden)
    result = run(scenario("async-lu", workers={"backward": 3}, run={"batches": 8}))
    assert len(spans_of(result.trace, "update")) == 8 * result.trace.layers


def test_each_curve_snapshot_keeps_the_parameters_of_its_own_moment() -> None:
    # CPU snapshots go into preallocated copies (results.snapshot_pool); each point must still be its own:
    # with sequential training, the snapshot after 10 batches holds what batch 10's forward read.
    sc = scenario("sequential", run={"batches": 40})
    recorder = Recorder()
    result = run(sc, probe=recorder, curve_points=4)
    setup = make_setup(sc)
    for completed, _, accuracy in result.accuracy_curve[:-1]:
        tensors = [tuple(recorder.reads[(completed, m)][1]) for m in range(len(setup.layers))]
        assert accuracy == evaluate_snapshot(setup, Snapshot(completed, 0.0, tensors, []))
    assert len({point[2] for point in result.accuracy_curve}) > 1
