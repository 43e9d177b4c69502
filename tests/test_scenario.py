"""Scenario loading, validation, resolution and saving."""

from __future__ import annotations

import math
import tomllib

import pytest

from pdasgd.scenario import (
    Device,
    Layer,
    ScenarioError,
    load_scenario,
    parse_scenario,
    save_scenario,
    scenario_from_toml,
)
from pdasgd.tomlwrite import dumps

UNIFORM = """
name = "mlp-1f2b"
method = "async-lu"
[model]
layers = 4
forward_s = 1.0
beta = 2.0
[workers]
backward = 2
"""

EXPLICIT = """
method = "async-bu"
[[model.layer]]
name = "fc1"
forward_s = 0.003
backward_s = 0.007
update_s = 0.001
activation_bytes = 100
param_bytes = 200
[[model.layer]]
name = "fc2"
forward_s = 0.001
backward_s = 0.002
"""


def test_uniform_model_expands_into_equal_layers():
    scenario = scenario_from_toml(UNIFORM)
    layers = scenario.model.layers
    assert [layer.name for layer in layers] == ["layer0", "layer1", "layer2", "layer3"]
    assert all(layer.forward_s == 0.25 and layer.backward_s == 0.5 for layer in layers)
    assert scenario.model.forward_s == 1.0
    assert scenario.model.beta == 2.0


def test_explicit_layers_keep_their_costs_and_defaults():
    model = scenario_from_toml(EXPLICIT).model
    assert model.layers[0] == Layer("fc1", 0.003, 0.007, 0.001, 100, 200)
    assert model.layers[1] == Layer("fc2", 0.001, 0.002, 0.0, 0, 0)
    assert model.beta == pytest.approx((0.009 + 0.001) / 0.004)


def test_defaults_are_filled_in():
    scenario = scenario_from_toml("")
    assert scenario.method == "async-lu"
    assert scenario.model is None
    assert (scenario.workers.forward, scenario.workers.backward, scenario.workers.max_in_flight) == (1, 2, 8)
    assert scenario.run.batches == 1000 and scenario.run.warmup == 10
    assert scenario.train.network == "mlp" and scenario.train.batch_size == 128


def test_save_and_load_round_trip(tmp_path):
    source = scenario_from_toml(
        UNIFORM + '\n[[delays.straggler]]\nworker = "backward:1"\nevery = 3\nextra_s = 0.5\n'
    )
    path = save_scenario(source, tmp_path / "s.toml")
    assert load_scenario(path) == source


def test_round_trip_with_devices_and_placement(tmp_path):
    text = (
        UNIFORM
        + """
[[device]]
name = "gpu0"
slots = 2
[[device]]
name = "gpu1"
speed = 2.0
[placement]
forward = ["gpu0"]
backward = ["gpu0", "gpu1"]
"""
    )
    scenario = scenario_from_toml(text)
    assert scenario.device_of() == {"forward:0": "gpu0", "backward:0": "gpu0", "backward:1": "gpu1"}
    assert scenario.device_table()["gpu0"] == Device("gpu0", 2, 1.0)
    assert load_scenario(save_scenario(scenario, tmp_path / "s.toml")) == scenario


def test_every_worker_has_its_own_device_by_default():
    scenario = scenario_from_toml(UNIFORM)
    assert scenario.device_of() == {w: w for w in ["forward:0", "backward:0", "backward:1"]}


def test_unplaced_workers_round_robin_over_devices():
    text = UNIFORM + '[[device]]\nname = "a"\n[[device]]\nname = "b"\n'
    assert scenario_from_toml(text).device_of() == {"forward:0": "a", "backward:0": "b", "backward:1": "a"}


