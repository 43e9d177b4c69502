"""The scenario: one TOML file that both engines read.

A scenario says what to schedule (method, layer costs, workers, devices, delays), what to train for real
(`[train]`, ignored by the simulator) and for how long (`[run]`). This module loads, validates, resolves and
saves it. Resolving fills every default and turns the uniform model (`layers`, `forward_s`, `beta`) into
explicit layers, so engines only ever see `Scenario.model.layers`.

Every bad input raises `ScenarioError` with one line that names the field and the problem, e.g.
`workers.backward: must be >= 1, got 0`. The format is documented in README.md and DESIGN.md.
"""

from __future__ import annotations

import copy
import math
import os
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pdasgd.io import atomic_write_text
from pdasgd.tomlwrite import dumps as toml_dumps

METHODS = ("sequential", "async-lu", "async-bu", "hogwild", "lapsgd", "lppsgd", "ddp")
ASYNC_METHODS = ("async-lu", "async-bu")
REPLICATED_METHODS = ("hogwild", "lapsgd", "lppsgd", "ddp")
NETWORKS = ("mlp", "resnet", "lstm")
DATASETS = ("synthetic", "digits", "mnist")


class ScenarioError(ValueError):
    """A scenario (file, table or override) is invalid; the message names the field."""


@dataclass(frozen=True)
class Layer:
    """One unit of update: its costs in seconds and the memory it holds."""

    name: str
    forward_s: float
    backward_s: float
    update_s: float = 0.0
    activation_bytes: int = 0
    param_bytes: int = 0


@dataclass(frozen=True)
class Model:
    """The layers, input layer (index 0) first; backward visits them last to first."""

    layers: tuple[Layer, ...]

    @property
    def forward_s(self) -> float:
        """Forward time of one batch through all layers."""
        return sum(layer.forward_s for layer in self.layers)

    @property
    def backward_s(self) -> float:
        """Backward time of one batch, without updates."""
        return sum(layer.backward_s for layer in self.layers)

    @property
    def update_s(self) -> float:
        """Time the backward worker spends applying the updates of one batch."""
        return sum(layer.update_s for layer in self.layers)

    @property
    def beta(self) -> float:
        """Backward-to-forward ratio, counting update time as backward work (THEORY.md)."""
        return (self.backward_s + self.update_s) / self.forward_s


@dataclass(frozen=True)
class Workers:
    forward: int = 1
    backward: int = 2
    max_in_flight: int = 8
    replicas: int = 1
    per_replica: int = 2
    average_every: int = 16


@dataclass(frozen=True)
class Straggler:
    """Worker `worker` takes `extra_s` longer on every `every`-th batch it handles."""

    worker: str
    every: int
    extra_s: float


@dataclass(frozen=True)
class Delays:
    handoff_s: float = 0.0
    update_s: float = 0.0
    jitter_cv: float = 0.0
    stragglers: tuple[Straggler, ...] = ()


@dataclass(frozen=True)
class Device:
    name: str
    slots: int = 1
    speed: float = 1.0
    contention: float = 0.0  # while n ops overlap, each runs 1 + contention (n-1)/(slots-1) times slower
    time_slice: bool = False  # ops share the slots as threads share cores (no queue); else FIFO queue


@dataclass(frozen=True)
class Train:
    network: str = "mlp"
    width: int = 1024
    depth: int = 8
    channels: int = 16
    hidden: int = 256
    dataset: str = "synthetic"
    batch_size: int = 128
    lr: float = 0.01
    momentum: float = 0.0
    weight_decay: float = 0.0
    device: str = "auto"
    threads_per_worker: int = 1


@dataclass(frozen=True)
class Run:
    batches: int = 1000
    warmup: int = 10
    seed: int = 0


