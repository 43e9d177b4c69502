"""Run under torchrun (2 or 3 ranks): executor.gossip on real gloo collectives. `python gossip.py MODE OUT`.

- `mixing`: compute off. Rank r's two layers start at r^2 and 10 r^2 + 1; every layer is marked before each of
  40 rounds, no worker runs. After every round the rank writes its tensors, so the test can check that the
  sum over ranks never changes and that the copies close in on the mean. Then one round in which each rank
  applies an update (grad = r + 1, lr = 0.1) while the exchange is under way: the update must be kept.
- `pushing`: compute off, `distributed.gossip_mode = "push"`. The same starting layers; the rank's
  communicator and inbox run as in a real run while every layer is marked 40 times, 5 ms apart; then the
  rank finishes. Writes the tensors just before the final average and after it, and the counts.
- `train [MODE]`: a real gossip-lu run of this rank (`executor.ranks.rank_run`, gossip_mode MODE, default
  exchange) with a probe that records every batch, every version a forward read and every gradient
  applied; the test recomputes each gradient with plain autograd at the versions read.
Writes OUT/<mode>-rank<r>.json (tensors as lists) and, for `train`, OUT/train-rank<r>.pt.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: executor_probe

from executor.gossip import Gossiper  # noqa: E402
from executor.params import SGD, VersionedLayer  # noqa: E402
from executor.timing import CpuClock  # noqa: E402
from executor.world import OwnedGroup, join  # noqa: E402
from pdasgd.scenario import parse_scenario  # noqa: E402


class UpdatingGroup(OwnedGroup):
    """The rank's group, which applies one update to every layer just before an exchange swaps tensors."""

    def __init__(self, inner: OwnedGroup, layers: list[VersionedLayer], grad: float) -> None:
        super().__init__(inner.group, inner.name)
        self.layers, self.grad, self.armed = layers, grad, False

    def exchange(self, send: torch.Tensor, receive: torch.Tensor, peer: int) -> None:
        if self.armed:
            for layer in self.layers:
                layer.apply([torch.full_like(t, self.grad) for t in layer.latest.tensors])
            self.armed = False
        super().exchange(send, receive, peer)


def compute_off(ranks: int, **distributed) -> dict:
    return {
        "method": "gossip-lu",
        "workers": {"replicas": ranks, "forward": 1, "backward": 1},
        "run": {"batches": ranks, "warmup": 0},
        "distributed": {"timeout_s": 20, **distributed},
        "train": {"device": "cpu"},
    }


def starting_layers(rank: int) -> list[VersionedLayer]:
    """Rank r's two layers: r^2 and 10 r^2 + 1 everywhere."""
    return [
        VersionedLayer([torch.full((4,), float(rank * rank))], SGD(0.1)),
        VersionedLayer([torch.full((2, 3), 10.0 * rank * rank + 1)], SGD(0.1)),
    ]


def mixing(out: Path, ranks: int) -> None:
    scenario = parse_scenario(compute_off(ranks, consensus_every_s=0))
    world = join(scenario)
    rank = world.rank
    layers = starting_layers(rank)
    group = UpdatingGroup(world.comm, layers, float(rank + 1))
    world.comm = group
    errors: list[BaseException] = []
    gossiper = Gossiper(scenario, layers, [16, 24], world, CpuClock(), threading.Event(), errors.append)
    seen: dict = {"rank": rank, "rounds": []}
    for _ in range(40):
        for m in range(len(layers)):
            gossiper.mark(m)
        assert gossiper._round()
        seen["rounds"].append([[t.tolist() for t in layer.current.tensors] for layer in layers])
    before = [[t.tolist() for t in layer.current.tensors] for layer in layers]
    for m in range(len(layers)):
        gossiper.mark(m)
    group.armed = True
    exchanges = gossiper.exchanges
    assert gossiper._round()
    seen["updated_round"] = {
        "before": before,
        "after": [[t.tolist() for t in layer.current.tensors] for layer in layers],
        "exchanged": gossiper.exchanges > exchanges,
    }
    seen["versions"] = [layer.version for layer in layers]
    seen["mixes"] = gossiper.mixes
    seen["spans"] = [(s.op, s.layer, s.version) for s in gossiper.log.spans()]
    (out / f"mixing-rank{rank}.json").write_text(json.dumps(seen))
    world.close()


def pushing(out: Path, ranks: int) -> None:
    import time

    import executor.gossip

    scenario = parse_scenario(compute_off(ranks, gossip_mode="push"))
    world = join(scenario)
    rank = world.rank
    layers = starting_layers(rank)
    seen: dict = {"rank": rank}
    averaging = executor.gossip.average_copies

    def recorded(layers, group, size):  # the copies as the pushes left them, then the final average
        seen["before_average"] = [[t.tolist() for t in layer.current.tensors] for layer in layers]
        averaging(layers, group, size)

    executor.gossip.average_copies = recorded
    errors: list = []
    report = lambda name, error: errors.append(error)  # noqa: E731
    gossiper = Gossiper(scenario, layers, [16, 24], world, CpuClock(), threading.Event(), report)
    gossiper.start()
    for _ in range(40):
        for m in range(len(layers)):
            gossiper.mark(m)
        time.sleep(0.005)
    gossiper.finish()
    seen["after"] = [[t.tolist() for t in layer.current.tensors] for layer in layers]
    seen["pushes"], seen["mixes"] = gossiper.exchanges, gossiper.mixes
    seen["errors"] = [str(e) for e in errors]
    seen["versions"] = [layer.version for layer in layers]
    seen["spans"] = [(s.op, s.layer, s.version) for s in gossiper.log.spans()]
    (out / f"pushing-rank{rank}.json").write_text(json.dumps(seen))
    world.close()


GRADIENT_PAUSE_S = 0.02


def train(out: Path, ranks: int, mode: str = "exchange") -> None:
    from executor_probe import Recorder

    from executor.ranks import rank_run

    scenario = parse_scenario(
        {
            "method": "gossip-lu",
            "workers": {"replicas": ranks, "forward": 1, "backward": 2, "max_in_flight": 4},
            "train": {"network": "mlp", "width": 32, "depth": 3, "dataset": "digits", "batch_size": 16},
            "run": {"batches": 16 * ranks, "warmup": 0},
            "distributed": {"timeout_s": 20, "consensus_every_s": 0.005, "gossip_mode": mode},
        }
    )
    # Each gradient takes 20 ms longer, so a rank's 16 batches last about half a second: its gossip rounds
    # run while it trains. Without it a loaded machine could start the communicator only after both ranks
    # had finished, and then (rightly) no round would mix.
    recorder = Recorder(on_gradient=lambda i, m: time.sleep(GRADIENT_PAUSE_S))
    result = rank_run(scenario, {"curve_points": 0, "probe": recorder})
    torch.save(
        {
            "batches": recorder.batches,
            "reads": recorder.reads,
            "grads": recorder.grads,
            "parameters": [[t.clone() for t in tensors] for tensors in result.parameters],
        },
        out / f"train-rank{int(result.trace.info['rank'])}.pt",
    )
    if result.trace.info["rank"] == 0:
        result.trace.save(out / "train-trace.json")


if __name__ == "__main__":
    torch.set_num_threads(1)
    mode, folder = sys.argv[1], Path(sys.argv[2])
    modes = {"mixing": mixing, "pushing": pushing, "train": train}
    modes[mode](folder, int(os.environ["WORLD_SIZE"]), *sys.argv[3:])
    # as executor.ranks does: the interpreter's teardown can abort on a still-joinable gloo thread
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
