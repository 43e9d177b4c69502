"""`pdasgd compare` end to end on a tiny network: the JSON document, the report and its files."""

from __future__ import annotations

import json
import math

import pytest

import simulator
from pdasgd.cli.main import main

TINY = """
name = "tiny"
method = "async-lu"
[workers]
backward = 2
max_in_flight = 4
[train]
network = "mlp"
width = 32
depth = 2
dataset = "digits"
batch_size = 32
lr = 0.05
[run]
batches = 30
warmup = 5
"""


@pytest.fixture(scope="module")
def compared(tmp_path_factory):
    folder = tmp_path_factory.mktemp("compare")
    (folder / "tiny.toml").write_text(TINY)
    out = folder / "out"
    return folder, out


def test_compare_json_has_predicted_measured_theory_and_errors(compared, capsys):
    folder, out = compared
    args = ["compare", str(folder / "tiny.toml"), "--out", str(out), "--json", "--runs", "2"]
    assert main(args) == 0
    document = json.loads(capsys.readouterr().out)
    assert {"predicted", "measured", "theory", "error"} <= set(document)
    assert document["predicted"]["source"] == "simulator"
    assert document["measured"]["source"] == "executor"
    assert document["measured"]["speedup_vs_sequential"] > 0
    assert len(document["predicted"]["staleness"]["per_layer_mean"]) == 3  # depth 2 + head
    error = document["error"]
    measured = document["measured"]["throughput_batches_per_s"]
    predicted = document["predicted"]["throughput_batches_per_s"]
    assert error["throughput_rel"] == pytest.approx((predicted - measured) / measured)
    assert error["staleness_mean_abs"] == pytest.approx(
        document["predicted"]["staleness"]["mean"] - document["measured"]["staleness"]["mean"]
    )
    assert document["theory"]["applies"] is True
    # async-lu is predicted from op costs measured in a pipeline (executor.profile.measure_pipelined)
    assert document["machine"]["pipelined_costs"] is True
    assert set(document["machine"]["device_slots"]) == {"cpu"}
    for name in [
        "report.md",
        "compare.json",
        "staleness.png",
        "async-lu.gantt.measured.png",
        "async-lu.gantt.predicted.png",
        "async-lu.scenario.toml",
        "async-lu.measured.trace.json",
    ]:
        assert (out / name).is_file(), name
    report = (out / "report.md").read_text()
    assert "| throughput (batches/s) |" in report and "![" in report
    # two runs: the measurement is their mean, its interval the t-interval over them (t(0.975, 1) = 12.706)
    runs = document["measured_runs"]
    rates = [r["throughput_batches_per_s"] for r in runs]
    assert len(runs) == 2 and (out / "async-lu.measured.run2.trace.json").is_file()
    assert measured == pytest.approx(sum(rates) / 2)
    half = 12.706204736174707 * abs(rates[0] - rates[1]) / 2**0.5 / 2**0.5
    interval = document["intervals"]["throughput"]["measured"]
    assert (interval["low"], interval["high"]) == pytest.approx((measured - half, measured + half))
    stale = [r["staleness_mean"] for r in runs]
    assert document["measured"]["staleness"]["mean"] == pytest.approx(sum(stale) / 2)
    assert document["intervals"]["measured_runs"] == 2
    assert "the mean over 2 runs" in report


def test_compare_runs_must_be_at_least_one(compared, capsys):
    folder, _ = compared
    with pytest.raises(SystemExit) as exit_:
        main(["compare", str(folder / "tiny.toml"), "--out", str(folder / "none"), "--runs", "0"])
    assert exit_.value.code == 2 and "--runs" in capsys.readouterr().err
    assert not (folder / "none").exists()


def test_compare_bad_scenario_is_one_line(tmp_path, capsys):
    (tmp_path / "bad.toml").write_text('[train]\nnetwork = "vgg"\n')
    assert main(["compare", str(tmp_path / "bad.toml"), "--out", str(tmp_path / "o")]) == 2
    assert "train.network" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_noise_reproduces_the_batch_to_batch_variation_of_each_role():
    from executor.profile import LayerSamples
    from pdasgd.cli.prediction import batch_matched_cv

    # forward: two ops of mean 1 whose batch totals are 1.5 and 2.5 (CV 0.25): independent noise of CV
    # 0.25 * 2 / sqrt(2) gives totals of CV 0.25. backward + update: constant, CV 0. The mean of the two.
    layers = [
        LayerSamples("a", {"forward": [0.5, 1.5], "backward": [1.0, 1.0], "update": [0.0, 0.0]}, 0, 0),
        LayerSamples("b", {"forward": [1.0, 1.0], "backward": [2.0, 2.0], "update": [0.0, 0.0]}, 0, 0),
    ]
    assert batch_matched_cv(layers) == pytest.approx((0.25 * 2 / 2**0.5 + 0.0) / 2)


def test_the_run_machine_is_one_shared_device_time_sliced_on_a_cpu():
    from pdasgd.machine import on_machine
    from pdasgd.scenario import scenario_from_toml

    scenario = scenario_from_toml(TINY + "[model]\nlayers = 2\nforward_s = 0.01\nbeta = 2.0\n")
    cpu = on_machine(scenario, {"cpu": 2}, 0.1)
    assert [(d.name, d.slots, d.time_slice) for d in cpu.devices] == [("cpu", 2, True)]
    assert set(cpu.device_of().values()) == {"cpu"} and cpu.delays.jitter_cv == 0.1
    assert on_machine(scenario, {"cuda:0": 4}).devices[0].time_slice is False