@dataclass(frozen=True)
class Scenario:
    """A resolved, valid scenario. `model` is None when only `[train]` is given (costs to be profiled)."""

    name: str
    method: str
    model: Model | None
    workers: Workers = Workers()
    delays: Delays = Delays()
    devices: tuple[Device, ...] = ()
    placement: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    train: Train = Train()
    run: Run = Run()
    source: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)

    def worker_names(self) -> list[str]:
        """Names of the workers this method uses, e.g. `forward:0`, `backward:1`, `worker:3`."""
        return worker_names(self.method, self.workers)

    def device_of(self) -> dict[str, str]:
        """Worker name -> device name (every worker has a device of its own unless placed)."""
        return _resolve_placement(self.method, self.workers, self.devices, self.placement)

    def device_table(self) -> dict[str, Device]:
        """Device name -> Device, including the implicit one-per-worker devices."""
        table = {device.name: device for device in self.devices}
        for device_name in self.device_of().values():
            table.setdefault(device_name, Device(device_name))
        return table

    def to_dict(self) -> dict[str, Any]:
        """The resolved scenario as plain TOML-ready data (explicit layers, defaults filled in)."""
        return _scenario_to_dict(self)

    def to_toml(self) -> str:
        return toml_dumps(self.to_dict())

    def with_overrides(self, overrides: Mapping[str, Any]) -> Scenario:
        """A new scenario with dotted keys (`workers.backward`, `model.beta`) set in its source."""
        data = copy.deepcopy(dict(self.source) or self.to_dict())
        for dotted, value in overrides.items():
            _set_dotted(data, dotted, value)
        return parse_scenario(data)


def worker_names(method: str, workers: Workers) -> list[str]:
    """Worker names for `method`; the same names appear in traces and straggler specs."""
    if method == "sequential":
        return ["worker:0"]
    if method in ASYNC_METHODS:
        forward = [f"forward:{i}" for i in range(workers.forward)]
        return forward + [f"backward:{i}" for i in range(workers.backward)]
    if method == "ddp":
        return [f"worker:{i}" for i in range(workers.replicas)]
    return [f"worker:{i}" for i in range(workers.replicas * workers.per_replica)]


# --- loading ------------------------------------------------------------------------------------