@pytest.mark.parametrize(
    ("method", "workers", "expected"),
    [
        ("sequential", "", ["worker:0"]),
        ("async-bu", "forward = 2\nbackward = 1", ["forward:0", "forward:1", "backward:0"]),
        ("hogwild", "replicas = 1\nper_replica = 3", ["worker:0", "worker:1", "worker:2"]),
        (
            "lapsgd",
            "replicas = 2\nper_replica = 2",
            ["r0/worker:0", "r0/worker:1", "r1/worker:0", "r1/worker:1"],
        ),
        ("ddp", "replicas = 3\n[run]\nbatches = 999", ["r0/worker:0", "r1/worker:0", "r2/worker:0"]),
    ],
)
def test_worker_names_per_method(method, workers, expected):
    scenario = scenario_from_toml(f'method = "{method}"\n[workers]\n{workers}\n')
    assert scenario.worker_names() == expected


def test_overrides_change_source_keys():
    scenario = scenario_from_toml(UNIFORM)
    changed = scenario.with_overrides({"model.beta": 3.0, "workers.backward": 3, "method": "async-bu"})
    assert changed.model.beta == 3.0 and changed.workers.backward == 3 and changed.method == "async-bu"
    assert scenario.model.beta == 2.0  # the original is untouched


def test_override_with_bad_value_names_the_field():
    with pytest.raises(ScenarioError, match=r"^workers.backward: must be >= 1, got 0$"):
        scenario_from_toml(UNIFORM).with_overrides({"workers.backward": 0})


def test_uniform_override_on_explicit_layers_is_an_error():
    with pytest.raises(ScenarioError, match="explicit"):
        scenario_from_toml(EXPLICIT).with_overrides({"model.beta": 1.0})


BAD = [
    ("[workers]\nbackward = 0", r"^workers.backward: must be >= 1, got 0$"),
    ("[workers]\nforward = 0", r"^workers.forward: must be >= 1, got 0$"),
    ("[workers]\nbackward = 1.5", r"^workers.backward: must be an integer, got float 1.5$"),
    ("[workers]\nbackward = true", r"^workers.backward: must be an integer"),
    ('method = "adam"', r"^method: unknown method 'adam' \(methods: sequential, async-lu"),
    ("colour = 1", r"^colour: unknown key"),
    ("[workers]\nthreads = 2", r"^workers.threads: unknown key"),
    (
        "[model]\nlayers = 2\nforward_s = nan\nbeta = 1.0",
        r"^model.forward_s: must be a finite number, got nan$",
    ),
    ("[model]\nlayers = 2\nforward_s = inf\nbeta = 1.0", r"^model.forward_s: must be a finite number"),
    ("[model]\nlayers = 2\nforward_s = -1.0\nbeta = 1.0", r"^model.forward_s: must be > 0, got -1.0$"),
    ("[model]\nlayers = 2\nforward_s = 1.0\nbeta = -2.0", r"^model.beta: must be >= 0, got -2.0$"),
    ("[model]\nlayers = 2\nforward_s = 1.0", r"^model.beta: missing \(required\)$"),
    ('[model]\nlayers = 2\nforward_s = "fast"\nbeta = 1.0', r"^model.forward_s: must be a number, got str"),
    (
        '[[model.layer]]\nname = "a"\nforward_s = 1.0\nbackward_s = -0.5',
        r"^model.layer\[0\].backward_s: must be >= 0, got -0.5$",
    ),
    (
        '[[model.layer]]\nname = "a"\nforward_s = 1.0\nbackward_s = 1.0\n'
        '[[model.layer]]\nname = "a"\nforward_s = 1.0\nbackward_s = 1.0',
        r"^model.layer\[1\].name: duplicate name 'a'$",
    ),
    (
        '[model]\nlayers = 2\n[[model.layer]]\nname = "a"\nforward_s = 1.0\nbackward_s = 1.0',
        r"^model.layers: cannot be combined with \[\[model.layer\]\]$",
    ),
    ("[delays]\nhandoff_s = -0.1", r"^delays.handoff_s: must be >= 0, got -0.1$"),
    ("[delays]\njitter_cv = nan", r"^delays.jitter_cv: must be a finite number"),
    (
        '[[delays.straggler]]\nworker = "backward:7"\nevery = 2\nextra_s = 0.1',
        r"^delays.straggler\[0\].worker: no worker 'backward:7' in async-lu",
    ),
    ('[[delays.straggler]]\nworker = "backward:0"\nextra_s = 0.1', r"^delays.straggler\[0\].every: missing"),
    (
        '[placement]\nforward = ["gpu9"]',
        r"^placement.forward: names device 'gpu9', which no \[\[device\]\] defines$",
    ),
    ('[[device]]\nname = "a"\n[placement]\nbackward = ["a"]', r"^placement.backward: must name 2 devices"),
    ('[[device]]\nname = "a"\n[placement]\nworkers = ["a"]', r"^placement.workers: method async-lu has no"),
    ('[[device]]\nname = "a"\nslots = 0', r"^device\[0\].slots: must be >= 1, got 0$"),
    ('[[device]]\nname = "a"\nspeed = 0.0', r"^device\[0\].speed: must be > 0, got 0.0$"),
    ('[[device]]\nname = "a"\n[[device]]\nname = "a"', r"^device\[1\].name: duplicate name 'a'$"),
    ("[run]\nbatches = 0", r"^run.batches: must be >= 1, got 0$"),
    ("[run]\nbatches = 5\nwarmup = 5", r"^run.warmup: must be < run.batches \(5\), got 5$"),
    ('[train]\nnetwork = "vgg"', r"^train.network: must be one of mlp, resnet, lstm"),
    ('[train]\ndataset = "cifar"', r"^train.dataset: must be one of synthetic, digits, mnist"),
    ('[train]\ndevice = "tpu"', r"^train.device: must be auto, cpu, cuda or cuda:N"),
    ("[train]\nlr = -0.1", r"^train.lr: must be >= 0, got -0.1$"),
    ("workers = 3", r"^workers: must be a table, got int$"),
    ("device = 3", r"^device: must be an array of tables"),
    ("[run]\nbatches = ", r"invalid TOML"),
]


