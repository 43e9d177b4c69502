"""Hostile input, as a careful user and tester would send it: scenario files, flags, user code, data files,
checkpoints and output paths. Every case must end in one line naming the field or flag, exit status 2, no
traceback, no hang (tests/hostile.py: a time limit per case), and no file touched outside the folder the
case allows."""

from __future__ import annotations

import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
from hostile import assert_one_line_error, files_under, run_cli

SMALL = "[model]\nlayers = 3\nforward_s = 0.01\nbeta = 2.0\n[run]\nbatches = 20\nwarmup = 2\n"
MODEL = "[model]\nlayers = 3\nforward_s = 0.01\nbeta = 2.0\n"
LAYER = '[[model.layer]]\nname = "a"\nforward_s = 0.01\nbackward_s = 0.02\n'


def table(name: str, body: str, model: bool = True) -> str:
    return (MODEL if model else "") + f"[{name}]\n{body}\n"


# (case id, scenario text (str) or bytes, what the line must name)
SCENARIO_FILES = [
    ("invalid-toml", "[run\nbatches = 1", "invalid TOML"),
    ("duplicate-key", "name = 'a'\nname = 'b'", "invalid TOML"),
    ("not-utf8", b'name = "\xff\xfe"\n', "not UTF-8"),
    ("latin1", 'name = "caf\xe9"\n'.encode("latin-1"), "not UTF-8"),
    ("nul-byte", b'name = "a\x00b"\n', "invalid TOML"),
    ("deep-arrays", "a = " + "[" * 3000 + "]" * 3000, "nested too deeply"),
    ("deep-tables", "a = " + "{b = " * 3000 + "1" + "}" * 3000, "nested too deeply"),
    ("unknown-top-key", "colour = 1", "colour: unknown key"),
    ("name-not-string", "name = 3", "name: must be a string"),
    ("name-too-long", f'name = "{"n" * 300}"', "name: must be at most 200"),
    ("method-unknown", 'method = "adam"', "method: unknown method"),
    ("method-empty", 'method = ""', "method: unknown method"),
    ("method-table", "[method]\na = 1", "method: must be a string"),
    ("workers-not-table", "workers = 3", "workers: must be a table"),
    ("forward-zero", table("workers", "forward = 0"), "workers.forward: must be >= 1"),
    ("forward-huge", table("workers", "forward = 100000"), "workers.forward: must be <= 256"),
    ("backward-float", table("workers", "backward = 1.5"), "workers.backward: must be an integer"),
    ("backward-bool", table("workers", "backward = true"), "workers.backward: must be an integer"),
    ("backward-huge-int", table("workers", "backward = 99999999999999999999999"), "workers.backward"),
    ("in-flight-zero", table("workers", "max_in_flight = 0"), "workers.max_in_flight: must be >= 1"),
    (
        "in-flight-huge",
        table("workers", "max_in_flight = 10000000000000"),
        "workers.max_in_flight: must be <=",
    ),
    ("replicas-huge", table("workers", "replicas = 1000000"), "workers.replicas: must be <="),
    ("per-replica-string", table("workers", 'per_replica = "2"'), "workers.per_replica: must be an integer"),
    ("average-every-zero", table("workers", "average_every = 0"), "workers.average_every: must be >= 1"),
    (
        "too-many-workers",
        'method = "hogwild"\n' + table("workers", "replicas = 4096\nper_replica = 256"),
        "workers:",
    ),
    ("workers-unknown", table("workers", "threads = 2"), "workers.threads: unknown key"),
    ("layers-zero", "[model]\nlayers = 0\nforward_s = 1.0\nbeta = 1.0", "model.layers: must be >= 1"),
    ("layers-huge", "[model]\nlayers = 100000000\nforward_s = 1.0\nbeta = 1.0", "model.layers: must be <="),
    (
        "layers-float",
        "[model]\nlayers = 2.5\nforward_s = 1.0\nbeta = 1.0",
        "model.layers: must be an integer",
    ),
    ("forward-nan", "[model]\nlayers = 2\nforward_s = nan\nbeta = 1.0", "model.forward_s: must be a finite"),
    ("forward-inf", "[model]\nlayers = 2\nforward_s = inf\nbeta = 1.0", "model.forward_s: must be a finite"),
    ("forward-zero-s", "[model]\nlayers = 2\nforward_s = 0.0\nbeta = 1.0", "model.forward_s: must be > 0"),
    ("forward-negative", "[model]\nlayers = 2\nforward_s = -1.0\nbeta = 1.0", "model.forward_s: must be > 0"),
    ("forward-huge", "[model]\nlayers = 2\nforward_s = 1e308\nbeta = 10.0", "model.forward_s: must be <="),
    (
        "forward-string",
        '[model]\nlayers = 2\nforward_s = "fast"\nbeta = 1.0',
        "model.forward_s: must be a number",
    ),
    ("forward-underflow", "[model]\nlayers = 3\nforward_s = 5e-324\nbeta = 1.0", "model:"),
    ("forward-tiny", "[model]\nlayers = 3\nforward_s = 1e-12\nbeta = 1.0", "model: a batch's forward"),
    ("beta-negative", "[model]\nlayers = 2\nforward_s = 1.0\nbeta = -2.0", "model.beta: must be >= 0"),
    ("beta-nan", "[model]\nlayers = 2\nforward_s = 1.0\nbeta = nan", "model.beta: must be a finite"),
    ("beta-huge", "[model]\nlayers = 2\nforward_s = 1.0\nbeta = 1e300", "model.beta: must be <="),
    (
        "backward-overflows",
        "[model]\nlayers = 1\nforward_s = 1e6\nbeta = 1e6",
        "model.beta: a layer's backward",
    ),
    ("beta-missing", "[model]\nlayers = 2\nforward_s = 1.0", "model.beta: missing"),
    (
        "update-negative",
        "[model]\nlayers = 2\nforward_s = 1.0\nbeta = 1.0\nupdate_s = -1.0",
        "model.update_s",
    ),
    ("bytes-negative", MODEL + "activation_bytes = -1", "model.activation_bytes: must be >= 0"),
    ("bytes-huge", MODEL + "param_bytes = 10000000000000000", "model.param_bytes: must be <="),
    (
        "bytes-overflow",
        MODEL + "param_bytes = 1000000000000\n[workers]\nmax_in_flight = 100000\nreplicas = 4096",
        "model:",
    ),
    ("model-mixed", "[model]\nlayers = 2\n" + LAYER, "model.layers: cannot be combined"),
    ("layer-empty", "[model]\nlayer = []", "model.layer: must list at least one"),
    ("layer-not-table", "[model]\nlayer = 3", "model.layer: must be an array of tables"),
    ("layer-no-name", "[[model.layer]]\nforward_s = 1.0\nbackward_s = 1.0", "model.layer[0].name: missing"),
    ("layer-duplicate", LAYER + LAYER, "model.layer[1].name: duplicate"),
    (
        "layer-backward-negative",
        '[[model.layer]]\nname = "a"\nforward_s = 1.0\nbackward_s = -0.5',
        "model.layer[0].backward_s",
    ),
    (
        "layer-forward-huge",
        '[[model.layer]]\nname = "a"\nforward_s = 1e9\nbackward_s = 1.0',
        "model.layer[0].forward_s: must be <=",
    ),
    ("layer-all-zero", '[[model.layer]]\nname = "a"\nforward_s = 0.0\nbackward_s = 0.0', "model"),
    ("layer-unknown-key", LAYER + "colour = 1", "model.layer[0].colour: unknown key"),
    ("delays-old-key", table("delays", "update_s = 0.1"), "delays.update_s: renamed to delays.visibility_s"),
    ("handoff-negative", table("delays", "handoff_s = -0.1"), "delays.handoff_s: must be >= 0"),
    ("handoff-huge", table("delays", "handoff_s = 1e300"), "delays.handoff_s: must be <="),
    ("handoff-inf", table("delays", "handoff_s = inf"), "delays.handoff_s: must be a finite"),
    ("visibility-huge", table("delays", "visibility_s = 1e20"), "delays.visibility_s: must be <="),
    ("allreduce-negative", table("delays", "allreduce_s = -1.0"), "delays.allreduce_s: must be >= 0"),
    ("jitter-huge", table("delays", "jitter_cv = 1e200"), "delays.jitter_cv: must be <="),
    ("jitter-nan", table("delays", "jitter_cv = nan"), "delays.jitter_cv: must be a finite"),
    (
        "straggler-no-worker",
        MODEL + "[[delays.straggler]]\nevery = 2\nextra_s = 0.1",
        "delays.straggler[0].worker: missing",
    ),
    (
        "straggler-unknown-worker",
        MODEL + '[[delays.straggler]]\nworker = "backward:7"\nevery = 2\nextra_s = 0.1',
        "delays.straggler[0].worker: no worker",
    ),
    (
        "straggler-every-zero",
        MODEL + '[[delays.straggler]]\nworker = "backward:0"\nevery = 0\nextra_s = 0.1',
        "delays.straggler[0].every",
    ),
    (
        "straggler-extra-huge",
        MODEL + '[[delays.straggler]]\nworker = "backward:0"\nevery = 1\nextra_s = 1e300',
        "delays.straggler[0].extra_s",
    ),
    (
        "straggler-kind",
        MODEL + '[[delays.straggler]]\nworker = "backward:0"\nevery = 1\nextra_s = 0.1\nkind = "nap"',
        "delays.straggler[0].kind",
    ),
    ("straggler-not-array", table("delays", "straggler = 3"), "delays.straggler: must be an array"),
    ("device-not-array", "device = 3", "device: must be an array of tables"),
    ("device-no-name", "[[device]]\nslots = 2", "device[0].name: missing"),
    ("device-slots-zero", '[[device]]\nname = "a"\nslots = 0', "device[0].slots: must be >= 1"),
    ("device-slots-huge", '[[device]]\nname = "a"\nslots = 1000000000', "device[0].slots: must be <="),
    ("device-speed-zero", '[[device]]\nname = "a"\nspeed = 0.0', "device[0].speed: must be > 0"),
    ("device-speed-tiny", '[[device]]\nname = "a"\nspeed = 1e-300', "device[0].speed: must be >="),
    ("device-speed-huge", '[[device]]\nname = "a"\nspeed = 1e300', "device[0].speed: must be <="),
    ("device-contention", '[[device]]\nname = "a"\ncontention = -0.1', "device[0].contention: must be >= 0"),
    (
        "device-time-slice",
        '[[device]]\nname = "a"\ntime_slice = 1',
        "device[0].time_slice: must be true or false",
    ),
    ("device-duplicate", '[[device]]\nname = "a"\n[[device]]\nname = "a"', "device[1].name: duplicate"),
    ("placement-unknown-device", '[placement]\nforward = ["gpu9"]', "placement.forward: names device"),
    (
        "placement-length",
        '[[device]]\nname = "a"\n[placement]\nbackward = ["a"]',
        "placement.backward: must name 2",
    ),
    (
        "placement-role",
        '[[device]]\nname = "a"\n[placement]\nworkers = ["a"]',
        "placement.workers: method async-lu has no",
    ),
    (
        "placement-not-list",
        '[[device]]\nname = "a"\n[placement]\nforward = "a"',
        "placement.forward: must be a list",
    ),
    ("placement-unknown-key", "[placement]\nmiddle = []", "placement.middle: unknown key"),
    ("network-unknown", table("train", 'network = "vgg"', False), "train.network: must be one of"),
    ("network-long", table("train", f'network = "m:{"f" * 600}"', False), "train.network: must be at most"),
    ("dataset-unknown", table("train", 'dataset = "cifar"', False), "train.dataset: must be one of"),
    (
        "dataset-missing-file",
        table("train", 'dataset = "nowhere.npz"', False),
        "train.dataset: file not found",
    ),
    ("device-tpu", table("train", 'device = "tpu"', False), "train.device: must be auto, cpu, cuda"),
    ("device-arabic-digit", table("train", 'device = "cuda:\u0661"', False), "train.device"),
    ("device-index-huge", table("train", 'device = "cuda:99999999999999999999"', False), "train.device"),
    ("width-zero", table("train", "width = 0", False), "train.width: must be >= 1"),
    ("width-huge", table("train", "width = 10000000", False), "train.width: must be <="),
    ("depth-huge", table("train", "depth = 100000000", False), "train.depth: must be <="),
    ("batch-size-zero", table("train", "batch_size = 0", False), "train.batch_size: must be >= 1"),
    ("lr-negative", table("train", "lr = -0.1", False), "train.lr: must be >= 0"),
    ("lr-inf", table("train", "lr = inf", False), "train.lr: must be a finite"),
    ("momentum-one", table("train", "momentum = 1.0", False), "train.momentum: must be >= 0 and < 1"),
    ("momentum-negative", table("train", "momentum = -0.5", False), "train.momentum"),
    ("weight-decay-huge", table("train", "weight_decay = 1e300", False), "train.weight_decay: must be <="),
    ("threads-zero", table("train", "threads_per_worker = 0", False), "train.threads_per_worker"),
    ("threads-huge", table("train", "threads_per_worker = 4294967296", False), "train.threads_per_worker"),
    ("timed-without-model", table("train", 'network = "timed"', False), "train.network: timed"),
    ("timed-with-digits", table("train", 'network = "timed"\ndataset = "digits"'), "train.dataset"),
    ("batches-zero", table("run", "batches = 0"), "run.batches: must be >= 1"),
    ("batches-huge", table("run", "batches = 1000000000000"), "run.batches: must be <="),
    ("warmup-not-below", table("run", "batches = 5\nwarmup = 5"), "run.warmup: must be < run.batches"),
    ("warmup-negative", table("run", "warmup = -1"), "run.warmup: must be >= 0"),
    ("seed-negative", table("run", "seed = -1"), "run.seed: must be >= 0"),
    ("seed-huge", table("run", "seed = 18446744073709551616"), "run.seed: must be <="),
    ("op-timeout-zero", table("run", "op_timeout_s = 0.0"), "run.op_timeout_s: must be > 0"),
    ("op-timeout-huge", table("run", "op_timeout_s = 1e300"), "run.op_timeout_s: must be <="),
    (
        "steps-too-many",
        "[model]\nlayers = 10000\nforward_s = 1.0\nbeta = 1.0\n[run]\nbatches = 10000000",
        "run.batches",
    ),
]