def test_compare_accuracy_puts_the_predicted_time_to_target_beside_the_measured(tmp_path, capsys):
    from executor.replay import replay
    from pdasgd.scenario import load_scenario
    from pdasgd.trace import Trace

    (tmp_path / "tiny.toml").write_text(TINY.replace("batches = 30", "batches = 80"))
    out = tmp_path / "out"
    args = ["compare", str(tmp_path / "tiny.toml"), "--out", str(out), "--json", "--no-progress"]
    assert main([*args, "--accuracy", "--target", "0.5", "--eval-points", "8", "--runs", "2"]) == 0
    document = json.loads(capsys.readouterr().out)
    accuracy = document["accuracy"]
    assert accuracy["target"] == 0.5 and (out / "accuracy.png").stat().st_size > 0
    scenario = load_scenario(out / "async-lu.scenario.toml")
    # measured: the medians over the two real runs, each trace replayed
    runs = [Trace.load(out / f"async-lu.measured{tag}.trace.json") for tag in ("", ".run2")]
    direct = [replay(scenario, trace, eval_points=8) for trace in runs]
    times = sorted(r.time_to(0.5).time_s if r.time_to(0.5) else math.inf for r in direct)
    assert accuracy["measured"]["final_accuracy"] == pytest.approx(sum(r.final_accuracy for r in direct) / 2)
    assert accuracy["measured"]["time_to_target_s"] == (None if times[0] == math.inf else times[0])
    assert accuracy["measured"]["schedules"] == 2
    # predicted: the medians over the predicted schedule and four more noise seeds of the machine simulated
    machine = load_scenario(out / "async-lu.machine.scenario.toml")
    nominal = Trace.load(out / "async-lu.predicted.trace.json")
    assert simulator.simulate(machine).spans == nominal.spans
    seeds = [machine.with_overrides({"run.seed": s}) for s in (1, 2, 3, 4)]
    schedules = [nominal] + [simulator.simulate(seeded) for seeded in seeds]
    replays = [replay(scenario, trace, eval_points=8) for trace in schedules]
    times = sorted(r.time_to(0.5).time_s if r.time_to(0.5) else math.inf for r in replays)
    predicted = accuracy["predicted"]
    assert predicted["schedules"] == 5
    assert predicted["time_to_target_s"] == (None if times[2] == math.inf else times[2])
    finals = sorted(r.final_accuracy for r in replays)
    assert predicted["final_accuracy"] == finals[2]
    reaching = [r.time_to(0.5).batches for r in replays if r.time_to(0.5)]
    assert predicted["schedules_reaching_target"] == len(reaching)
    assert predicted["batches_to_target_range"] == ([min(reaching), max(reaching)] if reaching else None)
    # the measured side is the real runs' own accuracy (their mean): a replayed measured trace is exact
    assert accuracy["measured"]["final_accuracy"] == pytest.approx(document["measured"]["accuracy"], abs=1e-9)
    predicted, measured = accuracy["predicted"]["time_to_target_s"], accuracy["measured"]["time_to_target_s"]
    if predicted is not None and measured is not None:
        assert accuracy["error"]["time_to_target"] == pytest.approx((predicted - measured) / measured)
    assert "accuracy.png" in (out / "report.md").read_text()


def test_compare_accuracy_refuses_what_replay_cannot_do_before_any_work(tmp_path, capsys):
    (tmp_path / "lapsgd.toml").write_text(
        TINY.replace('method = "async-lu"', 'method = "lapsgd"').replace(
            "backward = 2\nmax_in_flight = 4", "replicas = 2\nper_replica = 1"
        )
    )
    assert main(["compare", str(tmp_path / "lapsgd.toml"), "--accuracy", "--out", str(tmp_path / "o")]) == 2
    assert "--accuracy: lapsgd averages a parameter copy per rank" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
    assert main(["compare", str(tmp_path / "lapsgd.toml"), "--target", "-1"]) == 2
    assert "--target: must be >= 0.0" in capsys.readouterr().err


def test_schedules_sets_how_many_noise_seeds_the_accuracy_prediction_replays(capsys):
    from pdasgd.cli.replay import noise_schedules
    from pdasgd.scenario import scenario_from_toml

    model = TINY + "[model]\nlayers = 2\nforward_s = 0.01\nbeta = 2.0\n[delays]\njitter_cv = 0.2\n"
    scenario = scenario_from_toml(model)
    nominal = simulator.simulate(scenario)
    three = noise_schedules(scenario, nominal, 3)
    assert len(three) == 3 and three[0] is nominal
    for seed, trace in zip((1, 2), three[1:], strict=True):
        assert trace.spans == simulator.simulate(scenario.with_overrides({"run.seed": seed})).spans
    assert len(noise_schedules(scenario, nominal)) == 5  # the default
    fixed = scenario.with_overrides({"delays.jitter_cv": 0.0})
    assert noise_schedules(fixed, nominal, 3) == [nominal]  # fixed op times: one schedule is all of them
    with pytest.raises(SystemExit) as exit_:
        main(["compare", "x.toml", "--accuracy", "--schedules", "0"])
    assert exit_.value.code == 2 and "--schedules" in capsys.readouterr().err
