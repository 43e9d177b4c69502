"""Methods as data: one definition per training method, read by both engines, the profiler and the theory.

A method is a small set of facts, in the spirit of the schedule actions of torch.distributed.pipelining:

- its **roles** (`Role`): kinds of worker, each with a count (a product of `[workers]` keys) and worker names
  `<role>:<index>` (`forward:0`, `backward:1`, `worker:3`);
- how each role gets its batches (`Dispatch`): round-robin over the role's workers (batch i goes to worker
  i mod n), first in first out from the previous role's hand-off (to the earliest free worker), or the next
  number of a shared counter (whoever asks first);
- each role's per-batch **steps**, a list of `Step(op, layer)`: `F3` is layer 3's forward, `B3` its
  backward, `U3` its update (a new version of the layer's parameters), `P3` publishes it (readers see it),
  `AR` an all-reduce with the other workers of the role. An update is published at its own end unless a
  later `P` step of that layer says when;
- which parameter copy each worker reads and updates (`Copies`), whether `max_in_flight` bounds the batches
  between the first role's start and the last role's end (every method with a hand-off), and whether the
  replicas average their parameters every `average_every` local batches;
- whether the replicas are **ranks** (`ranks`: ddp, lapsgd, lppsgd, gossip-lu, gossip-bu): processes of
  torch.distributed, each with its own copy. Batch i belongs to rank i mod replicas, and each rank
  dispatches its batches to its own workers as its roles say (the role counts are per rank). Worker names
  carry the rank: `r1/worker:0`.
  Communication (a DDP bucket's all-reduce, an averaging round) belongs to the rank's communicator, not to
  a step, except the `AR` step of ddp, which stands for DistributedDataParallel's all-reduce in buckets
  (docs/design.md); and whether they **gossip** (`gossip`: each rank's communicator mixes the layers it
  updated with a partner's, `pdasgd.gossip`);
- which engines run it and which closed forms describe it.

`lookup(name)` is the one place an unknown method is rejected; its error lists the methods there are.
`register` adds a method (a test defines a variant this way, and both engines run it unchanged).
`Method.schedule_text` prints the steps, e.g. `F0 F1 F2 | B2 U2 B1 U1 B0 U0` for async-lu on 3 layers.
docs/design.md describes every built-in method.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

FORWARD, BACKWARD, UPDATE, PUBLISH, ALLREDUCE = "forward", "backward", "update", "publish", "allreduce"
STEP_OPS = (FORWARD, BACKWARD, UPDATE, PUBLISH, ALLREDUCE)
LETTERS = {FORWARD: "F", BACKWARD: "B", UPDATE: "U", PUBLISH: "P"}


class MethodError(ValueError):
    """An unknown method, or a definition whose steps break the rules (the message says which)."""


class Dispatch(Enum):
    """How a role's workers get their batches."""

    ROUND_ROBIN = "round-robin"  # batch i goes to worker i mod n of the role
    HANDOFF = "handoff"  # from the previous role, first in first out, to the earliest free worker
    COUNTER = "counter"  # the next number of a counter shared by the role's workers


class Copies(Enum):
    """Which copy of the parameters a worker reads and updates."""

    SHARED = "shared"  # one copy for every worker
    REPLICA = "replica"  # one per replica: worker w uses copy w // workers.per_replica
    WORKER = "worker"  # one per worker
    RANK = "rank"  # one per rank: every worker of rank r uses copy r


@dataclass(frozen=True)
class Step:
    """One action of a worker on one batch: an op on a layer (none for an all-reduce)."""

    op: str
    layer: int | None = None

    def __str__(self) -> str:
        return "AR" if self.op == ALLREDUCE else f"{LETTERS[self.op]}{self.layer}"


StepsOf = Callable[[int, int, Any], tuple[Step, ...]]  # (layers, worker index in its role, Workers) -> steps


@dataclass(frozen=True)
class Role:
    """A kind of worker. `count` names the `[workers]` keys whose product is how many there are."""

    name: str
    placement: str  # the [placement] key that places these workers
    count: tuple[str, ...]
    dispatch: Dispatch
    steps: StepsOf

    def size(self, workers: Any) -> int:
        return math.prod(getattr(workers, key) for key in self.count)

    def worker_names(self, workers: Any) -> list[str]:
        return [f"{self.name}:{index}" for index in range(self.size(workers))]


