"""Sweeps: --vary parsing, the grid, CSV rows, and the command end to end (simulated = theory here)."""

from __future__ import annotations

import csv
import json

import pytest

from pdasgd.cli.main import main
from pdasgd.scenario import ScenarioError, scenario_from_toml
from pdasgd.sweep import grid, parse_value, parse_vary, to_csv

BASE = """
name = "sweep"
method = "async-lu"
[model]
layers = 4
forward_s = 1.0
beta = 2.0
[workers]
backward = 2
[run]
batches = 200
warmup = 20
"""


@pytest.mark.parametrize(
    ("text", "value"), [("2", 2), ("2.5", 2.5), ("true", True), ('"a"', "a"), ("async-lu", "async-lu")]
)
def test_values_parse_as_toml_or_bare_strings(text, value):
    assert parse_value(text) == value


def test_parse_vary_and_bad_flags():
    assert parse_vary("workers.backward=1,2,3") == ("workers.backward", [1, 2, 3])
    for bad in ["workers.backward", "=1,2", "workers.backward="]:
        with pytest.raises(ScenarioError, match="expected KEY=V1,V2"):
            parse_vary(bad)


def test_grid_is_the_cartesian_product_and_validates_each_point():
    base = scenario_from_toml(BASE)
    points = grid(base, [("workers.backward", [1, 2]), ("method", ["async-lu", "async-bu"])])
    assert [overrides for overrides, _ in points] == [
        {"workers.backward": 1, "method": "async-lu"},
        {"workers.backward": 1, "method": "async-bu"},
        {"workers.backward": 2, "method": "async-lu"},
        {"workers.backward": 2, "method": "async-bu"},
    ]
    assert points[3][1].workers.backward == 2 and points[3][1].method == "async-bu"
    with pytest.raises(ScenarioError, match=r"^--vary workers.backward=0: workers.backward: must be >= 1"):
        grid(base, [("workers.backward", [0])])


def test_csv_has_the_union_of_columns():
    text = to_csv([{"a": 1, "b": 2.5}, {"a": 2, "c": "x"}])
    assert text.splitlines() == ["a,b,c", "1,2.5,", "2,,x"]


def test_sweep_command_writes_csv_and_plots(tmp_path, capsys):
    (tmp_path / "s.toml").write_text(BASE)
    out = tmp_path / "out"
    args = [
        "sweep",
        str(tmp_path / "s.toml"),
        "--vary",
        "workers.backward=1,2",
        "--vary",
        "model.beta=1.0,2.0",
    ]
    assert main([*args, "--out", str(out), "--json", "--jobs", "2"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(r["workers.backward"], r["model.beta"]) for r in rows] == [
        (1, 1.0),
        (1, 2.0),
        (2, 1.0),
        (2, 2.0),
    ]
    for row in rows:
        # fixed times, a device per worker: the simulator reproduces the closed forms
        assert row["predicted_throughput_batches_per_s"] == pytest.approx(
            row["theory_throughput_batches_per_s"]
        )
    assert rows[1]["predicted_throughput_batches_per_s"] == pytest.approx(0.5)  # beta 2, k 1: B/k = 2 s
    with open(out / "sweep.csv") as handle:
        assert len(list(csv.DictReader(handle))) == 4
    assert (out / "throughput.png").stat().st_size > 0 and (out / "staleness.png").stat().st_size > 0


def test_sweep_accuracy_adds_the_predicted_time_to_target_of_every_point(tmp_path, capsys):
    from executor.replay import replay
    from simulator import simulate

    text = BASE.replace("forward_s = 1.0", "forward_s = 0.01").replace("batches = 200", "batches = 90")
    text += '[train]\nnetwork = "mlp"\nwidth = 32\ndepth = 3\ndataset = "digits"\nbatch_size = 32\nlr = 0.1\n'
    (tmp_path / "s.toml").write_text(text)
    out = tmp_path / "out"
    args = [
        "sweep",
        str(tmp_path / "s.toml"),
        "--vary",
        "workers.backward=1,2",
        "--vary",
        "delays.handoff_s=0,0.05",
    ]
    assert (
        main([*args, "--accuracy", "--target", "0.6", "--eval-points", "9", "--out", str(out), "--json"]) == 0
    )
    rows = json.loads(capsys.readouterr().out)
    base = scenario_from_toml(text)
    for row in rows:
        point = base.with_overrides({k: row[k] for k in ("workers.backward", "delays.handoff_s")})
        direct = replay(point, simulate(point), eval_points=9)
        reached = direct.time_to(0.6)
        assert row["predicted_final_accuracy"] == direct.final_accuracy
        assert row["predicted_time_to_target_s"] == (reached.time_s if reached else None)
        assert row["predicted_batches_to_target"] == (reached.batches if reached else None)
    assert (out / "time_to_accuracy.png").stat().st_size > 0


def test_sweep_accuracy_needs_a_network_that_learns(tmp_path, capsys):
    (tmp_path / "s.toml").write_text(BASE + '[train]\nnetwork = "timed"\n')
    assert main(["sweep", str(tmp_path / "s.toml"), "--vary", "workers.backward=1,2", "--accuracy"]) == 2
    assert "train.network: timed only sleeps" in capsys.readouterr().err
