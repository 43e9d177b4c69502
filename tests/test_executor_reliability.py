"""Reliability: a failing worker stops the run quickly and is named, NaN losses stop it, Ctrl-C and stop
events give partial results, and checkpoints resume a sequential run to exactly the same parameters."""

from __future__ import annotations

import _thread
import threading
import time

import pytest
import torch
from executor_probe import Recorder, scenario

from executor import checkpoint
from executor.runtime import NonFiniteLoss, RunInterrupted, WorkerError, run


def fail_at(batch: int, layer: int):
    def hook(i: int, m: int) -> None:
        if (i, m) == (batch, layer):
            raise ZeroDivisionError("injected")

    return hook


@pytest.mark.parametrize("method", ["sequential", "async-lu", "hogwild"])
def test_a_worker_exception_stops_the_run_quickly_and_names_the_worker(method: str) -> None:
    sc = scenario(method, run={"batches": 100000}, workers={"per_replica": 2})
    recorder = Recorder(on_gradient=fail_at(5, 1))
    start = time.monotonic()
    with pytest.raises(
        WorkerError, match=r"worker (backward|worker):\d+ failed: ZeroDivisionError: injected"
    ):
        run(sc, probe=recorder)
    assert time.monotonic() - start < 5.0
    assert not [t for t in threading.enumerate() if t.name.startswith("pdasgd ")]


def test_a_failing_forward_worker_is_named_too() -> None:
    class Failing(Recorder):
        def read(self, i, m, version, tensors):
            if i == 3:
                raise RuntimeError("forward broke")

    with pytest.raises(WorkerError, match=r"^worker forward:1 failed: RuntimeError: forward broke") as info:
        run(scenario("async-lu", workers={"forward": 2}, run={"batches": 1000}), probe=Failing())
    assert info.value.worker == "forward:1" and isinstance(info.value.__cause__, RuntimeError)


@pytest.mark.parametrize("method", ["sequential", "async-lu"])
def test_a_nan_loss_stops_with_a_clear_error(method: str) -> None:
    sc = scenario(method, train={"lr": 1e6}, run={"batches": 1000})
    with pytest.raises(NonFiniteLoss, match=r"worker \w+:\d: loss is (nan|inf) at batch \d+ \(try a lower"):
        run(sc)


def test_a_stop_event_returns_the_partial_result() -> None:
    stop = threading.Event()
    recorder = Recorder(on_gradient=lambda i, m: stop.set() if i == 5 else None)
    result = run(scenario("async-lu", run={"batches": 100000}), stop_event=stop, probe=recorder)
    assert not result.completed and result.trace.info["interrupted"]
    assert 1 <= result.trace.batches < 100
    assert 0.0 <= result.trace.accuracy <= 1.0


def test_ctrl_c_raises_with_the_partial_trace() -> None:
    recorder = Recorder(on_gradient=lambda i, m: _thread.interrupt_main() if (i, m) == (4, 0) else None)
    with pytest.raises(RunInterrupted) as info:
        run(scenario("async-lu", run={"batches": 100000}), probe=recorder)
    trace = info.value.result.trace
    assert trace.info["interrupted"] and 4 <= trace.batches < 1000
    assert {s.batch for s in trace.spans if s.op == "update"} >= set(range(4))


def test_ctrl_c_while_the_workers_are_being_started_still_gives_the_partial_trace(monkeypatch) -> None:
    # Ctrl-C lands in the main thread while it starts the third worker: that one never starts, and the
    # run must still stop the others and hand back what they did (a CI run once failed with "cannot join
    # thread before it is started" when the first workers reached batch 4 before the last one was started)
    from executor import runtime

    made = runtime._thread

    def interrupted_third(ctx, name, *rest):
        thread = made(ctx, name, *rest)
        if name == "backward:1":

            def start() -> None:
                time.sleep(0.2)  # the others get going
                raise KeyboardInterrupt

            thread.start = start
        return thread

    monkeypatch.setattr(runtime, "_thread", interrupted_third)
    with pytest.raises(RunInterrupted) as info:
        run(scenario("async-lu", workers={"backward": 2}, run={"batches": 100000}))
    assert info.value.result.trace.info["interrupted"]
    assert not [t for t in threading.enumerate() if t.name.startswith("pdasgd ")]


def test_a_resumed_sequential_run_ends_with_the_uninterrupted_parameters(tmp_path) -> None:
    train = {"momentum": 0.9, "weight_decay": 0.001}
    full = run(scenario("sequential", train=train, run={"batches": 20}))
    # Stop the first attempt during batch 10: the checkpoint (every 4 batches) holds 8 batches.
    stop = threading.Event()
    recorder = Recorder(on_gradient=lambda i, m: stop.set() if i == 10 else None)
    sc = scenario("sequential", train=train, run={"batches": 20})
    first = run(sc, checkpoint_dir=tmp_path, checkpoint_every=4, stop_event=stop, probe=recorder)
    assert not first.completed
    assert checkpoint.load(tmp_path, sc)["batches_done"] == 8
    resumed = run(sc, checkpoint_dir=tmp_path, checkpoint_every=4)
    assert resumed.trace.info["first_batch"] == 8
    assert min(s.batch for s in resumed.trace.spans) == 8
    for got, want in zip(resumed.parameters, full.parameters, strict=True):
        for a, b in zip(got, want, strict=True):
            assert torch.equal(a, b)
    assert checkpoint.load(tmp_path, sc)["batches_done"] == 20


def test_a_checkpoint_keeps_versions_and_can_extend_a_run(tmp_path) -> None:
    sc = scenario("async-lu", run={"batches": 8})
    run(sc, checkpoint_dir=tmp_path, checkpoint_every=8)
    longer = scenario("async-lu", run={"batches": 12})
    result = run(longer, checkpoint_dir=tmp_path, checkpoint_every=8)
    updates = [s for s in result.trace.spans if s.op == "update" and s.layer == 0]
    assert sorted(s.version for s in updates) == list(range(8, 12))


def test_a_checkpoint_of_another_scenario_is_refused(tmp_path) -> None:
    run(scenario("sequential", run={"batches": 4}), checkpoint_dir=tmp_path, checkpoint_every=4)
    with pytest.raises(ValueError, match="written for another scenario"):
        run(scenario("sequential", train={"lr": 0.5}), checkpoint_dir=tmp_path)


def test_checkpoints_are_written_atomically(tmp_path, monkeypatch) -> None:
    sc = scenario("sequential", run={"batches": 4})
    run(sc, checkpoint_dir=tmp_path, checkpoint_every=4)
    before = (tmp_path / checkpoint.FILE_NAME).read_bytes()

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken)
    with pytest.raises(WorkerError, match="disk full"):
        run(scenario("sequential", run={"batches": 8}), checkpoint_dir=tmp_path, checkpoint_every=4)
    assert (tmp_path / checkpoint.FILE_NAME).read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == [checkpoint.FILE_NAME]