def write(folder: Path, name: str, content: str | bytes) -> Path:
    path = folder / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
    return path


@pytest.fixture
def work(tmp_path: Path) -> Path:
    folder = tmp_path / "work"
    folder.mkdir()
    return folder


def check_case(work: Path, argv: list[str], command: str, names: str, allowed: Path | None = None) -> None:
    before = files_under(work.parent, allowed)
    outcome = run_cli(argv, work)
    assert_one_line_error(outcome, command, names)
    assert files_under(work.parent, allowed) == before, "a file outside the output folder changed"


@pytest.mark.parametrize(("case", "content", "names"), SCENARIO_FILES, ids=[c[0] for c in SCENARIO_FILES])
def test_hostile_scenario_files(work: Path, case: str, content, names: str) -> None:
    path = write(work, "s.toml", content)
    check_case(work, ["validate", str(path)], "validate", names)


def test_unreadable_and_odd_scenario_paths(work: Path) -> None:
    check_case(work, ["validate", str(work / "missing.toml")], "validate", "file not found")
    check_case(work, ["validate", str(work)], "validate", "is a folder")
    big = work / "big.toml"
    big.write_bytes(b"# " + b"x" * (11 * 2**20))
    check_case(work, ["validate", str(big)], "validate", "larger than 10 MiB")


