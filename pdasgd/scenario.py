"""The scenario: one TOML file that both engines read.

A scenario says what to schedule (method, layer costs, workers, devices, delays), what to train for real
(`[train]`, ignored by the simulator) and for how long (`[run]`). This module loads, validates, resolves and
saves it. Resolving fills every default and turns the uniform model (`layers`, `forward_s`, `beta`) into
explicit layers, so engines only ever see `Scenario.model.layers`.

Every key's default and check live once, on the dataclasses below (`setting`); the parser reads them from
there. Every bad input raises `ScenarioError` with one line that names the field and the problem, e.g.
`workers.backward: must be >= 1, got 0`. A key that was renamed names its replacement. The format is
documented in README.md and docs/design.md; the method names come from `pdasgd.methods`.
"""

from __future__ import annotations

import copy
import math
import os
import tomllib
import typing
from collections.abc import Callable, Mapping
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from pdasgd import methods
from pdasgd.io import atomic_write_text
from pdasgd.tomlwrite import dumps as toml_dumps

NETWORKS = ("mlp", "resnet", "lstm", "timed")
DATASETS = ("synthetic", "digits", "mnist")
STRAGGLER_KINDS = ("sleep", "busy")
AVERAGING = ("background", "blocking")
BACKENDS = ("auto", "gloo", "nccl")
GOSSIP_MODES = ("exchange", "push", "none")  # pdasgd.gossip
RENAMED = {
    "delays.update_s": "delays.visibility_s (the delay before an update becomes visible to readers; "
    "a layer's update cost is model.update_s)",
}


class ScenarioError(ValueError):
    """A scenario (file, table or override) is invalid; the message names the field."""


Check = Callable[[Any], str | None]


def setting(default: Any = MISSING, check: Check | None = None) -> Any:
    """A scenario key: its default (none: required) and the check its value must pass."""
    return field(default=default, metadata={"check": check})


def _at_least(low: float) -> Check:
    return lambda value: None if value >= low else f"must be >= {low}, got {value}"


def _between(low: float, high: float) -> Check:
    """low <= value <= high: every number has an upper bound the machine can honour."""

    def check(value: float) -> str | None:
        if value < low:
            return f"must be >= {low}, got {value}"
        if value > high:
            return f"must be <= {high:g}, got {value:g}"
        return None

    return check


def _positive_at_most(high: float) -> Check:
    return lambda value: (
        f"must be > 0, got {value}"
        if not value > 0
        else f"must be <= {high:g}, got {value:g}"
        if value > high
        else None
    )


def _speed(value: float) -> str | None:
    if not value > 0:
        return f"must be > 0, got {value}"
    return _between(1e-6, 1e6)(value)


def _text(most: int) -> Check:
    return lambda value: f"must be at most {most} characters, got {len(value)}" if len(value) > most else None


def _choice(options: tuple[str, ...]) -> Check:
    return lambda value: None if value in options else f"must be one of {', '.join(options)}; got {value!r}"


def _below_one(value: float) -> str | None:
    return None if 0 <= value < 1 else f"must be >= 0 and < 1, got {value}"


# Upper bounds: what the engines can hold in memory and what floats, timestamps and C ints can carry.
MAX_SECONDS = 1e6  # any duration: ~11 days, far below where perf_counter() + delay or sums lose precision
MAX_BYTES = 2**40  # a layer's activations or parameters (1 TiB): sums over batches in flight stay in int64
MAX_LAYERS = 10_000
MAX_BATCHES = 10_000_000  # the fixed-time recursion keeps three floats per batch in lists (about 1 GB)
MAX_STEPS = 10**9  # batches x layers the fast summary walks in chunks (about a minute)
MAX_WORKERS = 10_000
MAX_NAME = 200
MIN_FORWARD_S = 1e-9  # a batch's forward: rates stay finite and instants stay apart from the tie rule's 1e-9
_DURATION = _between(0, MAX_SECONDS)
_SIZE = _between(0, MAX_BYTES)
_NAME = _text(MAX_NAME)


def _count(high: int) -> Check:
    return _between(1, high)


def _network_check(value: str) -> str | None:
    if len(value) > 500:
        return f"must be at most 500 characters, got {len(value)}"
    if value in NETWORKS or (":" in value and value.isprintable()):
        return None
    return f"must be one of {', '.join(NETWORKS)} or 'package.module:function'; got {value!r}"