@dataclass(frozen=True)
class Method:
    """One training method (module docstring)."""

    name: str
    description: str
    roles: tuple[Role, ...]
    copies: Copies = Copies.SHARED
    averaging: bool = False  # replicas average parameters every workers.average_every local batches
    engines: tuple[str, ...] = ("simulator", "executor")
    ranks: bool = False  # the replicas are ranks: processes with a copy each (module docstring)
    gossip: bool = False  # ranks mix updated layers pairwise as they go (layer-wise gossip, pdasgd.gossip)
    per_rank: str | None = None  # the one-process method each rank runs (gossip-lu: async-lu), if any
    theory: str | None = None  # "sequential" or "decoupled": the closed forms that describe it
    contrast: str | None = None  # the method whose staleness plots set beside this one's (LU against BU)
    notes: tuple[str, ...] = field(default=(), compare=False)

    @property
    def windowed(self) -> bool:
        """Whether `max_in_flight` applies: methods that hand batches from one role to the next."""
        return len(self.roles) > 1

    @property
    def synchronous(self) -> bool:
        """Ranks whose copies stay equal: every update applies the all-reduced gradient (ddp)."""
        return self.ranks and not self.averaging and not self.gossip

    @property
    def replayable(self) -> bool:
        """Whether a trace says all of the run's arithmetic (`executor.replay`): one shared copy, copies
        that stay equal, or gossip's copies, whose mixes are versions with records (exchange mode). Averaging
        rounds are not versions, so a trace does not say which forwards saw one."""
        return self.copies is Copies.SHARED or self.synchronous or self.gossip

    def rank_count(self, workers: Any) -> int:
        """How many ranks: `workers.replicas` for a method across ranks, else 1 (one process)."""
        return workers.replicas if self.ranks else 1

    def local_names(self, workers: Any) -> list[str]:
        """The workers of one rank (of the one process, for a method that runs in one)."""
        return [name for role in self.roles for name in role.worker_names(workers)]

    def worker_names(self, workers: Any) -> list[str]:
        """Every worker, rank by rank; across ranks a name carries its rank (`r1/worker:0`)."""
        local = self.local_names(workers)
        if not self.ranks:
            return local
        return [rank_name(rank, name) for rank in range(workers.replicas) for name in local]

    def placement_groups(self, workers: Any) -> dict[str, list[str]]:
        """[placement] key -> the workers it places, in order."""
        groups: dict[str, list[str]] = {}
        for rank in range(self.rank_count(workers)):
            for role in self.roles:
                names = role.worker_names(workers)
                groups.setdefault(role.placement, []).extend(
                    rank_name(rank, name) if self.ranks else name for name in names
                )
        return groups

    def role_of(self, worker_index: int, workers: Any) -> tuple[Role, int]:
        """The role and index within it of the worker_index-th worker (worker_names order)."""
        if self.ranks:
            worker_index %= len(self.local_names(workers))
        for role in self.roles:
            size = role.size(workers)
            if worker_index < size:
                return role, worker_index
            worker_index -= size
        raise IndexError(f"worker {worker_index} out of range for {self.name}")

    def batch_steps(self, layers: int, workers: Any, indices: tuple[int, ...] | None = None) -> list[Step]:
        """One batch's steps across the roles (each role's worker `indices[r]`, default 0), in order."""
        chosen = indices or (0,) * len(self.roles)
        return [s for role, i in zip(self.roles, chosen, strict=True) for s in role.steps(layers, i, workers)]

    def check(self, layers: int, workers: Any) -> None:
        """Raise MethodError when some worker's steps break the rules of `check_steps` for this size."""
        for role_index, role in enumerate(self.roles):
            for index in range(role.size(workers)):
                per_role = [
                    other.steps(layers, index if r == role_index else 0, workers)
                    for r, other in enumerate(self.roles)
                ]
                try:
                    check_steps(per_role, layers, self.roles)
                except MethodError as error:
                    raise MethodError(f"method {self.name}, {role.name}:{index}: {error}") from None

    def schedule_text(self, layers: int, workers: Any) -> str:
        """The steps of one batch, roles separated by `|`; workers of a role with other steps on their own
        line (`worker:1  F0 F1 B1 U1`)."""
        lines = []
        for role in self.roles:
            texts = [_step_text(role.steps(layers, i, workers)) for i in range(role.size(workers))]
            lines.append(dict.fromkeys(texts))
        if all(len(options) == 1 for options in lines):
            return " | ".join(next(iter(options)) for options in lines)
        rows = []
        for role in self.roles:
            texts = [_step_text(role.steps(layers, i, workers)) for i in range(role.size(workers))]
            rows += [f"{role.name}:{i}  {text}" for i, text in enumerate(texts)]
        return "\n".join(rows)