def load_scenario(path: str | os.PathLike) -> Scenario:
    """Read and validate a scenario file; relative dataset paths resolve against its folder."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ScenarioError(f"{path}: file not found") from None
    except OSError as error:
        raise ScenarioError(f"{path}: cannot read ({error.strerror})") from None
    return scenario_from_toml(text, base_dir=path.parent, origin=str(path))


def scenario_from_toml(text: str, base_dir: str | os.PathLike = ".", origin: str = "<toml>") -> Scenario:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise ScenarioError(f"{origin}: invalid TOML: {error}") from None
    return parse_scenario(data, base_dir=base_dir)


def save_scenario(scenario: Scenario, path: str | os.PathLike) -> Path:
    """Write the resolved scenario as TOML, atomically."""
    return atomic_write_text(path, scenario.to_toml())


def parse_scenario(data: Mapping[str, Any], base_dir: str | os.PathLike = ".") -> Scenario:
    """Validate a TOML-shaped mapping and resolve it into a Scenario."""
    if not isinstance(data, Mapping):
        raise ScenarioError(f"scenario: must be a table, got {type(data).__name__}")
    top = dict(data)
    _check_keys(top, TOP_KEYS, "")
    name = _field(top, "name", "str", "scenario", None, "")
    method = _field(top, "method", "str", "async-lu", _choice(METHODS), "")
    workers = Workers(**_section(top, "workers", WORKER_FIELDS))
    delays = _parse_delays(_table(top, "delays"))
    devices = _parse_devices(top.get("device", []))
    placement = _parse_placement(_table(top, "placement"), devices, method, workers)
    model = _parse_model(_table(top, "model"))
    train = Train(**_section(top, "train", TRAIN_FIELDS))
    train = _resolve_dataset(train, Path(base_dir))
    run = Run(**_section(top, "run", RUN_FIELDS))
    _check_run(run)
    _check_stragglers(delays, method, workers)
    return Scenario(name, method, model, workers, delays, devices, placement, train, run, source=top)


# --- field checks -------------------------------------------------------------------------------

Check = Callable[[Any], str | None]


def _at_least(low: float) -> Check:
    return lambda value: None if value >= low else f"must be >= {low}, got {value}"


def _choice(options: tuple[str, ...]) -> Check:
    return lambda value: None if value in options else f"must be one of {', '.join(options)}; got {value!r}"


_NONNEG = _at_least(0)
_POSITIVE_INT = _at_least(1)


def _positive(value: float) -> str | None:
    return None if value > 0 else f"must be > 0, got {value}"


TOP_KEYS = ("name", "method", "model", "workers", "delays", "device", "placement", "train", "run")
WORKER_FIELDS = {key: ("int", getattr(Workers(), key), _POSITIVE_INT) for key in asdict(Workers())}
RUN_FIELDS = {
    "batches": ("int", Run.batches, _POSITIVE_INT),
    "warmup": ("int", Run.warmup, _NONNEG),
    "seed": ("int", Run.seed, _NONNEG),
}
LAYER_FIELDS = {
    "name": ("str", None, None),
    "forward_s": ("float", None, _NONNEG),
    "backward_s": ("float", None, _NONNEG),
    "update_s": ("float", 0.0, _NONNEG),
    "activation_bytes": ("int", 0, _NONNEG),
    "param_bytes": ("int", 0, _NONNEG),
}
UNIFORM_FIELDS = {
    "layers": ("int", None, _POSITIVE_INT),
    "forward_s": ("float", None, _positive),
    "beta": ("float", None, _NONNEG),
    "update_s": ("float", 0.0, _NONNEG),
    "activation_bytes": ("int", 0, _NONNEG),
    "param_bytes": ("int", 0, _NONNEG),
}
DELAY_FIELDS = {
    "handoff_s": ("float", 0.0, _NONNEG),
    "update_s": ("float", 0.0, _NONNEG),
    "jitter_cv": ("float", 0.0, _NONNEG),
}
STRAGGLER_FIELDS = {
    "worker": ("str", None, None),
    "every": ("int", None, _POSITIVE_INT),
    "extra_s": ("float", None, _NONNEG),
}
DEVICE_FIELDS = {
    "name": ("str", None, None),
    "slots": ("int", 1, _POSITIVE_INT),
    "speed": ("float", 1.0, _positive),
    "contention": ("float", 0.0, _NONNEG),
    "time_slice": ("bool", False, None),
}


def _network_check(value: str) -> str | None:
    if value in NETWORKS or ":" in value:
        return None
    return f"must be one of {', '.join(NETWORKS)} or 'package.module:function'; got {value!r}"


def _dataset_check(value: str) -> str | None:
    if value in DATASETS or value.endswith(".npz"):
        return None
    return f"must be one of {', '.join(DATASETS)} or a path to an .npz file; got {value!r}"


def _device_check(value: str) -> str | None:
    if value in ("auto", "cpu", "cuda") or (value.startswith("cuda:") and value[5:].isdigit()):
        return None
    return f"must be auto, cpu, cuda or cuda:N; got {value!r}"


TRAIN_FIELDS = {
    "network": ("str", Train.network, _network_check),
    "width": ("int", Train.width, _POSITIVE_INT),
    "depth": ("int", Train.depth, _POSITIVE_INT),
    "channels": ("int", Train.channels, _POSITIVE_INT),
    "hidden": ("int", Train.hidden, _POSITIVE_INT),
    "dataset": ("str", Train.dataset, _dataset_check),
    "batch_size": ("int", Train.batch_size, _POSITIVE_INT),
    "lr": ("float", Train.lr, _NONNEG),
    "momentum": ("float", Train.momentum, _NONNEG),
    "weight_decay": ("float", Train.weight_decay, _NONNEG),
    "device": ("str", Train.device, _device_check),
    "threads_per_worker": ("int", Train.threads_per_worker, _POSITIVE_INT),
}


def _where(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _field(table: dict, key: str, kind: str, default: Any, check: Check | None, path: str) -> Any:
    """Take `key` from `table`, check its type and value; `default=None` makes it required."""
    where = _where(path, key)
    if key not in table:
        if default is None:
            raise ScenarioError(f"{where}: missing (required)")
        return default
    value = _typed(table[key], kind, where)
    problem = check(value) if check else None
    if problem:
        raise ScenarioError(f"{where}: {problem}")
    return value


def _typed(value: Any, kind: str, where: str) -> Any:
    if kind == "int" and isinstance(value, int) and not isinstance(value, bool):
        return value
    if kind == "float" and isinstance(value, int | float) and not isinstance(value, bool):
        if not math.isfinite(value):
            raise ScenarioError(f"{where}: must be a finite number, got {value}")
        return float(value)
    if kind == "bool" and isinstance(value, bool):
        return value
    if kind == "str" and isinstance(value, str):
        return value
    names = {"int": "an integer", "float": "a number", "str": "a string", "bool": "true or false"}
    raise ScenarioError(f"{where}: must be {names[kind]}, got {type(value).__name__} {value!r}")


def _check_keys(table: Mapping, known: tuple[str, ...] | Mapping, path: str) -> None:
    for key in table:
        if key not in known:
            raise ScenarioError(f"{_where(path, key)}: unknown key (known: {', '.join(known)})")


def _table(top: dict, key: str) -> dict | None:
    if key not in top:
        return None
    value = top[key]
    if not isinstance(value, Mapping):
        raise ScenarioError(f"{key}: must be a table, got {type(value).__name__}")
    return dict(value)


def _fields(table: Mapping, spec: Mapping, path: str) -> dict[str, Any]:
    _check_keys(table, spec, path)
    return {key: _field(dict(table), key, *spec[key], path) for key in spec}


def _section(top: dict, key: str, spec: Mapping) -> dict[str, Any]:
    return _fields(_table(top, key) or {}, spec, key)


def _table_list(value: Any, path: str) -> list[dict]:
    if not isinstance(value, list) or not all(isinstance(item, Mapping) for item in value):
        raise ScenarioError(f"{path}: must be an array of tables ([[{path}]])")
    return [dict(item) for item in value]


# --- sections -----------------------------------------------------------------------------------


def _parse_model(table: dict | None) -> Model | None:
    if not table:
        return None
    if "layer" in table:
        extra = [key for key in table if key != "layer"]
        if extra:
            raise ScenarioError(f"model.{extra[0]}: cannot be combined with [[model.layer]]")
        rows = _table_list(table["layer"], "model.layer")
        if not rows:
            raise ScenarioError("model.layer: must list at least one layer")
        layers = [Layer(**_fields(row, LAYER_FIELDS, f"model.layer[{i}]")) for i, row in enumerate(rows)]
        _check_unique([layer.name for layer in layers], "model.layer", "name")
    else:
        layers = _uniform_layers(_fields(table, UNIFORM_FIELDS, "model"))
    model = Model(tuple(layers))
    if model.forward_s <= 0:
        raise ScenarioError("model.layer: total forward_s must be > 0")
    return model


def _uniform_layers(spec: dict[str, Any]) -> list[Layer]:
    count = spec["layers"]
    forward_s = spec["forward_s"] / count
    backward_s = spec["beta"] * spec["forward_s"] / count
    extras = {key: spec[key] for key in ("update_s", "activation_bytes", "param_bytes")}
    return [Layer(f"layer{i}", forward_s, backward_s, **extras) for i in range(count)]


def _check_unique(names: list[str], path: str, key: str) -> None:
    seen: set[str] = set()
    for i, name in enumerate(names):
        if name in seen:
            raise ScenarioError(f"{path}[{i}].{key}: duplicate {key} {name!r}")
        seen.add(name)


def _parse_delays(table: dict | None) -> Delays:
    table = dict(table or {})
    rows = _table_list(table.pop("straggler", []), "delays.straggler")
    stragglers = tuple(
        Straggler(**_fields(row, STRAGGLER_FIELDS, f"delays.straggler[{i}]")) for i, row in enumerate(rows)
    )
    return Delays(**_fields(table, DELAY_FIELDS, "delays"), stragglers=stragglers)


def _parse_devices(value: Any) -> tuple[Device, ...]:
    rows = _table_list(value, "device")
    devices = tuple(Device(**_fields(row, DEVICE_FIELDS, f"device[{i}]")) for i, row in enumerate(rows))
    _check_unique([device.name for device in devices], "device", "name")
    return devices


def _roles(method: str, workers: Workers) -> dict[str, list[str]]:
    """Placement keys and the workers each one places, in order."""
    names = worker_names(method, workers)
    if method in ASYNC_METHODS:
        return {
            "forward": [name for name in names if name.startswith("forward:")],
            "backward": [name for name in names if name.startswith("backward:")],
        }
    return {"workers": names}


def _parse_placement(
    table: dict | None, devices: tuple[Device, ...], method: str, workers: Workers
) -> dict[str, tuple[str, ...]]:
    table = table or {}
    roles = _roles(method, workers)
    _check_keys(table, ("forward", "backward", "workers"), "placement")
    known = {device.name for device in devices}
    placement: dict[str, tuple[str, ...]] = {}
    for role, value in table.items():
        where = f"placement.{role}"
        if role not in roles:
            raise ScenarioError(f"{where}: method {method} has no {role} workers (use {', '.join(roles)})")
        if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
            raise ScenarioError(f"{where}: must be a list of device names")
        if len(value) != len(roles[role]):
            raise ScenarioError(
                f"{where}: must name {len(roles[role])} devices (one per worker), got {len(value)}"
            )
        for name in value:
            if name not in known:
                raise ScenarioError(f"{where}: names device {name!r}, which no [[device]] defines")
        placement[role] = tuple(value)
    return placement


def _resolve_placement(
    method: str, workers: Workers, devices: tuple[Device, ...], placement: Mapping[str, tuple[str, ...]]
) -> dict[str, str]:
    """Placed workers go where placed; others round-robin over [[device]]s, or get a device of their own."""
    resolved: dict[str, str] = {}
    unplaced: list[str] = []
    for role, names in _roles(method, workers).items():
        if role in placement:
            resolved.update(zip(names, placement[role], strict=True))
        else:
            unplaced.extend(names)
    for i, name in enumerate(unplaced):
        resolved[name] = devices[i % len(devices)].name if devices else name
    return {name: resolved[name] for name in worker_names(method, workers)}


def _resolve_dataset(train: Train, base_dir: Path) -> Train:
    if not train.dataset.endswith(".npz"):
        return train
    path = Path(train.dataset)
    path = path if path.is_absolute() else base_dir / path
    if not path.is_file():
        raise ScenarioError(f"train.dataset: file not found: {path}")
    return Train(**{**asdict(train), "dataset": str(path)})


def _check_run(run: Run) -> None:
    if run.warmup >= run.batches:
        raise ScenarioError(f"run.warmup: must be < run.batches ({run.batches}), got {run.warmup}")


def _check_stragglers(delays: Delays, method: str, workers: Workers) -> None:
    names = worker_names(method, workers)
    for i, straggler in enumerate(delays.stragglers):
        if straggler.worker not in names:
            known = ", ".join(names)
            raise ScenarioError(
                f"delays.straggler[{i}].worker: no worker {straggler.worker!r} in {method} (workers: {known})"
            )


# --- saving and overrides -----------------------------------------------------------------------


def _scenario_to_dict(scenario: Scenario) -> dict[str, Any]:
    data: dict[str, Any] = {"name": scenario.name, "method": scenario.method}
    if scenario.model is not None:
        data["model"] = {"layer": [asdict(layer) for layer in scenario.model.layers]}
    data["workers"] = asdict(scenario.workers)
    delays = asdict(scenario.delays)
    stragglers = delays.pop("stragglers")
    data["delays"] = {**delays, **({"straggler": stragglers} if stragglers else {})}
    if scenario.devices:
        data["device"] = [asdict(device) for device in scenario.devices]
        data["placement"] = {role: list(names) for role, names in scenario.placement.items()}
    data["train"] = asdict(scenario.train)
    data["run"] = asdict(scenario.run)
    return data


def _set_dotted(data: dict[str, Any], dotted: str, value: Any) -> None:
    """Set `a.b.c` in nested tables; a uniform-model key replaces explicit layers and vice versa."""
    *parents, leaf = dotted.split(".")
    table = data
    for key in parents:
        table = table.setdefault(key, {})
        if not isinstance(table, dict):
            raise ScenarioError(f"{dotted}: {key} is not a table")
    if parents == ["model"] and leaf in UNIFORM_FIELDS and "layer" in table:
        raise ScenarioError(
            f"{dotted}: this scenario lists explicit [[model.layer]]s; cannot set a uniform key"
        )
    table[leaf] = value
