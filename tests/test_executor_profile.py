"""`executor.profile`: per-layer costs on the runtime's own code path, with the runtime's memory figures."""

from __future__ import annotations

import pytest
import torch
from executor_probe import scenario

from executor.data import batch_stream, load_dataset
from executor.networks import activation_bytes, block_names, build_network, parameter_bytes
from executor.profile import measure, measure_pipelined, profile
from pdasgd.scenario import Layer

NETWORKS = {
    "mlp": {"network": "mlp", "width": 32, "depth": 3},
    "resnet": {"network": "resnet", "depth": 8, "channels": 4},
    "lstm": {"network": "lstm", "hidden": 8},
}


@pytest.mark.parametrize("network", list(NETWORKS))
def test_profile_gives_one_layer_per_block_with_the_networks_sizes(network: str) -> None:
    sc = scenario("async-lu", train=NETWORKS[network])
    layers = profile(sc, batches=3, warmup=1)
    dataset = load_dataset(sc.train, sc.run.seed)
    torch.manual_seed(sc.run.seed)
    blocks = build_network(sc.train, dataset.input_shape, dataset.num_classes, dataset.vocab_size)
    x, _ = next(batch_stream(dataset, sc.train.batch_size, sc.run.seed))
    assert all(isinstance(layer, Layer) for layer in layers)
    assert [layer.name for layer in layers] == block_names(blocks)
    assert [layer.param_bytes for layer in layers] == [parameter_bytes(block) for block in blocks]
    assert [layer.activation_bytes for layer in layers] == activation_bytes(blocks, x)
    assert all(layer.forward_s > 0 and layer.backward_s > 0 and layer.update_s > 0 for layer in layers)


def test_samples_leave_out_the_warmup_and_give_means_or_medians() -> None:
    samples = measure(scenario("sequential"), batches=5, warmup=2)
    for layer in samples:
        assert all(len(times) == 5 for times in layer.samples.values())
        assert all(len(gaps) == 5 and min(gaps) >= 0 for gaps in layer.overhead.values())
        mean, median = layer.layer("mean"), layer.layer("median")
        # a cost is the op's span plus the gap before it (the per-op overhead)
        assert mean.forward_s == pytest.approx(
            (sum(layer.samples["forward"]) + sum(layer.overhead["forward"])) / 5
        )
        assert (
            median.backward_s == sorted(layer.samples["backward"])[2] + sorted(layer.overhead["backward"])[2]
        )


def test_bad_profile_lengths_are_refused() -> None:
    with pytest.raises(ValueError, match="batches >= 1"):
        profile(scenario("sequential"), batches=0)


def test_pipelined_costs_come_from_a_forward_backward_pipeline_with_the_solo_overheads() -> None:
    sc = scenario("async-bu", workers={"backward": 3}, delays={"handoff_s": 0.05})
    solo = measure(sc, batches=4, warmup=1)
    pipelined = measure_pipelined(sc, solo, batches=6, warmup=2)
    assert [layer.name for layer in pipelined] == [layer.name for layer in solo]
    for before, after in zip(solo, pipelined, strict=True):
        assert all(len(times) == 6 for times in after.samples.values())  # one sample per measured batch
        assert after.overhead == before.overhead
        assert (after.activation_bytes, after.param_bytes) == (before.activation_bytes, before.param_bytes)
        # the pipeline ignores the scenario's delays: a 50 ms hand-off is in no op's time
        assert max(max(times) for times in after.samples.values()) < 0.05
