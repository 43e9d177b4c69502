"""`executor.profile`: per-layer costs on the runtime's own code path, with the runtime's memory figures."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from executor_probe import scenario

from executor.data import batch_stream, load_dataset
from executor.networks import activation_bytes, block_names, build_network, parameter_bytes
from executor.profile import measure, measure_pipelined, profile
from pdasgd.scenario import Layer, parse_scenario

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


# --- profiling to a stated precision, and the cache ---------------------------------------------------


def timed_scenario(**sections):
    data = {
        "method": "async-lu",
        "model": {"layers": 2, "forward_s": 0.004, "beta": 2.0},
        "train": {"network": "timed", "batch_size": 4},
        "run": {"batches": 10, "warmup": 0},
    }
    data.update(sections)
    return parse_scenario(data)


def test_the_stopping_rule_is_the_t_interval_of_the_per_batch_totals() -> None:
    from executor.profile import OPS, _Totals

    class FakeSpan:
        def __init__(self, op, batch, layer, start_s, end_s):
            self.op, self.batch, self.layer, self.start_s, self.end_s = op, batch, layer, start_s, end_s
            self.duration_s = end_s - start_s

    spans, now = [], 0.0
    for batch in range(4):  # forward totals 1, 3, 1, 3 (no gaps); backward totals 2 each
        f = 1.0 if batch % 2 == 0 else 3.0
        for op, cost in zip(OPS, (f, 2.0, 0.0), strict=True):
            spans.append(FakeSpan(op, batch, 0, now, now + cost))
            now += cost
    totals = _Totals(warmup=0)
    totals.add(spans)
    result = totals.precision(target=0.02, seconds=1.0)
    half = 3.182446305 * math.sqrt(4 / 3) / 2  # t(0.975, 3) sd / sqrt(4)
    assert result.batches == 4
    assert result.forward.value == 2.0 and result.forward.high - 2.0 == pytest.approx(half, rel=1e-9)
    assert result.backward.relative_half_width == 0.0
    assert result.half_width == pytest.approx(half / 2.0) and not result.reached


def test_the_stopping_rule_counts_a_slow_stretch_of_the_machine_as_one_sample() -> None:
    """Per-batch forward totals that come in runs of 10 alike (the machine slow for a while, or fast):
    the interval is the t interval at the series' effective sample size, wider than the independent
    one, so the rule does not stop on a profile that saw only a few of the machine's states."""
    from executor.profile import OPS, _Totals
    from pdasgd.intervals import correlated_mean_interval, mean_interval

    class FakeSpan:
        def __init__(self, op, batch, start_s, end_s):
            self.op, self.batch, self.layer, self.start_s, self.end_s = op, batch, 0, start_s, end_s
            self.duration_s = end_s - start_s

    levels = np.random.default_rng(1).choice([1.0, 1.2], 20)  # the machine's speed, 10 batches at a time
    forward = [float(levels[batch // 10]) + 0.01 * (batch % 3) for batch in range(200)]
    spans, now = [], 0.0
    for batch, f in enumerate(forward):
        for op, cost in zip(OPS, (f, 2.0, 0.0), strict=True):
            spans.append(FakeSpan(op, batch, now, now + cost))
            now += cost
    totals = _Totals(warmup=0)
    totals.add(spans)
    result = totals.precision(target=0.02, seconds=1.0)
    expected = correlated_mean_interval(forward)
    assert (result.forward.low, result.forward.high) == pytest.approx((expected.low, expected.high), rel=1e-9)
    plain = mean_interval(forward)
    assert result.forward.relative_half_width > 1.5 * plain.relative_half_width
    assert plain.relative_half_width < 0.02 and not result.reached  # the plain interval would have stopped


def test_a_steady_network_stops_at_the_first_check_the_rule_allows(monkeypatch) -> None:
    from executor import profile as module

    checks: list[tuple[int, bool]] = []  # (batches, reached) at every check of the rule, in order
    rule = module._Totals.precision

    def recorded(self, target: float, seconds: float):
        result = rule(self, target, seconds)
        checks.append((result.batches, result.reached))
        return result

    monkeypatch.setattr(module._Totals, "precision", recorded)
    layers, precision = module.measure_precisely(timed_scenario(), target=0.02, cap_s=30.0, warmup=2)
    stop_batches, stop_reached = checks[-1]
    assert precision.reached and stop_reached and stop_batches >= module.MIN_BATCHES
    # every earlier check that had the minimum in fell short: the profile did not measure past the rule
    assert not any(reached for batches, reached in checks[:-1] if batches >= module.MIN_BATCHES)
    assert precision.batches == stop_batches and precision.seconds < 30.0
    assert all(len(layer.samples["forward"]) == stop_batches for layer in layers)


def test_a_real_network_is_profiled_for_at_least_the_floor() -> None:
    from executor.profile import MIN_SECONDS, measure_precisely, profile_floor_s

    assert profile_floor_s(scenario("sequential"), 30.0) == MIN_SECONDS == 15.0
    assert profile_floor_s(scenario("sequential"), 3.0) == 3.0  # never past the cap
    assert profile_floor_s(timed_scenario(), 30.0) == 0.0  # the timed network sleeps its costs
    _, precision = measure_precisely(scenario("sequential"), target=0.5, cap_s=30.0, min_s=1.0)
    assert precision.reached and 1.0 <= precision.seconds < 5.0  # ±50% is reached at once; it ran on


def test_a_noisy_network_stops_at_the_time_cap_and_says_it_fell_short(tmp_path, monkeypatch) -> None:
    from executor.profile import measure_precisely

    (tmp_path / "pdasgd_noisy.py").write_text(
        "import math, random, time, torch\n"
        "class Noisy(torch.nn.Module):\n"
        "    def forward(self, x):\n"
        "        time.sleep(random.choice([0.0001, 0.01]))\n"
        "        return x\n"
        "def blocks(input_shape, num_classes):\n"
        "    return [torch.nn.Flatten(), Noisy(), torch.nn.Linear(math.prod(input_shape), num_classes)]\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    sc = scenario("sequential").with_overrides({"train.network": "pdasgd_noisy:blocks"})
    _, precision = measure_precisely(sc, target=0.002, cap_s=1.5)
    assert not precision.reached and precision.half_width > 0.002
    assert 1.5 <= precision.seconds < 4.0


def test_profiles_are_reused_within_their_time_to_live(tmp_path, monkeypatch) -> None:
    from executor import profile_cache
    from executor.profile import measure_precisely

    monkeypatch.setenv("PDASGD_PROFILE_CACHE", str(tmp_path))
    sc = timed_scenario()
    key = profile_cache.key(sc, "solo")
    assert profile_cache.load(key) is None
    layers, precision = measure_precisely(sc, warmup=1)
    profile_cache.store(key, layers, precision)
    again, again_precision, age_s, extra = profile_cache.load(key)
    assert extra == {}
    assert again == layers and again_precision == precision and 0 <= age_s < 60
    assert profile_cache.load(profile_cache.key(sc.with_overrides({"train.batch_size": 8}), "solo")) is None
    assert profile_cache.load(profile_cache.key(sc, "pipelined")) is None
    assert profile_cache.key(sc.with_overrides({"train.lr": 0.5}), "solo") == key  # no op time depends on it
    monkeypatch.setenv("PDASGD_PROFILE_TTL_S", "0")
    assert profile_cache.load(key) is None  # too old
    monkeypatch.setenv("PDASGD_PROFILE_TTL_S", "900")
    next(tmp_path.glob("*.json")).write_text("{not json")
    assert profile_cache.load(key) is None  # damaged entries are ignored