def _dataset_check(value: str) -> str | None:
    if "\0" in value or len(value) > 4096:
        return "must be a path of at most 4096 characters without NUL"
    if value in DATASETS or value.endswith(".npz"):
        return None
    return f"must be one of {', '.join(DATASETS)} or a path to an .npz file; got {value!r}"


def _device_check(value: str) -> str | None:
    index = value[5:]
    if value in ("auto", "cpu", "cuda") or (
        value.startswith("cuda:") and index.isascii() and index.isdigit() and int(index) < 1024
    ):
        return None
    return f"must be auto, cpu, cuda or cuda:N; got {value!r}"


@dataclass(frozen=True)
class Header:
    """The scenario's top-level keys."""

    name: str = setting("scenario", _NAME)  # names the default output folders of compare and sweep
    method: str = setting("async-lu", _NAME)  # a method of pdasgd.methods (`pdasgd methods` lists them)


@dataclass(frozen=True)
class Layer:
    """One unit of update: its costs in seconds and the memory it holds."""

    name: str = setting(check=_NAME)
    forward_s: float = setting(check=_DURATION)
    backward_s: float = setting(check=_DURATION)
    update_s: float = setting(0.0, _DURATION)  # the cost of applying this layer's update (backward worker)
    activation_bytes: int = setting(0, _SIZE)
    param_bytes: int = setting(0, _SIZE)


@dataclass(frozen=True)
class UniformModel:
    """`[model]` without explicit layers: `layers` equal layers sharing a batch's forward time."""

    layers: int = setting(check=_count(MAX_LAYERS))
    forward_s: float = setting(check=_positive_at_most(MAX_SECONDS))
    beta: float = setting(check=_between(0, MAX_SECONDS))
    update_s: float = setting(0.0, _DURATION)
    activation_bytes: int = setting(0, _SIZE)
    param_bytes: int = setting(0, _SIZE)


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
    def sequential_s(self) -> float:
        """One batch of plain sequential backprop on a device of speed 1: every layer's forward, backward and
        update (the reference of speed-ups and of the tie rule, theory.ties)."""
        return sum(layer.forward_s + layer.backward_s + layer.update_s for layer in self.layers)

    @property
    def beta(self) -> float:
        """Backward-to-forward ratio, counting update time as backward work (docs/theory.md)."""
        return (self.backward_s + self.update_s) / self.forward_s


@dataclass(frozen=True)
class Workers:
    forward: int = setting(1, _count(256))
    backward: int = setting(2, _count(256))
    max_in_flight: int = setting(8, _count(MAX_BATCHES))
    replicas: int = setting(1, _count(4096))
    per_replica: int = setting(2, _count(256))
    average_every: int = setting(16, _count(10**9))
    # lapsgd/lppsgd: the rank's workers go on while its communicator averages (background), or wait for it
    averaging: str = setting("background", _choice(AVERAGING))


@dataclass(frozen=True)
class Straggler:
    """Worker `worker` takes `extra_s` longer on every `every`-th batch it handles: `sleep` waits before the
    batch (the device is free meanwhile), `busy` computes that much longer in its first op (holding it)."""

    worker: str = setting(check=_NAME)
    every: int = setting(check=_count(10**9))
    extra_s: float = setting(check=_DURATION)
    kind: str = setting("sleep", _choice(STRAGGLER_KINDS))


@dataclass(frozen=True)
class CommDelay:
    """Rank `rank` waits `extra_s` before each of its communication ops (a DDP bucket's all-reduce, an
    averaging round's all-reduce), as a slow or distant node would; its compute goes on meanwhile."""

    rank: int = setting(check=_between(0, 4095))
    extra_s: float = setting(check=_DURATION)


@dataclass(frozen=True)
class Delays:
    handoff_s: float = setting(0.0, _DURATION)  # forward end -> backward start
    visibility_s: float = setting(0.0, _DURATION)  # an update published at t is visible at t + this
    allreduce_s: float = setting(0.0, _DURATION)  # latency of one all-reduce among 2+ replicas
    allreduce_bytes_per_s: float = setting(0.0, _between(0, 1e15))  # its bandwidth; 0: no bytes term
    jitter_cv: float = setting(0.0, _between(0, 10))  # simulator: lognormal noise on every op time
    stragglers: tuple[Straggler, ...] = ()
    comm: tuple[CommDelay, ...] = ()

    def allreduce_cost_s(self, nbytes: int) -> float:
        """One all-reduce of `nbytes` on the modelled network: latency + bytes / bandwidth."""
        per_byte_s = 1.0 / self.allreduce_bytes_per_s if self.allreduce_bytes_per_s else 0.0
        return self.allreduce_s + nbytes * per_byte_s

    def comm_delay_s(self, rank: int) -> float:
        """The wait before each communication op of `rank`."""
        return sum(delay.extra_s for delay in self.comm if delay.rank == rank)