# --- flags ----------------------------------------------------------------------------------------------

# (case id, argv after the command's scenario file, command, what the line must name)
FLAGS = [
    ("simulate-batches-zero", ["simulate", "{s}", "--batches", "0"], "--batches"),
    ("simulate-batches-negative", ["simulate", "{s}", "--batches", "-4"], "--batches"),
    ("simulate-batches-word", ["simulate", "{s}", "--batches", "many"], "--batches"),
    ("simulate-batches-huge", ["simulate", "{s}", "--batches", "100000000000"], "--batches"),
    ("simulate-seed-negative", ["simulate", "{s}", "--seed", "-1"], "--seed"),
    ("simulate-seed-huge", ["simulate", "{s}", "--seed", "99999999999999"], "--seed"),
    ("simulate-engine", ["simulate", "{s}", "--engine", "quantum"], "--engine"),
    ("simulate-engine-fast-jitter", ["simulate", "{jitter}", "--engine", "fast"], "engine: the fast path"),
    ("simulate-gantt-batches-zero", ["simulate", "{s}", "--gantt-batches", "0"], "--gantt-batches"),
    ("simulate-gantt-batches-huge", ["simulate", "{s}", "--gantt-batches", "100000"], "--gantt-batches"),
    ("simulate-trace-empty", ["simulate", "{s}", "--trace", ""], "--trace: must not be empty"),
    ("simulate-trace-folder", ["simulate", "{s}", "--trace", "{dir}"], "--trace"),
    ("simulate-trace-under-file", ["simulate", "{s}", "--trace", "{file}/t.json"], "--trace"),
    ("simulate-trace-unwritable", ["simulate", "{s}", "--trace", "/proc/pdasgd/t.json"], "--trace"),
    ("simulate-chrome-folder", ["simulate", "{s}", "--chrome", "{dir}"], "--chrome"),
    ("simulate-gantt-under-file", ["simulate", "{s}", "--gantt", "{file}/g.png"], "--gantt"),
    ("simulate-staleness-plot-folder", ["simulate", "{s}", "--staleness-plot", "{dir}"], "--staleness-plot"),
    ("simulate-trace-too-big", ["simulate", "{long}", "--trace", "t.json"], "run.batches: a trace of"),
    ("simulate-unknown-flag", ["simulate", "{s}", "--colour"], "unrecognized arguments"),
    (
        "theory-batches-huge",
        ["theory", "--beta", "2", "--batches", "1000000000000", "--backward", "2"],
        "--batches",
    ),
    ("theory-beta-negative", ["theory", "--beta", "-1", "--batches", "10", "--backward", "2"], "--beta"),
    ("theory-beta-nan", ["theory", "--beta", "nan", "--batches", "10", "--backward", "2"], "--beta"),
    ("theory-beta-inf", ["theory", "--beta", "inf", "--batches", "10", "--backward", "2"], "--beta"),
    ("theory-beta-word", ["theory", "--beta", "two", "--batches", "10", "--backward", "2"], "--beta"),
    ("theory-backward-zero", ["theory", "--beta", "2", "--batches", "10", "--backward", "0"], "--backward"),
    (
        "theory-forward-zero",
        ["theory", "--beta", "2", "--batches", "10", "--backward", "1", "--forward", "0"],
        "--forward",
    ),
    (
        "theory-layers-huge",
        ["theory", "--beta", "2", "--batches", "10", "--backward", "1", "--layers", "10000000"],
        "--layers",
    ),
    (
        "theory-handoff-negative",
        ["theory", "--beta", "2", "--batches", "10", "--backward", "1", "--handoff-s", "-1"],
        "--handoff-s",
    ),
    (
        "theory-in-flight-zero",
        ["theory", "--beta", "2", "--batches", "10", "--backward", "1", "--max-in-flight", "0"],
        "--max-in-flight",
    ),
    (
        "theory-forward-s-zero",
        ["theory", "--beta", "2", "--batches", "10", "--backward", "1", "--forward-s", "0"],
        "--forward-s",
    ),
    (
        "theory-forward-s-huge",
        ["theory", "--beta", "10", "--batches", "10", "--backward", "1", "--forward-s", "1e308"],
        "--forward-s",
    ),
    ("theory-missing-beta", ["theory", "--batches", "10", "--backward", "1"], "--beta"),
    ("run-checkpoint-every-zero", ["run", "{s}", "--checkpoint-every", "0"], "--checkpoint-every"),
    ("run-curve-points-negative", ["run", "{s}", "--curve-points", "-1"], "--curve-points"),
    ("run-curve-points-huge", ["run", "{s}", "--curve-points", "100000"], "--curve-points"),
    ("run-gantt-batches-zero", ["run", "{s}", "--gantt-batches", "0"], "--gantt-batches"),
    ("run-trace-empty", ["run", "{s}", "--trace", ""], "--trace: must not be empty"),
    ("run-trace-folder", ["run", "{s}", "--trace", "{dir}"], "--trace"),
    ("run-chrome-under-file", ["run", "{s}", "--chrome", "{file}/c.json"], "--chrome"),
    ("run-checkpoint-on-file", ["run", "{s}", "--checkpoint", "{file}"], "--checkpoint"),
    ("run-checkpoint-unwritable", ["run", "{s}", "--checkpoint", "/proc/pdasgd-ckpt"], "--checkpoint"),
    ("run-nccl-on-cpu", ["run", "{ddp}"], "distributed.backend: nccl needs CUDA devices"),
    ("compare-batches-zero", ["compare", "{s}", "--batches", "0"], "--batches"),
    ("compare-out-file", ["compare", "{s}", "--out", "{file}"], "--out"),
    ("compare-out-under-file", ["compare", "{s}", "--out", "{file}/x"], "--out"),
    ("compare-out-unwritable", ["compare", "{s}", "--out", "/proc/pdasgd-out"], "--out"),
    ("sweep-jobs-zero", ["sweep", "{s}", "--vary", "workers.backward=1,2", "--jobs", "0"], "--jobs"),
    ("sweep-jobs-huge", ["sweep", "{s}", "--vary", "workers.backward=1,2", "--jobs", "100000"], "--jobs"),
    ("sweep-vary-no-equals", ["sweep", "{s}", "--vary", "workers.backward"], "--vary"),
    ("sweep-vary-no-values", ["sweep", "{s}", "--vary", "workers.backward="], "--vary"),
    (
        "sweep-vary-twice",
        ["sweep", "{s}", "--vary", "workers.backward=1", "--vary", "workers.backward=2"],
        "--vary workers.backward: given twice",
    ),
    (
        "sweep-vary-unknown-key",
        ["sweep", "{s}", "--vary", "workers.colour=1,2"],
        "workers.colour: unknown key",
    ),
    (
        "sweep-vary-bad-value",
        ["sweep", "{s}", "--vary", "workers.backward=1,0"],
        "workers.backward: must be >= 1",
    ),
    ("sweep-out-file", ["sweep", "{s}", "--vary", "workers.backward=1,2", "--out", "{file}"], "--out"),
    ("sweep-no-model", ["sweep", "{train}", "--vary", "workers.backward=1,2"], "model: no layer costs"),
    ("sweep-missing-vary", ["sweep", "{s}"], "--vary"),
    ("profile-batches-zero", ["profile", "{train}", "--batches", "0"], "--batches"),
    ("profile-warmup-negative", ["profile", "{train}", "--warmup", "-1"], "--warmup"),
    ("profile-output-folder", ["profile", "{train}", "-o", "{dir}"], "-o/--output"),
    ("profile-output-empty", ["profile", "{train}", "-o", ""], "-o/--output: must not be empty"),
    ("profile-output-under-file", ["profile", "{train}", "-o", "{file}/p.toml"], "-o/--output"),
    ("demo-batches-zero", ["demo", "--batches", "0"], "--batches"),
    ("demo-out-file", ["demo", "--out", "{file}"], "--out"),
    ("methods-unknown", ["methods", "adam"], "unknown method"),
    ("methods-layers-zero", ["methods", "--layers", "0"], "--layers"),
    ("methods-layers-huge", ["methods", "--layers", "1000"], "--layers"),
    ("validate-no-file", ["validate"], "scenario"),
    ("unknown-command", ["fly"], "invalid choice"),
]


