"""Exactness: the gradient batch i applies to layer m is the gradient at the parameters its forward read.

For an MLP, a ResNet with BatchNorm and an LSTM, with several backward workers (and staleness > 0), every
(batch, layer) gradient the executor applied is compared with plain autograd through the whole network at
exactly the parameter versions that batch read. Then every update is replayed: versions rise by one per
update, no update is lost (updates = batches x layers), and the final parameters are the replayed ones.
"""

from __future__ import annotations

import copy
from collections import defaultdict

import pytest
import torch
import torch.nn.functional as F
from executor_probe import Recorder, scenario
from torch.func import functional_call

from executor.data import load_dataset
from executor.networks import build_network
from executor.runtime import run

NETWORKS = {
    "mlp": {"network": "mlp", "width": 32, "depth": 3},
    "resnet": {"network": "resnet", "depth": 8, "channels": 4},
    "lstm": {"network": "lstm", "hidden": 8},
}


def reference_gradients(blocks, recorder: Recorder, batch: int) -> list[list[torch.Tensor]]:
    """Plain autograd through all blocks, each at the version batch `batch` read; per layer, param grads."""
    x, y = recorder.batches[batch]
    params = []
    for m, block in enumerate(blocks):
        names = [name for name, _ in block.named_parameters()]
        tensors = [t.clone().requires_grad_() for t in recorder.reads[(batch, m)][1]]
        params.append(tensors)
        x = functional_call(block, dict(zip(names, tensors, strict=True)), (x,))
    loss = F.cross_entropy(x, y)
    flat = torch.autograd.grad(loss, [t for layer in params for t in layer])
    out, start = [], 0
    for layer in params:
        out.append(list(flat[start : start + len(layer)]))
        start += len(layer)
    return out


def fresh_blocks(sc):
    dataset = load_dataset(sc.train, sc.run.seed)
    torch.manual_seed(sc.run.seed)
    blocks = build_network(sc.train, dataset.input_shape, dataset.num_classes, dataset.vocab_size)
    return [copy.deepcopy(block).train() for block in blocks]


@pytest.mark.parametrize("method", ["async-lu", "async-bu", "hogwild"])
@pytest.mark.parametrize("network", list(NETWORKS))
def test_gradients_are_taken_at_the_versions_read(network: str, method: str) -> None:
    check_exact(network, method, "cpu")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("method", ["async-lu", "async-bu", "hogwild"])
@pytest.mark.parametrize("network", list(NETWORKS))
def test_gradients_are_exact_across_cuda_streams(network: str, method: str, monkeypatch) -> None:
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)
    check_exact(network, method, "cuda")


def check_exact(network: str, method: str, device: str) -> None:
    sc = scenario(
        method,
        train={**NETWORKS[network], "device": device},
        workers={"forward": 2, "backward": 3, "max_in_flight": 5, "replicas": 1, "per_replica": 3},
        delays={"handoff_s": 0.002},
    )
    recorder = Recorder()
    result = run(sc, probe=recorder)
    layers, batches = result.trace.layers, sc.run.batches
    assert set(recorder.grads) == {(i, m) for i in range(batches) for m in range(layers)}
    blocks = [block.to(device) for block in fresh_blocks(sc)]
    for i in range(batches):
        expected = reference_gradients(blocks, recorder, i)
        for m in range(layers):
            version, grads = recorder.grads[(i, m)]
            assert version == recorder.reads[(i, m)][0]
            for got, want in zip(grads, expected[m], strict=True):
                torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    initial = [[p.detach() for p in block.parameters()] for block in blocks]
    _check_versions_and_replay(result, recorder, initial, sc.train.lr, batches)
    assert result.summary.staleness.max >= 1, "the test must exercise stale reads"


def _check_versions_and_replay(result, recorder: Recorder, initial, lr: float, batches: int) -> None:
    layers = len(initial)
    updates = [s for s in result.trace.spans if s.op == "update"]
    forwards = [s for s in result.trace.spans if s.op == "forward"]
    assert len(updates) == batches * layers and len(forwards) == batches * layers
    by_layer = defaultdict(list)
    for span in sorted(updates, key=lambda s: s.end_s):
        by_layer[span.layer].append(span)
    for m in range(layers):
        versions = [span.version for span in by_layer[m]]
        assert versions == list(range(batches)), f"layer {m}: versions {versions}"
        # Replay: version v+1 = version v - lr * (gradient of the batch that made it).
        params = list(initial[m])
        for span in by_layer[m]:
            grads = recorder.grads[(span.batch, m)][1]
            params = [p - lr * g for p, g in zip(params, grads, strict=True)]
        for got, want in zip(result.parameters[m], params, strict=True):
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    for span in forwards:
        assert span.version == recorder.reads[(span.batch, span.layer)][0]