@dataclass(frozen=True)
class Distributed:
    """How ranks talk (methods across ranks): torch.distributed's backend (auto: nccl on CUDA, gloo on the
    CPU), the timeout of every collective (a rank that froze ends the run after it), DDP's bucket cap, and
    layer-wise gossip's settings (gossip-lu, gossip-bu; pdasgd.gossip): how ranks gossip (`gossip_mode`:
    pairwise exchange in rounds, one-way push to a random peer (gloo only), or none until the final
    average), at most `gossip_layers` layers per round or push (0: every marked one), the least time from
    one round's (push's) start to the next (`gossip_every_s`, 0: as fast as they go), the mixing weight,
    and how often the consensus distance is sampled (0: never)."""

    backend: str = setting("auto", _choice(BACKENDS))
    timeout_s: float = setting(60.0, _between(1, 86_400))
    bucket_mb: float = setting(25.0, _between(0.001, 4096))
    gossip_mode: str = setting("exchange", _choice(GOSSIP_MODES))
    gossip_layers: int = setting(0, _between(0, MAX_LAYERS))
    gossip_every_s: float = setting(0.0, _between(0, MAX_SECONDS))
    gossip_mix: float = setting(0.5, _positive_at_most(1.0))
    consensus_every_s: float = setting(0.5, _between(0, MAX_SECONDS))

    @property
    def bucket_bytes(self) -> int:
        return int(self.bucket_mb * 2**20)


@dataclass(frozen=True)
class Device:
    name: str = setting(check=_NAME)
    slots: int = setting(1, _count(4096))
    speed: float = setting(1.0, _speed)
    contention: float = setting(
        0.0, _between(0, 100)
    )  # while n ops overlap, each runs 1 + c (n-1)/(slots-1) slower
    time_slice: bool = setting(False)  # ops share the slots as threads share cores (no queue); else FIFO


@dataclass(frozen=True)
class Train:
    network: str = setting("mlp", _network_check)
    width: int = setting(1024, _count(65_536))
    depth: int = setting(8, _count(MAX_LAYERS))
    channels: int = setting(16, _count(4096))
    hidden: int = setting(256, _count(65_536))
    dataset: str = setting("synthetic", _dataset_check)
    batch_size: int = setting(128, _count(65_536))
    lr: float = setting(0.01, _between(0, 1e6))
    momentum: float = setting(0.0, _below_one)
    weight_decay: float = setting(0.0, _between(0, 1e6))
    device: str = setting("auto", _device_check)
    threads_per_worker: int = setting(1, _count(256))


@dataclass(frozen=True)
class Run:
    batches: int = setting(1000, _count(MAX_BATCHES))
    warmup: int = setting(10, _between(0, MAX_BATCHES))
    seed: int = setting(0, _between(0, 2**32 - 1))
    op_timeout_s: float = setting(300.0, _positive_at_most(MAX_SECONDS))  # executor: the watchdog


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
    distributed: Distributed = Distributed()
    source: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def definition(self) -> methods.Method:
        """The method's definition (pdasgd.methods)."""
        return methods.lookup(self.method)

    def worker_names(self) -> list[str]:
        """Names of the workers this method uses, e.g. `forward:0`, `backward:1`, `worker:3`."""
        return self.definition.worker_names(self.workers)

    def device_of(self) -> dict[str, str]:
        """Worker name -> device name (every worker has a device of its own unless placed)."""
        return _resolve_placement(self.definition, self.workers, self.devices, self.placement)

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
        """A new scenario with dotted keys (`workers.backward`, `model.beta`) set in its source: the TOML
        it was read from (so uniform-model keys stay uniform), or its resolved form if it has been changed
        since (`dataclasses.replace`) and the source no longer describes it."""
        data = copy.deepcopy(dict(self.source)) if self.source else {}
        if not data or parse_scenario(data) != self:
            data = self.to_dict()
        for dotted, value in overrides.items():
            _set_dotted(data, dotted, value)
        return parse_scenario(data)


