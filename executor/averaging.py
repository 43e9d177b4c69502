"""lapsgd and lppsgd across ranks: the averaging rounds a rank's communicator runs while its workers train.

Round k starts once the rank has finished k x `average_every` of its own batches (`pdasgd.ranks`), and a
last round follows the rank's last batch, so every rank ends with the same parameters. A round, in the
communicator thread, as in Chatterjee et al.'s code (bapi/LPP-SGD, `communicate_to_all`):

1. snapshot every layer's latest parameters (each copied under its layer's lock);
2. all-reduce the snapshot and divide by the ranks: the average;
3. add `average - snapshot` to each layer's latest parameters (`VersionedLayer.shift`), so the updates the
   workers made during the all-reduce are kept. New tensors: a pending graph keeps what it read.

torch's `PeriodicModelAverager` would block the workers and overwrite their concurrent updates. With
`workers.averaging = "background"` (the default) the workers never wait; with "blocking" none starts a
batch while a round is due or running (periodic local SGD; with one worker per rank and average_every = 1
it is DDP without momentum). Momentum buffers stay per rank, as in that code.
"""

from __future__ import annotations

import threading

import torch

from executor.communicator import Communicator
from executor.links import POLL_S, check
from executor.params import VersionedLayer
from executor.timing import waited
from executor.world import OwnedGroup
from pdasgd.ranks import averaging_rounds
from pdasgd.scenario import Scenario


class Averager:
    """The averaging rounds of one rank (module docstring)."""

    def __init__(
        self,
        scenario: Scenario,
        layers: list[VersionedLayer],
        communicator: Communicator,
        ranks: int,
        stop: threading.Event,
    ) -> None:
        workers = scenario.workers
        self.layers = layers
        self.communicator = communicator
        self.ranks = ranks
        self.stop = stop
        local = scenario.run.batches // ranks
        self.counts = {
            k * workers.average_every for k in range(1, averaging_rounds(local, workers.average_every) + 1)
        }
        self.blocking = workers.averaging == "blocking"
        self.nbytes = _model_bytes(scenario, layers)
        self.open = threading.Event()
        self.open.set()
        self.rounds: list[torch.futures.Future] = []
        self._lock = threading.Lock()

    def on_finish(self, batch: int, completed: int) -> None:
        """A worker of this rank finished its `completed`-th batch: start a round when one is due."""
        if completed not in self.counts:
            return
        if self.blocking:
            self.open.clear()  # before the worker takes another batch: none starts until the round ends
        with self._lock:
            self.rounds.append(self.communicator.submit(self._round, self.nbytes))

    def gate(self) -> None:
        """Blocking averaging: wait while a round is due or running (a worker, before its next batch)."""
        if self.open.is_set():
            return
        while not self.open.wait(POLL_S):
            check(self.stop)
        waited()

    def finish(self) -> None:
        """The rank's last round, after its last batch; waits for every round (raises a round's error)."""
        with self._lock:
            self.rounds.append(self.communicator.submit(self._round, self.nbytes))
            rounds = list(self.rounds)
        for future in rounds:
            future.wait()

    def _round(self, group: OwnedGroup) -> None:
        average_copies(self.layers, group, self.ranks)
        if self.blocking:
            self.open.set()


def average_copies(layers: list[VersionedLayer], group: OwnedGroup, ranks: int) -> None:
    """One averaging round (module docstring, steps 1-3), in the calling thread, which owns `group`."""
    snapshot, flat = snapshot_flat(layers)
    average = flat.clone()
    group.all_reduce(average)
    delta = average.div_(ranks).sub_(flat)
    for layer, deltas in zip(layers, split_like(delta, snapshot), strict=True):
        layer.shift(deltas, _cuda_ready if flat.is_cuda else None)


def snapshot_flat(
    layers: list[VersionedLayer], device: torch.device | None = None
) -> tuple[list[tuple[torch.Tensor, ...]], torch.Tensor]:
    """Each layer's latest tensors, copied under its lock, and all of them as one flat tensor (on
    `device`, if given): what a round sends."""
    _, snapshot, flat = numbered_snapshot_flat(layers, device)
    return snapshot, flat


def numbered_snapshot_flat(
    layers: list[VersionedLayer], device: torch.device | None = None
) -> tuple[list[int], list[tuple[torch.Tensor, ...]], torch.Tensor]:
    """`snapshot_flat`, with the version number each layer's copy was taken of (gossip's mix records)."""
    taken = [layer.copy_tensors() for layer in layers]
    snapshot = [tensors for _, tensors in taken]
    flat = torch.cat([t.reshape(-1) for tensors in snapshot for t in tensors])
    return [number for number, _ in taken], snapshot, flat if device is None else flat.to(device)


def split_like(flat: torch.Tensor, like: list[tuple[torch.Tensor, ...]]) -> list[list[torch.Tensor]]:
    """`flat` cut into views shaped as the tensors of each layer in `like`, in order."""
    parts, offset = [], 0
    for tensors in like:
        views = []
        for tensor in tensors:
            views.append(flat[offset : offset + tensor.numel()].view_as(tensor))
            offset += tensor.numel()
        parts.append(views)
    return parts


def _cuda_ready() -> object:
    event = torch.cuda.Event()
    event.record()
    return event


def _model_bytes(scenario: Scenario, layers: list[VersionedLayer]) -> int:
    """The bytes an averaging round all-reduces on the modelled network: [model]'s param_bytes when the
    scenario gives layer costs (the timed network: as the simulator counts them), else the real tensors'."""
    if scenario.model is not None:
        return sum(layer.param_bytes for layer in scenario.model.layers)
    return sum(layer.nbytes for layer in layers)