def fill(argv: list[str], work: Path) -> list[str]:
    names = {
        "s": write(work, "s.toml", SMALL),
        "jitter": write(work, "jitter.toml", SMALL + "[delays]\njitter_cv = 0.2\n"),
        "long": write(
            work, "long.toml", "[model]\nlayers = 50\nforward_s = 1.0\nbeta = 2.0\n[run]\nbatches = 1000000\n"
        ),
        "ddp": write(
            work,
            "ddp.toml",
            'method = "ddp"\n[distributed]\nbackend = "nccl"\n'
            + table("train", 'width = 8\ndepth = 1\ndevice = "cpu"', False),
        ),
        "train": write(work, "train.toml", table("train", 'width = 8\ndepth = 1\ndataset = "digits"', False)),
        "dir": work / "a-folder",
        "file": write(work, "a-file", "not a folder"),
    }
    (work / "a-folder").mkdir(exist_ok=True)
    return [part.format(**{key: str(value) for key, value in names.items()}) for part in argv]


@pytest.mark.parametrize(("case", "argv", "names"), FLAGS, ids=[c[0] for c in FLAGS])
def test_hostile_flags(work: Path, case: str, argv: list[str], names: str) -> None:
    argv = fill(argv, work)
    check_case(work, argv, argv[0], names)


