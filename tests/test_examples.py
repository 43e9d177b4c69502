"""The examples/ scripts at their --small size: they run, write their pictures, and their key numbers are
the ones the theory gives (exactly, where fixed times make it exact)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from pdasgd.ranks import ddp_buckets

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def load(name: str):
    """Import examples/<name>.py (examples/ is not a package)."""
    spec = importlib.util.spec_from_file_location(f"examples_{name}", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


def written(out: Path, names: list[str]) -> None:
    for name in names:
        path = out / name
        assert path.is_file() and path.stat().st_size > 1000, name


# --- capacity planning --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def capacity(tmp_path_factory):
    module = load("capacity_planning")
    out = tmp_path_factory.mktemp("capacity")
    return module, module.main(["--small", "--out", str(out)]), out


def test_capacity_planning_writes_its_pictures_and_table(capacity, capsys):
    _, rows, out = capacity
    written(out, ["capacity_options.png", "capacity_gantt.png", "capacity_planning.md"])
    assert "async-lu 1F:2B" in (out / "capacity_planning.md").read_text()


def test_capacity_planning_simulator_equals_the_closed_form(capacity):
    _, rows, _ = capacity
    applicable = [row for row in rows if row.theory["applies"]]
    assert len(applicable) == len(rows) - 2  # all but the two ddp rows
    for row in applicable:
        assert row.throughput == pytest.approx(row.theory["throughput_batches_per_s"], rel=1e-9), row.label
    for row in rows:
        if row.scenario.method == "async-lu" and row.window < 8:
            assert row.staleness == pytest.approx(row.theory["staleness"]["mean"], abs=1e-9), row.label


def test_capacity_planning_key_numbers(capacity):
    module, rows, _ = capacity
    f_s, b_s, d_s = module.FORWARD_S, module.BACKWARD_S, module.LINK_S
    sequential = rows[0]
    assert sequential.throughput == pytest.approx(1 / (f_s + b_s), rel=1e-9)
    act, par = sum(module.ACTIVATION_BYTES), sum(module.PARAM_BYTES)
    assert sequential.summary.memory_peak_bytes == act + 2 * par
    ddp, ddp_link = module.find(rows, "ddp x3", 0.0), module.find(rows, "ddp x3", d_s)
    assert ddp.throughput == pytest.approx(3 / (f_s + b_s), rel=1e-9)
    assert ddp_link.throughput == pytest.approx(3 / ddp_step_s(ddp_link.scenario, d_s), rel=1e-9)
    lu = module.find(rows, "async-lu 1F:2B", 0.0)
    assert lu.window == 3 and lu.throughput == pytest.approx(2 / b_s, rel=1e-9)
    assert module.bound_by(lu) == "backward" and module.busiest(lu.summary.utilization).startswith(
        "gpu1+gpu2"
    )
    same_window = module.find(rows, "async-lu 1F:2B", d_s, 3)
    assert same_window.throughput == pytest.approx(3 / (f_s + d_s + b_s), rel=1e-9)
    best = module.best_under_link(rows)
    assert (best.label, best.window) == ("async-lu 1F:2B", 4)
    assert best.throughput == pytest.approx(2 / b_s, rel=1e-9)
    bu = module.find(rows, "async-bu 1F:2B", 0.0)
    assert lu.staleness < bu.staleness and lu.memory_gib < bu.memory_gib
    wide = module.find(rows, "async-lu 1F:2B", 0.0, module.DEFAULT_WINDOW)
    assert wide.memory_gib > 2 * lu.memory_gib
    two_one = module.find(rows, "async-lu 2F:1B", 0.0)
    assert two_one.throughput == pytest.approx(1 / b_s, rel=1e-9)


def test_capacity_planning_times_to_accuracy_come_from_replayed_schedules(capacity):
    module, rows, _ = capacity
    f_s, b_s = module.FORWARD_S, module.BACKWARD_S
    sequential = rows[0].to_target
    assert sequential is not None and sequential.accuracy >= module.SMALL_TARGET
    # one GPU: the k-th batch completes at k (F + B) on the ResNet-18 timeline
    assert sequential.time_s == pytest.approx(sequential.batches * (f_s + b_s), rel=1e-9)
    reached = [row for row in rows if row.to_target is not None]
    assert len(reached) >= 3 and min(r.to_target.time_s for r in reached) < sequential.time_s


# --- validate theory ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def validation(tmp_path_factory):
    module = load("validate_theory")
    out = tmp_path_factory.mktemp("validate")
    return module.main(["--small", "--out", str(out)]), out


def test_validate_theory_simulator_matches_theory_exactly(validation):
    result, out = validation
    written(out, ["validate_theory.png", "validate_theory.md"])
    assert len(result.grid) == 48
    assert sum(1 for point in result.grid if point.staleness_theory) == 18
    assert result.makespan_error < 1e-9
    assert result.staleness_error == 0


def test_validate_theory_real_rows_have_three_sources_and_consistent_errors(validation):
    result, _ = validation
    assert len(result.real) == 4 * 3
    for row in result.real:
        assert row.theory is not None and row.predicted is not None and row.measured is not None
        if row.kind == "rel":
            assert row.measured > 0
            assert row.predicted_error == pytest.approx((row.predicted - row.measured) / row.measured)
        else:
            assert row.theory_error == pytest.approx(row.theory - row.measured)


# --- teaching -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def teaching(tmp_path_factory):
    module = load("teaching")
    out = tmp_path_factory.mktemp("teaching")
    return module, module.main(["--small", "--out", str(out)]), out


def test_teaching_writes_four_pictures(teaching):
    module, _, out = teaching
    written(out, [*module.PICTURES, "teaching_staleness.png"])


def test_teaching_numbers_are_the_closed_forms(teaching):
    module, runs, _ = teaching
    assert runs["sequential"].throughput == pytest.approx(1 / 3)  # 1 / (F + B)
    assert runs["lu"].throughput == pytest.approx(1.0)  # 1 / max(F, B/2)
    assert runs["1f1b"].throughput == pytest.approx(0.5)  # 1 / B
    assert runs["1f3b"].throughput == pytest.approx(1.0)
    assert runs["handoff"].throughput == pytest.approx(1.0)
    assert runs["straggler"].throughput < 1.0 and runs["jitter"].throughput < 1.0
    assert runs["1f1b"].busy("forward:0") == pytest.approx(0.5, abs=0.05)
    assert runs["lu"].summary.staleness.per_layer_mean == [2, 2, 1, 0]
    assert runs["bu"].summary.staleness.per_layer_mean == [2, 2, 2, 2]
    captions = module.captions(runs)
    assert "1/B = 0.500 batches/s" in captions["1f1b"]
    assert "mean staleness 1.25 instead of BU's 2.00" in captions["lu"]


def ddp_step_s(scenario, latency_s: float) -> float:
    """One ddp step: the forward, the backward, and DDP's bucket all-reduces one after another, each
    starting once its bucket's lowest layer has its gradient and the previous bucket is done."""
    layers = scenario.model.layers
    buckets = ddp_buckets([layer.param_bytes for layer in layers], scenario.distributed.bucket_bytes)
    assert len(buckets) == 3  # DDP's 25 MiB buckets of ResNet-18's parameters (weights + momentum)
    forward_s = sum(layer.forward_s for layer in layers)
    done_s = 0.0
    for bucket in buckets:
        ready_s = forward_s + sum(layer.backward_s for layer in layers[min(bucket) :])
        done_s = max(ready_s, done_s) + latency_s
    return max(done_s, forward_s + sum(layer.backward_s for layer in layers))


# --- predicted accuracy -------------------------------------------------------------------------------


def test_predicted_accuracy_replays_three_schedules_on_their_simulated_time(tmp_path, capsys):
    module = load("predicted_accuracy")
    results = module.main(["--small", "--out", str(tmp_path)])
    written(tmp_path, ["predicted_accuracy.png"])
    assert list(results) == ["sequential", "async-lu 1F:2B", "async-bu 1F:2B"]
    sequential = results["sequential"]
    # one device: batch k completes at k (F + B) = k x 15 ms
    assert sequential["time_to_target_s"] == pytest.approx(sequential["batches_to_target"] * 0.015)
    for label in ("async-lu 1F:2B", "async-bu 1F:2B"):
        # the decoupled schedules run their batches in about a third of the time
        assert results[label]["curve"][-1]["time_s"] < 0.4 * sequential["curve"][-1]["time_s"]
    out = capsys.readouterr().out
    assert out.count("\n") == 4 and "sequential: 95% after" in out