# --- loading ------------------------------------------------------------------------------------


MAX_FILE_BYTES = 10 * 2**20


def load_scenario(path: str | os.PathLike) -> Scenario:
    """Read and validate a scenario file; relative dataset paths resolve against its folder."""
    path = Path(path)
    try:
        if path.is_dir():
            raise ScenarioError(f"{path}: is a folder, not a scenario file")
        if path.stat().st_size > MAX_FILE_BYTES:
            raise ScenarioError(f"{path}: larger than {MAX_FILE_BYTES // 2**20} MiB; not a scenario file")
        data = path.read_bytes()
    except FileNotFoundError:
        raise ScenarioError(f"{path}: file not found") from None
    except OSError as error:
        raise ScenarioError(f"{path}: cannot read ({error.strerror or error})") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        line = data[: error.start].count(b"\n") + 1
        raise ScenarioError(
            f"{path}: not UTF-8 text: byte 0x{data[error.start]:02x} at offset {error.start} (line {line})"
        ) from None
    return scenario_from_toml(text, base_dir=path.parent, origin=str(path))


def scenario_from_toml(text: str, base_dir: str | os.PathLike = ".", origin: str = "<toml>") -> Scenario:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise ScenarioError(f"{origin}: invalid TOML: {error}") from None
    except RecursionError:
        raise ScenarioError(f"{origin}: invalid TOML: nested too deeply") from None
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
    header = _parse(Header, {key: top[key] for key in _spec(Header) if key in top}, "")
    name, method = header.name, _method(header.method)
    definition = methods.lookup(method)
    workers = _parse(Workers, _table(top, "workers") or {}, "workers")
    delays = _parse_delays(_table(top, "delays"))
    devices = _parse_devices(top.get("device", []))
    placement = _parse_placement(_table(top, "placement"), devices, definition, workers)
    model = _parse_model(_table(top, "model"))
    train = _parse(Train, _table(top, "train") or {}, "train")
    train = _resolve_dataset(train, Path(base_dir))
    run = _parse(Run, _table(top, "run") or {}, "run")
    distributed = _parse(Distributed, _table(top, "distributed") or {}, "distributed")
    _check_run(run)
    _check_stragglers(delays, definition, workers)
    _check_ranks(definition, workers, delays, run)
    _check_gossip(distributed)
    _check_sizes(definition, model, workers, run)
    _check_steps(definition, model, workers)
    if train.network == "timed" and model is None:
        raise ScenarioError("train.network: timed sleeps the [model] costs, so it needs [model]")
    if train.network == "timed" and train.dataset != "synthetic":
        raise ScenarioError("train.dataset: the timed network trains on synthetic data only")
    return Scenario(
        name, method, model, workers, delays, devices, placement, train, run, distributed, source=top
    )


def _method(method: str) -> str:
    try:
        methods.lookup(method)
    except methods.MethodError as error:
        raise ScenarioError(f"method: {error}") from None
    return method


def _check_sizes(definition: methods.Method, model: Model | None, workers: Workers, run: Run) -> None:
    """Bounds on products of fields: what the engines can hold and count."""
    count = len(definition.worker_names(workers))
    if count > MAX_WORKERS:
        raise ScenarioError(f"workers: {definition.name} would have {count} workers; at most {MAX_WORKERS}")
    if model is None:
        return
    layers = len(model.layers)
    if run.batches * layers > MAX_STEPS:
        raise ScenarioError(
            f"run.batches: {run.batches} batches x {layers} layers is more than {MAX_STEPS:.0e} steps to "
            "simulate"
        )
    per_batch = sum(layer.activation_bytes + layer.param_bytes for layer in model.layers)
    if per_batch * (workers.max_in_flight + count + 1) * workers.replicas >= 2**62:
        raise ScenarioError("model: layer bytes times the batches and copies alive overflow a 64-bit count")


def _check_steps(definition: methods.Method, model: Model | None, workers: Workers) -> None:
    if model is None:
        return
    try:
        definition.check(len(model.layers), workers)
    except methods.MethodError as error:
        raise ScenarioError(f"method: {error}") from None


# --- field checks -------------------------------------------------------------------------------

TOP_KEYS = (
    "name",
    "method",
    "model",
    "workers",
    "delays",
    "device",
    "placement",
    "train",
    "run",
    "distributed",
)
KINDS = {"int": "an integer", "float": "a number", "str": "a string", "bool": "true or false"}


