"""Versioned parameters: what makes layer-wise updates under pending graphs exact.

A forward of batch i+1 runs while batch i's backward updates layers, so a parameter tensor that a pending
graph saved must never change. Each layer therefore holds immutable `Version`s: a number and tensors. A
forward reads the current (visible) version and builds its graph on detached leaves of those tensors; an
update computes new tensors from the latest applied version and makes them the next version
(docs/platform.md: in-place updates, `p.data` tricks and `optimizer.step()` raise or give silently wrong
gradients on Conv, BatchNorm and LSTM).

Applying and publishing are two acts, as in the method definitions (pdasgd.methods): `apply` makes the
next version (`latest`), `publish` makes a version the one readers get (`current`). Layer-wise updates
publish at once; block updates publish every layer together after the last update; an update-visibility
delay publishes `delays.visibility_s` later from a delivery thread, while the updating worker goes on.
Readers always get the newest published version; a version published after a newer one is superseded.

Each layer has a lock. An update (SGD with momentum and weight decay, `torch.optim.SGD` semantics: no
dampening, no Nesterov) runs under it, so two backward workers updating one layer never lose an update and
versions rise by exactly one per update. Reads take the lock to count pending readers, which tells
`MemoryMeter` how many versions are alive, and lets an update write in place when nothing can see the
latest version but the update itself: it is published, no pending graph read it, and no other is waiting
to be published (always so in sequential runs). A new tensor costs a write to fresh memory, about 8% of a
sequential MLP step on this machine, and in place is then exact, since no graph can see the change and no
forward can read the version before the lock is released. Whoever keeps version tensors beyond a forward
(snapshots, probes) must copy them. In-place updates are off on CUDA, where a graph the host released may
still be running on another stream. Momentum buffers are read only by updates, under the lock, so they are
updated in place and not versioned.

Only parameters are versioned. Buffers (BatchNorm running statistics) are shared tensors that forwards
update in place; no backward reads them, so they cannot corrupt a gradient. With several forward workers
their running-average updates may interleave, as in any Hogwild-style run.

On CUDA an update runs on the updating worker's stream; `Version.ready` is an event recorded after it, which a
reader's stream waits on before using the tensors (see `executor.timing`).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch

from executor.memory import MemoryMeter


def _no_stamp() -> None:
    return None


class StreamSync(Protocol):
    """How an update orders itself on a CUDA stream (`executor.timing.CudaStreams` makes one)."""

    def wait(self, version: Version) -> None: ...

    def ready(self) -> object: ...


@dataclass(frozen=True)
class SGD:
    """Hyper-parameters of plain SGD as `torch.optim.SGD` applies them."""

    lr: float
    momentum: float = 0.0
    weight_decay: float = 0.0


@dataclass(frozen=True)
class Version:
    """One published version of a layer's parameters; the tensors are never written after publication."""

    number: int
    tensors: tuple[torch.Tensor, ...]
    ready: object | None = None  # a torch.cuda.Event on CUDA, else None