# --- user code ------------------------------------------------------------------------------------------

USER_MODULES = {
    "raises_on_import": "raise RuntimeError('broken at import')\n",
    "syntax_error": "def blocks(:\n",
    "not_callable": "blocks = 3\n",
    "no_keywords": "def blocks():\n    return []\n",
    "raises": "def blocks(input_shape, num_classes):\n    raise ValueError('no blocks for you')\n",
    "returns_none": "def blocks(input_shape, num_classes):\n    return None\n",
    "returns_empty": "def blocks(input_shape, num_classes):\n    return []\n",
    "returns_ints": "def blocks(input_shape, num_classes):\n    return [1, 2]\n",
    "wrong_width": (
        "import torch\n"
        "def blocks(input_shape, num_classes):\n"
        "    return [torch.nn.Flatten(), torch.nn.Linear(3, num_classes)]\n"
    ),
    "wrong_output": (
        "import math, torch\n"
        "def blocks(input_shape, num_classes):\n"
        "    return [torch.nn.Flatten(), torch.nn.Linear(math.prod(input_shape), num_classes + 3)]\n"
    ),
    "int_output": (
        "import math, torch\n"
        "class Round(torch.nn.Module):\n"
        "    def forward(self, x):\n        return x.long()\n"
        "def blocks(input_shape, num_classes):\n"
        "    return [torch.nn.Flatten(), torch.nn.Linear(math.prod(input_shape), num_classes), Round()]\n"
    ),
    "tuple_output": (
        "import math, torch\n"
        "class Pair(torch.nn.Module):\n"
        "    def forward(self, x):\n        return x, x\n"
        "def blocks(input_shape, num_classes):\n"
        "    return [torch.nn.Flatten(), torch.nn.Linear(math.prod(input_shape), num_classes), Pair()]\n"
    ),
    "backward_fails": (
        "import math, torch\n"
        "class Bad(torch.autograd.Function):\n"
        "    @staticmethod\n    def forward(ctx, x):\n        return x * 1\n"
        "    @staticmethod\n    def backward(ctx, g):\n        raise RuntimeError('no gradient here')\n"
        "class Block(torch.nn.Module):\n"
        "    def __init__(self, n, k):\n        super().__init__()\n"
        "        self.linear = torch.nn.Linear(n, k)\n"
        "    def forward(self, x):\n        return Bad.apply(self.linear(x.flatten(1)))\n"
        "def blocks(input_shape, num_classes):\n    return [Block(math.prod(input_shape), num_classes)]\n"
    ),
}
USER_CASES = [
    ("missing-module", "no_such_module_anywhere:blocks", "train.network: cannot import"),
    ("missing-function", "{module}:nothing_here", "has no 'nothing_here'"),
    *[(name, f"pdasgd_user_{name}:blocks", "train.network") for name in USER_MODULES],
]