def _spec(cls: type) -> dict[str, tuple[str, Any, Check | None]]:
    """key -> (kind, default or None when required, check), read off a dataclass of `setting`s."""
    hints = typing.get_type_hints(cls)
    spec = {}
    for item in fields(cls):
        kind = getattr(hints[item.name], "__name__", "")
        if kind not in KINDS:
            continue  # nested tables (stragglers) are parsed on their own
        default = None if item.default is MISSING else item.default
        spec[item.name] = (kind, default, item.metadata.get("check"))
    return spec


def _parse(cls: type, table: Mapping, path: str) -> Any:
    """An instance of the dataclass `cls` from a TOML table, every key checked, defaults filled in."""
    return cls(**_fields(table, _spec(cls), path))


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
    raise ScenarioError(f"{where}: must be {KINDS[kind]}, got {type(value).__name__} {value!r}")


def _check_keys(table: Mapping, known: tuple[str, ...] | Mapping, path: str) -> None:
    for key in table:
        where = _where(path, key)
        if where in RENAMED:
            raise ScenarioError(f"{where}: renamed to {RENAMED[where]}")
        if key not in known:
            raise ScenarioError(f"{where}: unknown key (known: {', '.join(known)})")


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
        layers = [_parse(Layer, row, f"model.layer[{i}]") for i, row in enumerate(rows)]
        _check_unique([layer.name for layer in layers], "model.layer", "name")
    else:
        layers = _uniform_layers(_parse(UniformModel, table, "model"))
    model = Model(tuple(layers))
    if not model.forward_s >= MIN_FORWARD_S:
        raise ScenarioError(
            f"model: a batch's forward takes {model.forward_s:g} s; at least {MIN_FORWARD_S:g}"
        )
    return model


def _uniform_layers(spec: UniformModel) -> list[Layer]:
    count = spec.layers
    forward_s = spec.forward_s / count
    backward_s = spec.beta * spec.forward_s / count
    if backward_s > MAX_SECONDS:
        raise ScenarioError(
            f"model.beta: a layer's backward (beta x forward_s / layers = {backward_s:g} s) must be <= "
            f"{MAX_SECONDS:g}"
        )
    extras = {"update_s": spec.update_s, "activation_bytes": spec.activation_bytes}
    return [
        Layer(f"layer{i}", forward_s, backward_s, param_bytes=spec.param_bytes, **extras)
        for i in range(count)
    ]


def _check_unique(names: list[str], path: str, key: str) -> None:
    seen: set[str] = set()
    for i, name in enumerate(names):
        if name in seen:
            raise ScenarioError(f"{path}[{i}].{key}: duplicate {key} {name!r}")
        seen.add(name)


def _parse_delays(table: dict | None) -> Delays:
    table = dict(table or {})
    rows = _table_list(table.pop("straggler", []), "delays.straggler")
    stragglers = tuple(_parse(Straggler, row, f"delays.straggler[{i}]") for i, row in enumerate(rows))
    rows = _table_list(table.pop("comm", []), "delays.comm")
    comm = tuple(_parse(CommDelay, row, f"delays.comm[{i}]") for i, row in enumerate(rows))
    return Delays(**_fields(table, _spec(Delays), "delays"), stragglers=stragglers, comm=comm)


def _parse_devices(value: Any) -> tuple[Device, ...]:
    rows = _table_list(value, "device")
    devices = tuple(_parse(Device, row, f"device[{i}]") for i, row in enumerate(rows))
    _check_unique([device.name for device in devices], "device", "name")
    return devices


def _parse_placement(
    table: dict | None, devices: tuple[Device, ...], definition: methods.Method, workers: Workers
) -> dict[str, tuple[str, ...]]:
    table = table or {}
    groups = definition.placement_groups(workers)
    _check_keys(table, ("forward", "backward", "workers"), "placement")
    known = {device.name for device in devices}
    placement: dict[str, tuple[str, ...]] = {}
    for key, value in table.items():
        where = f"placement.{key}"
        if key not in groups:
            raise ScenarioError(
                f"{where}: method {definition.name} has no {key} workers (use {', '.join(groups)})"
            )
        if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
            raise ScenarioError(f"{where}: must be a list of device names")
        if len(value) != len(groups[key]):
            raise ScenarioError(
                f"{where}: must name {len(groups[key])} devices (one per worker), got {len(value)}"
            )
        for name in value:
            if name not in known:
                raise ScenarioError(f"{where}: names device {name!r}, which no [[device]] defines")
        placement[key] = tuple(value)
    return placement