def _step_text(steps: tuple[Step, ...]) -> str:
    """Steps as text; consecutive publish steps collapse to `P2,1,0`."""
    words: list[str] = []
    for step in steps:
        if step.op == PUBLISH and words and words[-1].startswith("P"):
            words[-1] += f",{step.layer}"
        else:
            words.append(str(step))
    return " ".join(words)


def check_steps(per_role: list[tuple[Step, ...]], layers: int, roles: tuple[Role, ...]) -> None:
    """The rules one batch's steps (one worker of each role, in role order) follow, so both engines can
    run them: every layer's forward exactly once, input first, before any other step; backward steps from
    the output layer down, without gaps; an update of layer m only after its backward, at most once; a
    publish of m only after its update and before the next all-reduce, at most once. Two roles at most: the
    first runs the forward and nothing else and hands the batch to the second; all-reduces only in
    single-role methods (they synchronise the workers of the role)."""
    _check_roles(per_role, roles, layers)
    steps = [step for role_steps in per_role for step in role_steps]
    for step in steps:
        if step.op not in STEP_OPS:
            raise MethodError(f"unknown step op {step.op!r}")
        if (step.op == ALLREDUCE) != (step.layer is None) or (
            step.layer is not None and not 0 <= step.layer < layers
        ):
            raise MethodError(f"step {step.op} has layer {step.layer} (layers 0..{layers - 1})")
    ops = [step.op for step in steps]
    if [s.layer for s in steps if s.op == FORWARD] != list(range(layers)) or ops[:layers] != [
        FORWARD
    ] * layers:
        raise MethodError("the forward of every layer, input first, must come first, once each")
    backwards = [s.layer for s in steps if s.op == BACKWARD]
    if backwards != list(range(layers - 1, layers - 1 - len(backwards), -1)):
        raise MethodError("backward steps must run from the output layer down, without gaps")
    _check_after(steps, UPDATE, BACKWARD)
    for segment in _segments(steps):
        _check_after([s for s in segment if s.op in (UPDATE, PUBLISH)], PUBLISH, UPDATE)


def _segments(steps: list[Step]) -> list[list[Step]]:
    """The steps between all-reduces."""
    parts: list[list[Step]] = [[]]
    for step in steps:
        if step.op == ALLREDUCE:
            parts.append([])
        else:
            parts[-1].append(step)
    return parts


def _check_roles(per_role: list[tuple[Step, ...]], roles: tuple[Role, ...], layers: int) -> None:
    if len(roles) > 2 or any(role.dispatch is Dispatch.HANDOFF for role in roles[:1]):
        raise MethodError("at most two roles, and only the second is fed by hand-off")
    if len(roles) == 2:
        if roles[1].dispatch is not Dispatch.HANDOFF:
            raise MethodError("the second role must be fed by hand-off")
        if per_role[0] != forward_steps(layers):
            raise MethodError("with two roles, the first runs the forward steps and nothing else")
        if any(step.op == ALLREDUCE for step in per_role[1]):
            raise MethodError("all-reduce steps only in single-role methods")


def _check_after(steps: list[Step], op: str, before: str) -> None:
    """Each `op` step of a layer comes after a `before` step of it, and at most once."""
    seen_before: set[int | None] = set()
    seen: set[int | None] = set()
    for step in steps:
        if step.op == before:
            seen_before.add(step.layer)
        elif step.op == op:
            if step.layer not in seen_before or step.layer in seen:
                raise MethodError(f"{step}: needs a {before} of layer {step.layer} before it, once")
            seen.add(step.layer)


# --- step builders ---------------------------------------------------------------------------------------


def forward_steps(layers: int) -> tuple[Step, ...]:
    """F0 F1 ... F(M-1)."""
    return tuple(Step(FORWARD, m) for m in range(layers))


