"""Run under torchrun (3 ranks): averaging rounds of executor.averaging on real gloo collectives.

Each rank r starts from parameters r and 10 r. Round 1 alone: every rank must end at the mean. Round 2 with
an update applied on each rank while its all-reduce runs (grad = r + 1, lr = 0.1): the update must be kept
(each rank ends at the mean of what it snapshotted plus its own update), so the mean over ranks moves by
exactly the mean of the updates. Writes what it saw to OUT/rank<r>.json."""

from __future__ import annotations

import json
import sys
import threading
from pathlib import Path

import torch

from executor.averaging import Averager
from executor.communicator import Communicator
from executor.params import SGD, VersionedLayer
from executor.timing import CpuClock
from executor.world import OwnedGroup, join
from pdasgd.scenario import parse_scenario


class UpdatingGroup(OwnedGroup):
    """The rank's group, which applies one update to the layer just before its all-reduce starts."""

    def __init__(self, inner: OwnedGroup, layer: VersionedLayer, grad: float) -> None:
        super().__init__(inner.group, inner.name)
        self.layer, self.grad, self.armed = layer, grad, False

    def all_reduce(self, tensor: torch.Tensor) -> None:
        if self.armed:
            self.layer.apply([torch.full_like(t, self.grad) for t in self.layer.latest.tensors])
            self.armed = False
        super().all_reduce(tensor)


def main(out: Path) -> None:
    scenario = parse_scenario(
        {
            "method": "lapsgd",
            "workers": {"replicas": 3, "per_replica": 1},
            "run": {"batches": 3, "warmup": 0},
            "distributed": {"timeout_s": 20},
            "train": {"device": "cpu"},
        }
    )
    world = join(scenario)
    rank = world.rank
    layer = VersionedLayer([torch.full((4,), float(rank)), torch.full((2, 3), 10.0 * rank)], SGD(0.1))
    stop, errors = threading.Event(), []
    group = UpdatingGroup(world.comm, layer, float(rank + 1))
    communicator = Communicator(group, rank, scenario.delays, CpuClock(), stop, lambda n, e: errors.append(e))
    communicator.start()
    averager = Averager(scenario, [layer], communicator, world.size, stop)
    seen = {"rank": rank}
    averager.communicator.submit(averager._round, averager.nbytes).wait()
    seen["after_round_1"] = [t.tolist() for t in layer.current.tensors]
    seen["version_after_round_1"] = layer.version
    group.armed = True
    averager.communicator.submit(averager._round, averager.nbytes).wait()
    seen["after_round_2"] = [t.tolist() for t in layer.current.tensors]
    seen["version_after_round_2"] = layer.version
    communicator.close()
    (out / f"rank{rank}.json").write_text(json.dumps(seen))
    world.close()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