def _resolve_placement(
    definition: methods.Method,
    workers: Workers,
    devices: tuple[Device, ...],
    placement: Mapping[str, tuple[str, ...]],
) -> dict[str, str]:
    """Placed workers go where placed; others round-robin over [[device]]s, or get a device of their own."""
    resolved: dict[str, str] = {}
    unplaced: list[str] = []
    for key, names in definition.placement_groups(workers).items():
        if key in placement:
            resolved.update(zip(names, placement[key], strict=True))
        else:
            unplaced.extend(names)
    for i, name in enumerate(unplaced):
        resolved[name] = devices[i % len(devices)].name if devices else name
    return {name: resolved[name] for name in definition.worker_names(workers)}


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


def _check_stragglers(delays: Delays, definition: methods.Method, workers: Workers) -> None:
    names = definition.worker_names(workers)
    for i, straggler in enumerate(delays.stragglers):
        if straggler.worker not in names:
            known = ", ".join(names)
            raise ScenarioError(
                f"delays.straggler[{i}].worker: no worker {straggler.worker!r} in {definition.name} "
                f"(workers: {known})"
            )


def _check_ranks(definition: methods.Method, workers: Workers, delays: Delays, run: Run) -> None:
    """What a method across ranks needs, and what only such a method has."""
    communicates = definition.ranks and workers.replicas > 1
    for i, delay in enumerate(delays.comm):
        if not communicates:
            raise ScenarioError(
                f"delays.comm[{i}]: method {definition.name} with {workers.replicas} replica(s) has no "
                "communication between ranks (methods across ranks with workers.replicas >= 2 have: ddp, "
                "lapsgd, lppsgd, gossip-lu, gossip-bu)"
            )
        if delay.rank >= workers.replicas:
            raise ScenarioError(
                f"delays.comm[{i}].rank: no rank {delay.rank} (ranks 0..{workers.replicas - 1})"
            )
    if not definition.ranks:
        return
    if run.batches % workers.replicas:
        raise ScenarioError(
            f"run.batches: {definition.name} gives every rank the same number of batches, so it must be a "
            f"multiple of workers.replicas ({workers.replicas}); got {run.batches}"
        )
    if delays.visibility_s > 0:
        raise ScenarioError(
            f"delays.visibility_s: not supported by {definition.name} (across ranks, use [[delays.comm]])"
        )


def _check_gossip(distributed: Distributed) -> None:
    if distributed.gossip_mode == "push" and distributed.backend == "nccl":
        raise ScenarioError(
            "distributed.gossip_mode: push receives from any sender, which nccl cannot; use gloo (or auto on "
            "the CPU) or gossip_mode = 'exchange'"
        )


# --- saving and overrides -----------------------------------------------------------------------


def _scenario_to_dict(scenario: Scenario) -> dict[str, Any]:
    data: dict[str, Any] = {"name": scenario.name, "method": scenario.method}
    if scenario.model is not None:
        data["model"] = {"layer": [asdict(layer) for layer in scenario.model.layers]}
    data["workers"] = asdict(scenario.workers)
    delays = asdict(scenario.delays)
    stragglers, comm = delays.pop("stragglers"), delays.pop("comm")
    data["delays"] = {
        **delays,
        **({"straggler": list(stragglers)} if stragglers else {}),
        **({"comm": list(comm)} if comm else {}),
    }
    if scenario.devices:
        data["device"] = [asdict(device) for device in scenario.devices]
        data["placement"] = {role: list(names) for role, names in scenario.placement.items()}
    data["train"] = asdict(scenario.train)
    data["run"] = asdict(scenario.run)
    data["distributed"] = asdict(scenario.distributed)
    return data


def _set_dotted(data: dict[str, Any], dotted: str, value: Any) -> None:
    """Set `a.b.c` in nested tables; a uniform-model key replaces explicit layers and vice versa."""
    *parents, leaf = dotted.split(".")
    table = data
    for key in parents:
        table = table.setdefault(key, {})
        if not isinstance(table, dict):
            raise ScenarioError(f"{dotted}: {key} is not a table")
    if parents == ["model"] and leaf in _spec(UniformModel) and "layer" in table:
        raise ScenarioError(
            f"{dotted}: this scenario lists explicit [[model.layer]]s; cannot set a uniform key"
        )
    table[leaf] = value