def layerwise_steps(layers: int, lowest: int = 0) -> tuple[Step, ...]:
    """B(M-1) U(M-1) ... B(lowest) U(lowest): each layer updated (and published) right after its backward."""
    return tuple(s for m in reversed(range(lowest, layers)) for s in (Step(BACKWARD, m), Step(UPDATE, m)))


def backward_steps(layers: int, lowest: int = 0) -> tuple[Step, ...]:
    """B(M-1) ... B(lowest)."""
    return tuple(Step(BACKWARD, m) for m in reversed(range(lowest, layers)))


def update_steps(chosen: range | list[int]) -> tuple[Step, ...]:
    """U for each chosen layer, output layer first, each published at its own end."""
    return tuple(Step(UPDATE, m) for m in sorted(chosen, reverse=True))


def publish_steps(chosen: range | list[int]) -> tuple[Step, ...]:
    return tuple(Step(PUBLISH, m) for m in sorted(chosen, reverse=True))


def block_steps(layers: int) -> tuple[Step, ...]:
    """The whole backward, then every update, all published together when the last one ends (BU)."""
    return backward_steps(layers) + update_steps(range(layers)) + publish_steps(range(layers))


def partition(layers: int, parts: int, index: int) -> range:
    """The index-th of `parts` contiguous blocks of layers (input layer in block 0)."""
    return range(index * layers // parts, (index + 1) * layers // parts)


def _sequential(layers: int, index: int, workers: Any) -> tuple[Step, ...]:
    return forward_steps(layers) + layerwise_steps(layers)


def _forward(layers: int, index: int, workers: Any) -> tuple[Step, ...]:
    return forward_steps(layers)


def _layerwise(layers: int, index: int, workers: Any) -> tuple[Step, ...]:
    return layerwise_steps(layers)


def _block(layers: int, index: int, workers: Any) -> tuple[Step, ...]:
    return block_steps(layers)


def _hogwild(layers: int, index: int, workers: Any) -> tuple[Step, ...]:
    return forward_steps(layers) + backward_steps(layers) + update_steps(range(layers))


def _lppsgd(layers: int, index: int, workers: Any) -> tuple[Step, ...]:
    owned = partition(layers, workers.per_replica, index)
    lowest = owned.start if len(owned) else layers
    return forward_steps(layers) + backward_steps(layers, lowest) + update_steps(owned)


def _ddp(layers: int, index: int, workers: Any) -> tuple[Step, ...]:
    return forward_steps(layers) + backward_steps(layers) + (Step(ALLREDUCE),) + update_steps(range(layers))


def decoupled_roles(backward: StepsOf) -> tuple[Role, Role]:
    """The forward and backward roles of a decoupled method whose backward workers run `backward`."""
    return (
        Role("forward", "forward", ("forward",), Dispatch.ROUND_ROBIN, _forward),
        Role("backward", "backward", ("backward",), Dispatch.HANDOFF, backward),
    )


def shared_counter_role(steps: StepsOf) -> Role:
    return Role("worker", "workers", ("replicas", "per_replica"), Dispatch.COUNTER, steps)


def rank_counter_role(steps: StepsOf) -> Role:
    """per_replica workers of one rank sharing that rank's counter."""
    return Role("worker", "workers", ("per_replica",), Dispatch.COUNTER, steps)


BUILT_IN = (
    Method(
        "sequential",
        "plain backprop on one worker: forward, then backward from the output layer with each layer's "
        "update right after its gradient",
        (Role("worker", "workers", (), Dispatch.ROUND_ROBIN, _sequential),),
        theory="sequential",
    ),
    Method(
        "async-lu",
        "decoupled forward and backward workers; each layer is updated and published as soon as its "
        "gradient exists (layer-wise updates, the paper's Async LU)",
        decoupled_roles(_layerwise),
        theory="decoupled",
        contrast="async-bu",
    ),
    Method(
        "async-bu",
        "decoupled forward and backward workers; all layers are updated after the whole backward and "
        "published together (block updates, the paper's Async BU)",
        decoupled_roles(_block),
        theory="decoupled",
        contrast="async-lu",
    ),
    Method(
        "hogwild",
        "replicas x per_replica workers, each forward, backward and update on its own batches, lock-free on "
        "one shared copy of the parameters",
        (shared_counter_role(_hogwild),),
    ),
    Method(
        "lapsgd",
        "a rank per replica, each with per_replica hogwild workers on its own copy; a communicator thread "
        "per rank averages the copies every average_every local batches while the workers go on",
        (rank_counter_role(_hogwild),),
        copies=Copies.RANK,
        averaging=True,
        ranks=True,
    ),
    Method(
        "lppsgd",
        "lapsgd where worker p of a rank updates only the p-th of per_replica blocks of layers and runs "
        "its backward only down to that block",
        (rank_counter_role(_lppsgd),),
        copies=Copies.RANK,
        averaging=True,
        ranks=True,
    ),
    Method(
        "gossip-lu",
        "async-lu on every rank (workers.replicas ranks, each forward and backward workers on its own copy); "
        "each rank's communicator exchanges the layers it updated with a partner drawn per round and mixes "
        "them (layer-wise gossip, LayUp)",
        decoupled_roles(_layerwise),
        copies=Copies.RANK,
        ranks=True,
        gossip=True,
        per_rank="async-lu",
        contrast="gossip-bu",
    ),
    Method(
        "gossip-bu",
        "async-bu on every rank, with the layer-wise gossip of gossip-lu",
        decoupled_roles(_block),
        copies=Copies.RANK,
        ranks=True,
        gossip=True,
        per_rank="async-bu",
        contrast="gossip-lu",
    ),
    Method(
        "ddp",
        "synchronous data parallel (DistributedDataParallel): a rank per replica, each one worker's forward "
        "and backward with the gradients all-reduced in buckets as they are ready, then the same update "
        "everywhere",
        (Role("worker", "workers", (), Dispatch.ROUND_ROBIN, _ddp),),
        copies=Copies.RANK,
        ranks=True,
    ),
)

_REGISTRY: dict[str, Method] = {method.name: method for method in BUILT_IN}


def names() -> tuple[str, ...]:
    """The methods there are, built-in first, in registration order."""
    return tuple(_REGISTRY)


def lookup(name: str) -> Method:
    """The definition of `name`; MethodError listing the methods there are when it is unknown."""
    method = _REGISTRY.get(name) if isinstance(name, str) else None
    if method is None:
        raise MethodError(f"unknown method {name!r} (methods: {', '.join(_REGISTRY)})")
    return method


def register(method: Method) -> Method:
    """Add a method; its steps are checked on a sample network first."""
    if method.name in _REGISTRY:
        raise MethodError(f"method {method.name!r} is already defined")
    method.check(4, _Sample())
    _REGISTRY[method.name] = method
    return method


def unregister(name: str) -> None:
    if name in {method.name for method in BUILT_IN}:
        raise MethodError(f"method {name!r} is built in")
    _REGISTRY.pop(name, None)


@contextmanager
def registered(method: Method) -> Iterator[Method]:
    """`register(method)` for the duration of a with-block (tests)."""
    register(method)
    try:
        yield method
    finally:
        unregister(method.name)


def rank_name(rank: int, name: str) -> str:
    """The name of rank `rank`'s worker `name` in a trace of all ranks: `r1/worker:0`."""
    return f"r{rank}/{name}"


def split_rank(name: str) -> tuple[int | None, str]:
    """`r1/worker:0` -> (1, "worker:0"); a name without a rank -> (None, name)."""
    prefix, slash, local = name.partition("/")
    if slash and prefix[:1] == "r" and prefix[1:].isdigit():
        return int(prefix[1:]), local
    return None, name


def split_worker(name: str) -> tuple[str, int]:
    """`backward:2` -> ("backward", 2): a worker name's role and index (index -1 when it has none); a
    rank's prefix is left out (`r1/worker:0` -> ("worker", 0))."""
    role, _, number = split_rank(name)[1].rpartition(":")
    return (role, int(number)) if role and number.isdigit() else (split_rank(name)[1], -1)


def worker_order(method: str, names: list[str]) -> list[str]:
    """Worker names rank by rank, in the order of the method's roles, then by index (names of other roles
    last)."""
    roles = [role.name for role in _REGISTRY[method].roles] if method in _REGISTRY else []

    def key(name: str) -> tuple[int, int, int, str]:
        rank = split_rank(name)[0]
        role, index = split_worker(name)
        return (-1 if rank is None else rank, roles.index(role) if role in roles else len(roles), index, name)

    return sorted(names, key=key)


class _Sample:
    """Worker counts for checking a definition before any scenario exists."""

    forward = 1
    backward = 2
    replicas = 2
    per_replica = 2
    max_in_flight = 4
    average_every = 2
