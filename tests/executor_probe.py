"""Test helpers for the executor: a probe that records what each batch read and applied, and scenarios."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import torch

from pdasgd.scenario import Scenario, parse_scenario


def scenario(method: str = "async-lu", **sections: dict[str, Any]) -> Scenario:
    """A small digits scenario; `sections` override tables, e.g. train={"network": "lstm"}."""
    data: dict[str, Any] = {
        "method": method,
        "train": {
            "network": "mlp",
            "width": 32,
            "depth": 3,
            "dataset": "digits",
            "batch_size": 16,
            "lr": 0.05,
        },
        "workers": {"forward": 1, "backward": 3, "max_in_flight": 4},
        "run": {"batches": 12, "warmup": 0, "seed": 0},
    }
    for name, table in sections.items():
        data[name] = {**data.get(name, {}), **table}
    return parse_scenario(data)


class Recorder:
    """A run probe: copies of each batch, of each version a forward read and of each gradient applied."""

    def __init__(self, on_gradient: Callable[[int, int], None] | None = None) -> None:
        self.lock = threading.Lock()
        self.batches: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        self.reads: dict[tuple[int, int], tuple[int, list[torch.Tensor]]] = {}
        self.grads: dict[tuple[int, int], tuple[int, list[torch.Tensor]]] = {}
        self.on_gradient = on_gradient

    def batch(self, i: int, x: torch.Tensor, y: torch.Tensor) -> None:
        self.batches[i] = (x.clone(), y.clone())

    def read(self, i: int, m: int, version: int, tensors: tuple[torch.Tensor, ...]) -> None:
        self.reads[(i, m)] = (version, [t.detach().clone() for t in tensors])

    def gradient(self, i: int, m: int, version: int, grads: list[torch.Tensor]) -> None:
        self.grads[(i, m)] = (version, [g.detach().clone() for g in grads])
        if self.on_gradient:
            self.on_gradient(i, m)


def plain_training(sc: Scenario, steps: int, batches_per_step: int = 1) -> list[tuple[torch.Tensor, ...]]:
    """The reference: a plain PyTorch loop (nn.Sequential of the scenario's blocks, torch.optim.SGD with its
    momentum and weight decay) for `steps` steps, each on `batches_per_step` consecutive batches of the
    seeded stream concatenated (2 for two DDP ranks); per block, its final parameters."""
    import torch.nn.functional as F

    from executor.data import batch_stream, load_dataset
    from executor.networks import build_network

    train = sc.train
    dataset = load_dataset(train, sc.run.seed)
    torch.manual_seed(sc.run.seed)
    blocks = build_network(train, dataset.input_shape, dataset.num_classes, dataset.vocab_size)
    model = torch.nn.Sequential(*blocks)
    optimizer = torch.optim.SGD(
        model.parameters(), lr=train.lr, momentum=train.momentum, weight_decay=train.weight_decay
    )
    stream = batch_stream(dataset, train.batch_size, sc.run.seed)
    for _ in range(steps):
        pairs = [next(stream) for _ in range(batches_per_step)]
        optimizer.zero_grad()
        x, y = torch.cat([x for x, _ in pairs]), torch.cat([y for _, y in pairs])
        F.cross_entropy(model(x), y).backward()
        optimizer.step()
    return [tuple(p.detach() for p in block.parameters()) for block in blocks]