class VersionedLayer:
    """The parameters of one block (in `named_parameters` order), their versions and optimizer state."""

    def __init__(
        self,
        tensors: Sequence[torch.Tensor],
        sgd: SGD,
        meter: MemoryMeter | None = None,
        version: int = 0,
        momentum: Sequence[torch.Tensor] | None = None,
        in_place: bool = True,
    ) -> None:
        self.lock = threading.Lock()
        self.in_place = in_place
        self.sgd = sgd
        self.current = Version(version, tuple(t.detach().clone() for t in tensors))  # what readers get
        self.latest = self.current  # the newest applied version
        self.nbytes = sum(t.numel() * t.element_size() for t in self.current.tensors)
        self.momentum: list[torch.Tensor] | None = None
        if sgd.momentum:
            given = momentum if momentum is not None else [torch.zeros_like(t) for t in self.current.tensors]
            self.momentum = [buffer.detach().clone() for buffer in given]
        self._readers: dict[int, int] = {}
        self._unpublished: set[int] = set()
        self._meter = meter
        self._live = 1
        if meter:
            meter.add(self.nbytes)

    @property
    def version(self) -> int:
        return self.current.number

    def read(self) -> Version:
        """The current version, counted as read until `release` (it stays alive while a graph needs it)."""
        with self.lock:
            current = self.current
            self._readers[current.number] = self._readers.get(current.number, 0) + 1
        return current

    def release(self, number: int) -> None:
        """A read of version `number` is over (its batch's backward of this layer is done)."""
        with self.lock:
            left = self._readers[number] - 1
            if left:
                self._readers[number] = left
            else:
                del self._readers[number]
            self._account()

    def apply(
        self,
        grads: Sequence[torch.Tensor],
        sync: StreamSync | None = None,
        stamp: Callable[[], Any] = _no_stamp,
        owned: Sequence[bool] | None = None,
        publish: bool = True,
    ) -> tuple[Version, int, Any, Any]:
        """Make the next version from gradients `grads` and, with `publish`, show it to readers; return
        (the new version, the version just before it, start, end).

        `start` and `end` are `stamp()`s taken under the lock, so update spans of a layer are ordered as
        its versions are. On CUDA, `sync` makes the updating stream wait for the latest version and records
        the new one's readiness, both under the lock, so no reader sees the new version without its event.
        `owned[i]` says the caller gives up gradient i: an out-of-place update may write into its memory.
        """
        with self.lock:
            start = stamp()
            old = self.latest
            if sync:
                sync.wait(old)
            # in place only if nothing but this update can see the tensors: the latest version is the
            # published one, no pending graph read it, none waits to be published, and the new one is
            # published at once (else readers would get the new values under the old number)
            alone = old is self.current and old.number not in self._readers and not self._unpublished
            tensors = self._step(old.tensors, grads, self.in_place and alone and publish, owned)
            new = Version(old.number + 1, tensors, sync.ready() if sync else None)
            self.latest = new
            if publish:
                self.current = new
            else:
                self._unpublished.add(new.number)
            self._account()
            end = stamp()
        return new, old.number, start, end

    def publish(self, version: Version) -> None:
        """Show `version` to readers, unless a newer one already is."""
        with self.lock:
            self._unpublished.discard(version.number)
            if version.number > self.current.number:
                self.current = version
            self._unpublished = {n for n in self._unpublished if n > self.current.number}
            self._account()

    def _account(self) -> None:
        """Tell the meter how many versions are alive: the current and the latest, every one a pending graph
        read and every one waiting to be published (called under the lock)."""
        live = len({self.current.number, self.latest.number, *self._readers, *self._unpublished})
        if self._meter and live != self._live:
            if live > self._live:
                self._meter.add((live - self._live) * self.nbytes)
            else:
                self._meter.sub((self._live - live) * self.nbytes)
        self._live = live

    def _step(
        self,
        params: tuple[torch.Tensor, ...],
        grads: Sequence[torch.Tensor],
        in_place: bool,
        owned: Sequence[bool] | None,
    ) -> tuple[torch.Tensor, ...]:
        lr, momentum, decay = self.sgd.lr, self.sgd.momentum, self.sgd.weight_decay
        new = []
        for index, (param, grad) in enumerate(zip(params, grads, strict=True)):
            out = grad if owned and owned[index] else None  # raw gradient: no longer needed once used
            if decay:
                grad = torch.add(grad, param, alpha=decay)  # never in place: a grad may alias another
            if self.momentum is not None:
                grad = self.momentum[index].mul_(momentum).add_(grad)
            if in_place:
                param.add_(grad, alpha=-lr)
            else:  # one fused op: `param - lr * grad` costs twice as much on 4 MB layers
                new.append(torch.add(param, grad, alpha=-lr, out=out))
        return params if in_place else tuple(new)

    def shift(self, deltas: Sequence[torch.Tensor], ready: Callable[[], object] | None = None) -> Version:
        """Add `deltas` to the latest version's tensors (an averaging round: lapsgd's `avg - snapshot`),
        as new tensors under the same number: a round is not a version (docs/design.md), and a pending
        graph that read the old tensors keeps them. Readers get the result if they got the latest."""
        with self.lock:
            old = _ready(self.latest)
            tensors = tuple(torch.add(t, d) for t, d in zip(old.tensors, deltas, strict=True))
            new = Version(old.number, tensors, ready() if ready else None)
            if self.current is old:
                self.current = new
            self.latest = new
        return new

    def mix(
        self, deltas: Sequence[torch.Tensor], stamp: Callable[[], Any] = _no_stamp
    ) -> tuple[Version, int, Any]:
        """A gossip mix (pdasgd.gossip): add `deltas` to the latest version's tensors as the next version,
        published at once (with whatever unpublished update it was built on); return (the new version, the
        version just before it, `stamp()` under the lock). New tensors: a pending graph keeps what it read."""
        with self.lock:
            old = _ready(self.latest)
            tensors = tuple(torch.add(t, d) for t, d in zip(old.tensors, deltas, strict=True))
            new = Version(old.number + 1, tensors)
            self.latest = self.current = new
            self._unpublished = set()  # a later publish of an older version changes nothing
            self._account()
            end = stamp()
        return new, old.number, end

    def copy_tensors(
        self, into: tuple[torch.Tensor, ...] | None = None
    ) -> tuple[int, tuple[torch.Tensor, ...]]:
        """(number, a copy of the tensors) of the latest applied version, taken under the lock; copied into
        `into` if given."""
        with self.lock:
            latest = _ready(self.latest)
            if into is None:
                return latest.number, tuple(t.detach().clone() for t in latest.tensors)
            for target, tensor in zip(into, latest.tensors, strict=True):
                target.copy_(tensor.detach())
            return latest.number, into

    def state(self) -> dict:
        """Number, tensors and momentum buffers of the latest applied version, copied (for checkpoints)."""
        with self.lock:
            momentum = [buffer.detach().clone() for buffer in self.momentum] if self.momentum else None
            latest = _ready(self.latest)
            number, tensors = latest.number, [t.detach().clone() for t in latest.tensors]
        return {"version": number, "tensors": tensors, "momentum": momentum}


def _ready(version: Version) -> Version:
    """On CUDA, make the current stream wait until `version` has been computed."""
    if version.ready is not None:
        version.ready.wait()
    return version