@pytest.mark.parametrize(("case", "spec", "names"), USER_CASES, ids=[c[0] for c in USER_CASES])
def test_hostile_user_networks(work: Path, monkeypatch, case: str, spec: str, names: str) -> None:
    for name, source in USER_MODULES.items():
        write(work, f"pdasgd_user_{name}.py", source)
    monkeypatch.syspath_prepend(str(work))
    spec = spec.format(module="pdasgd_user_raises")
    scenario = write(
        work,
        "user.toml",
        table("train", f'network = "{spec}"\ndataset = "digits"\nbatch_size = 8', False)
        + "[run]\nbatches = 3\nwarmup = 0\n",
    )
    check_case(work, ["run", str(scenario)], "run", names)


# --- data files -----------------------------------------------------------------------------------------


def npz(path: Path, **arrays) -> Path:
    np.savez(path, **arrays)
    return path


def bomb(path: Path) -> Path:
    """An .npz whose central directory claims members of 4 GiB each (a decompression bomb's signature)."""
    npz(path, x=np.zeros((4, 2)), y=np.zeros(4, dtype=np.int64), z=np.zeros(4), w=np.zeros(4))
    data = bytearray(path.read_bytes())
    start = data.find(b"PK\x01\x02")
    while start >= 0:  # each member's central-directory record: uncompressed size at offset 24
        struct.pack_into("<I", data, start + 24, 2**32 - 1)
        start = data.find(b"PK\x01\x02", start + 4)
    path.write_bytes(bytes(data))
    return path


