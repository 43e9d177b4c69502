"""Training quality on digits: async-lu reaches 95% test accuracy and stays within 1 point of sequential
training on the same batches (the issue's acceptance figure), despite stale gradients."""

from __future__ import annotations

import pytest
from executor_probe import scenario

from executor.runtime import run

TRAIN = {"batch_size": 32, "lr": 0.05, "momentum": 0.9}
WORKERS = {"forward": 1, "backward": 2, "max_in_flight": 4, "per_replica": 2}


def accuracy(method: str, network: dict, batches: int, seed: int) -> tuple[float, float]:
    train = {**TRAIN, **network}
    sc = scenario(method, train=train, workers=WORKERS, run={"batches": batches, "seed": seed})
    result = run(sc, curve_points=0)
    return result.trace.accuracy, result.summary.staleness.mean


@pytest.mark.parametrize("seed", [0, 1])
def test_async_lu_matches_sequential_on_digits(seed: int) -> None:
    network = {"width": 64, "depth": 2}
    sequential, _ = accuracy("sequential", network, 900, seed)
    async_lu, staleness = accuracy("async-lu", network, 900, seed)
    assert staleness > 0.5  # the gradients really were stale
    assert async_lu >= 0.95
    assert async_lu >= sequential - 0.01


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("method", ["async-lu", "async-bu", "hogwild"])
def test_every_method_matches_sequential_with_a_deeper_network(method: str, seed: int) -> None:
    # At lr 0.05 async-bu diverges on this network (staleness ~1.8 on every layer with momentum 0.9)
    # while async-lu does not: a lower rate for all.
    network = {"width": 256, "depth": 4, "lr": 0.02}
    sequential, _ = accuracy("sequential", network, 1500, seed)
    other, _ = accuracy(method, network, 1500, seed)
    assert other >= 0.95
    assert other >= sequential - 0.01