@pytest.mark.parametrize(("text", "message"), BAD)
def test_bad_input_raises_one_line_naming_the_field(text, message):
    with pytest.raises(ScenarioError, match=message) as caught:
        scenario_from_toml(text)
    assert "\n" not in str(caught.value)


def test_missing_file(tmp_path):
    with pytest.raises(ScenarioError, match="file not found"):
        load_scenario(tmp_path / "nope.toml")


def test_npz_dataset_resolves_against_the_scenario_folder(tmp_path):
    (tmp_path / "data.npz").write_bytes(b"")
    (tmp_path / "s.toml").write_text('[train]\ndataset = "data.npz"\n')
    assert load_scenario(tmp_path / "s.toml").train.dataset == str(tmp_path / "data.npz")
    (tmp_path / "t.toml").write_text('[train]\ndataset = "missing.npz"\n')
    with pytest.raises(ScenarioError, match=r"^train.dataset: file not found"):
        load_scenario(tmp_path / "t.toml")


def test_parse_rejects_non_tables():
    with pytest.raises(ScenarioError, match="must be a table"):
        parse_scenario([1, 2])  # type: ignore[arg-type]


def test_toml_writer_round_trips_what_scenarios_hold():
    data = {
        "name": 'a "quoted" name',
        "x": 1.5e-9,
        "n": 3,
        "flag": True,
        "xs": [1, 2.5, "a"],
        "inf": math.inf,
        "t": {"k": 1, "sub": {"z": "y"}, "rows": [{"a": 1}, {"a": 2}]},
    }
    assert tomllib.loads(dumps(data)) == data


def test_overrides_of_a_changed_scenario_start_from_what_it_now_is():
    import dataclasses

    scenario = scenario_from_toml(
        UNIFORM + '\n[[delays.straggler]]\nworker = "backward:1"\nevery = 3\nextra_s = 0.5\n'
    )
    changed = dataclasses.replace(scenario, model=None)
    again = changed.with_overrides({"run.seed": 4})
    assert again.model is None and again.run.seed == 4 and again.delays == scenario.delays
    assert scenario.with_overrides({"model.beta": 3.0}).model.beta == 3.0  # still uniform keys