DATA_CASES = [
    ("not-a-zip", lambda p: write(p.parent, p.name, "just text"), "cannot read"),
    (
        "truncated",
        lambda p: write(
            p.parent, p.name, npz(p, x=np.zeros((8, 2)), y=np.zeros(8, dtype=np.int64)).read_bytes()[:60]
        ),
        "cannot read",
    ),
    ("bomb", bomb, "decompressed"),
    (
        "pickled-objects",
        lambda p: npz(p, x=np.array([{"a": 1}] * 4, dtype=object), y=np.zeros(4, dtype=np.int64)),
        "cannot read",
    ),
    ("missing-y", lambda p: npz(p, x=np.zeros((4, 2))), "missing key"),
    ("lengths-differ", lambda p: npz(p, x=np.zeros((4, 2)), y=np.zeros(3, dtype=np.int64)), "train.dataset"),
    (
        "negative-labels",
        lambda p: npz(p, x=np.zeros((4, 2)), y=-np.ones(4, dtype=np.int64)),
        "labels must be integers >= 0",
    ),
    ("float-labels", lambda p: npz(p, x=np.zeros((4, 2)), y=np.zeros(4)), "labels must be integers"),
    (
        "nan-inputs",
        lambda p: npz(p, x=np.full((4, 2), np.nan), y=np.zeros(4, dtype=np.int64)),
        "NaN or infinite",
    ),
    (
        "complex-inputs",
        lambda p: npz(p, x=np.zeros((4, 2), dtype=complex), y=np.zeros(4, dtype=np.int64)),
        "real numbers",
    ),
    (
        "too-many-classes",
        lambda p: npz(p, x=np.zeros((4, 2)), y=np.full(4, 10**7, dtype=np.int64)),
        "classes",
    ),
    ("one-dimensional-x", lambda p: npz(p, x=np.zeros(4), y=np.zeros(4, dtype=np.int64)), "train.dataset"),
    ("empty", lambda p: npz(p, x=np.zeros((0, 2)), y=np.zeros(0, dtype=np.int64)), "train.dataset"),
    ("folder", lambda p: (p.mkdir(), p)[1], "train.dataset"),
]


