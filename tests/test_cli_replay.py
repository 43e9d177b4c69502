"""`pdasgd replay`: a scenario's simulated trace or a saved trace replayed on the real network; outputs,
the exactness of a measured trace through the command, and one-line errors checked before the work."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pdasgd.cli.main import main

SCENARIO = """
name = "replay-small"
method = "{method}"
[model]
layers = 3
forward_s = 0.004
beta = 2.0
[workers]
forward = 1
backward = 2
max_in_flight = 4
[train]
network = "{network}"
width = 32
depth = 2
dataset = "digits"
batch_size = 32
lr = 0.1
[run]
batches = 60
warmup = 2
"""


def write(tmp_path: Path, method: str = "async-lu", network: str = "mlp") -> Path:
    path = tmp_path / "scenario.toml"
    path.write_text(SCENARIO.format(method=method, network=network))
    return path


def test_replay_of_the_simulated_schedule_prints_json_and_writes_the_plot(tmp_path, capsys) -> None:
    from executor.replay import replay
    from pdasgd.scenario import load_scenario
    from simulator import simulate

    path = write(tmp_path)
    plot, out = tmp_path / "curves.png", tmp_path / "replay.json"
    args = [str(path), "--json", "--target", "0.5", "--eval-points", "6", "--plot", str(plot)]
    assert main(["replay", *args, "--out", str(out), "--no-progress"]) == 0
    data = json.loads(capsys.readouterr().out)
    scenario = load_scenario(path)
    direct = replay(scenario, simulate(scenario), eval_points=6)
    assert data["source"] == "simulator" and data["batches"] == 60 and len(data["curve"]) == 6
    assert data["final_accuracy"] == direct.final_accuracy
    assert [p["accuracy"] for p in data["curve"]] == [p.accuracy for p in direct.curve]
    first = next(p for p in data["curve"] if p["accuracy"] >= 0.5)
    assert (data["time_to_target_s"], data["batches_to_target"]) == (first["time_s"], first["batches"])
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads(out.read_text()) == data


def test_a_measured_trace_replays_to_the_runs_own_accuracy(tmp_path, capsys) -> None:
    path = write(tmp_path, method="async-bu")
    trace = tmp_path / "measured.json"
    assert main(["run", str(path), "--trace", str(trace), "--json"]) == 0
    measured = json.loads(capsys.readouterr().out)
    assert main(["replay", str(path), "--trace", str(trace), "--json", "--no-progress"]) == 0
    replayed = json.loads(capsys.readouterr().out)
    assert replayed["source"] == "executor" and replayed["batches"] == 60
    assert replayed["final_accuracy"] == pytest.approx(measured["accuracy"], abs=1e-9)


def test_the_table_names_the_target_and_says_when_it_is_not_reached(tmp_path, capsys) -> None:
    assert main(["replay", str(write(tmp_path)), "--target", "1.0", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "time to 1 accuracy (s)  not reached" in out and "batches to 1            not reached" in out


@pytest.mark.parametrize(
    ("extra", "reason"),
    [
        (["--target", "1.5"], "--target: must be <= 1.0, got 1.5"),
        (["--eval-points", "0"], "--eval-points: must be >= 1, got 0"),
        (["--plot", "{tmp}"], "--plot: "),
        (["--out", "{tmp}/t.json/x.json"], "--out: cannot write"),
        (["--trace", "{tmp}/nope.json"], "nope.json: file not found"),
        (["--trace", "{tmp}/t.json", "--batches", "5"], "--batches: a trace has its own batches"),
    ],
)
def test_bad_arguments_are_one_line_before_any_work(tmp_path, capsys, extra, reason) -> None:
    (tmp_path / "t.json").write_text("{}")
    path = write(tmp_path)
    args = [arg.replace("{tmp}", str(tmp_path)) for arg in extra]
    assert main(["replay", str(path), *args, "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert reason in err and err.count("\n") == 1


def test_an_averaging_method_and_the_timed_network_are_refused(tmp_path, capsys) -> None:
    ranks = tmp_path / "lapsgd.toml"
    ranks.write_text(
        SCENARIO.format(method="lapsgd", network="mlp")
        .replace("[run]", "[run]\n")
        .replace(
            "[workers]\nforward = 1\nbackward = 2\nmax_in_flight = 4",
            "[workers]\nreplicas = 2\nper_replica = 1",
        )
    )
    assert main(["replay", str(ranks), "--no-progress"]) == 2
    assert "replay: lapsgd averages a parameter copy per rank" in capsys.readouterr().err
    timed = tmp_path / "timed.toml"
    timed.write_text(SCENARIO.format(method="async-lu", network="timed").replace("digits", "synthetic"))
    assert main(["replay", str(timed), "--no-progress"]) == 2
    assert "train.network: timed only sleeps" in capsys.readouterr().err


def test_a_trace_of_another_method_is_refused(tmp_path, capsys) -> None:
    trace = tmp_path / "bu.json"
    assert main(["simulate", str(write(tmp_path, method="async-bu")), "--trace", str(trace)]) == 0
    capsys.readouterr()
    assert main(["replay", str(write(tmp_path)), "--trace", str(trace), "--no-progress"]) == 2
    assert "the trace is of async-bu, the scenario's method is async-lu" in capsys.readouterr().err