@pytest.mark.parametrize(("case", "make", "names"), DATA_CASES, ids=[c[0] for c in DATA_CASES])
def test_hostile_data_files(work: Path, case: str, make, names: str) -> None:
    make(work / "data.npz")
    scenario = write(work, "s.toml", table("train", 'width = 8\ndepth = 1\ndataset = "data.npz"', False))
    check_case(work, ["run", str(scenario)], "run", names)


# --- checkpoints ----------------------------------------------------------------------------------------

TINY = (
    table("train", 'width = 8\ndepth = 1\ndataset = "digits"\nbatch_size = 8', False)
    + "[run]\nbatches = 6\nwarmup = 0\n"
)


class Boom:
    def __reduce__(self):
        return (print, ("unpickled code ran",))


def saved_checkpoint(work: Path, text: str = TINY) -> Path:
    folder = work / "saved"
    outcome = run_cli(
        ["run", str(write(work, "first.toml", text)), "--checkpoint", str(folder), "--checkpoint-every", "2"],
        work,
    )
    assert outcome.status == 0, outcome.err
    return folder / "checkpoint.pt"


CHECKPOINT_CASES = [
    ("random-bytes", lambda w, p: p.write_bytes(b"\x00garbage" * 100), "cannot read"),
    ("truncated", lambda w, p: p.write_bytes(saved_checkpoint(w).read_bytes()[:200]), "cannot read"),
    ("malicious-pickle", lambda w, p: p.write_bytes(pickle.dumps(Boom())), "cannot read"),
    (
        "foreign-dict",
        lambda w, p: __import__("torch").save({"weights": [1, 2]}, p),
        "not a pdasgd checkpoint",
    ),
    (
        "another-scenario",
        lambda w, p: p.write_bytes(saved_checkpoint(w, TINY.replace("width = 8", "width = 9")).read_bytes()),
        "another scenario",
    ),
    ("finished", lambda w, p: p.write_bytes(saved_checkpoint(w).read_bytes()), "has finished all 6 batches"),
    ("folder", lambda w, p: p.mkdir(), "is not a file"),
]


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
@pytest.mark.parametrize(("case", "make", "names"), CHECKPOINT_CASES, ids=[c[0] for c in CHECKPOINT_CASES])
def test_hostile_checkpoints(work: Path, case: str, make, names: str, capsys) -> None:
    folder = work / "ckpt"
    folder.mkdir()
    make(work, folder / "checkpoint.pt")
    scenario = write(work, "s.toml", TINY)
    check_case(work, ["run", str(scenario), "--checkpoint", str(folder)], "run", names, allowed=folder)
    assert "unpickled code ran" not in capsys.readouterr().out


def test_a_malformed_checkpoint_with_the_right_format_is_refused(work: Path) -> None:
    import torch

    path = saved_checkpoint(work)
    state = torch.load(path, weights_only=True)
    state["layers"][0]["tensors"] = [torch.zeros(3)]  # wrong shapes for the network
    torch.save(state, path)
    text = TINY.replace("batches = 6", "batches = 12")
    check_case(
        work,
        ["run", str(write(work, "more.toml", text)), "--checkpoint", str(path.parent)],
        "run",
        "checkpoint",
    )


def test_the_suite_has_at_least_150_distinct_cases() -> None:
    counts = [len(SCENARIO_FILES), 3, len(FLAGS), len(USER_CASES), len(DATA_CASES), len(CHECKPOINT_CASES), 1]
    assert sum(counts) >= 150, counts
