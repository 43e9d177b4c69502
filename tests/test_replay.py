"""Replay (`executor.replay`): executing a trace's events on the real network gives the parameters that
schedule produces.

- Replaying the executor's own measured trace reproduces the executor's final parameters, for sequential,
  async-lu 1F+2B, async-bu 1F+2B and hogwild, on the MLP, the ResNet with BatchNorm and the LSTM: the trace
  records what happened. BatchNorm's running statistics match too with one forward worker; under hogwild
  two forwards of one layer may overlap and interleave their running averages, so they are only bounded.
- A simulated trace replays to what an independent reference computes: plain autograd through the whole
  network at the versions the trace says each batch read, and SGD (momentum, weight decay) applied in the
  trace's order of each layer's versions.
- Only the versions pending batches still read are kept: the count does not grow with the run.
"""

from __future__ import annotations

import copy
import math
from collections import defaultdict

import pytest
import torch
import torch.nn.functional as F
from executor_probe import plain_training, scenario
from torch.func import functional_call

from executor.data import batch_stream, load_dataset
from executor.networks import build_network
from executor.replay import events_of, replay
from executor.runtime import run
from pdasgd.machine import on_machine
from pdasgd.trace import TraceError
from simulator import simulate

NETWORKS = {
    "mlp": {"network": "mlp", "width": 32, "depth": 3},
    "resnet": {"network": "resnet", "depth": 8, "channels": 4},
    "lstm": {"network": "lstm", "hidden": 8},
}
METHODS = {
    "sequential": {},
    "async-lu": {"forward": 1, "backward": 2, "max_in_flight": 4},
    "async-bu": {"forward": 1, "backward": 2, "max_in_flight": 4},
    "hogwild": {"replicas": 1, "per_replica": 2},
}
TRAIN = {"momentum": 0.9, "weight_decay": 1e-3}


def assert_close(got, want) -> None:
    for layer_got, layer_want in zip(got, want, strict=True):
        for a, b in zip(layer_got, layer_want, strict=True):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("method", list(METHODS))
@pytest.mark.parametrize("network", list(NETWORKS))
def test_replaying_a_measured_trace_gives_the_executors_final_parameters(network: str, method: str) -> None:
    sc = scenario(method, train={**NETWORKS[network], **TRAIN}, workers=METHODS[method], run={"batches": 24})
    measured = run(sc)
    replayed = replay(sc, measured.trace)
    assert replayed.batches == 24
    assert_close(replayed.parameters, measured.parameters)
    if method == "hogwild":  # overlapping forwards of one layer interleave BatchNorm's running averages
        for got, want in zip(replayed.buffers, measured.buffers, strict=True):
            scale = max(1.0, float(want.float().abs().max()))
            assert float((got.float() - want.float()).abs().max()) <= 0.05 * scale
    else:
        assert_close([replayed.buffers], [measured.buffers])
    assert replayed.final_accuracy == pytest.approx(measured.trace.accuracy, abs=0.02)


def test_a_visibility_delay_and_staleness_replay_exactly_too() -> None:
    sc = scenario(
        "async-lu",
        train={**NETWORKS["mlp"], **TRAIN},
        workers={"forward": 1, "backward": 3, "max_in_flight": 6},
        delays={"visibility_s": 0.003, "handoff_s": 0.002},
        run={"batches": 30},
    )
    measured = run(sc)
    reads = [s.version for s in measured.trace.spans if s.op == "forward" and s.layer == 0]
    assert max(reads) < 29  # later batches read old versions: the replay must keep them
    assert_close(replay(sc, measured.trace).parameters, measured.parameters)


# --- simulated traces against an independent reference ------------------------------------------


def reference(sc, trace) -> list[list[torch.Tensor]]:
    """Plain autograd through the whole network at each batch's read versions, and SGD applied per layer
    in version order: the same arithmetic as a replay, computed another way (whole-network functional
    calls, updates visited in the order of the update spans' versions)."""
    dataset = load_dataset(sc.train, sc.run.seed)
    torch.manual_seed(sc.run.seed)
    blocks = [b.train() for b in build_network(sc.train, dataset.input_shape, dataset.num_classes, None)]
    names = [[name for name, _ in block.named_parameters()] for block in blocks]
    versions = [[tuple(p.detach().clone() for p in block.parameters())] for block in blocks]
    momenta = [[torch.zeros_like(p) for p in block.parameters()] for block in blocks]
    stream = batch_stream(dataset, sc.train.batch_size, sc.run.seed)
    data = [next(stream) for _ in range(trace.batches)]
    reads = {(s.batch, s.layer): s.version for s in trace.spans if s.op == "forward"}
    grads: dict[int, list[list[torch.Tensor]]] = {}
    lr, mom, decay = sc.train.lr, sc.train.momentum, sc.train.weight_decay
    updates = sorted((s for s in trace.spans if s.op == "update"), key=lambda s: (s.layer, s.version))
    by_layer = defaultdict(list)
    for span in updates:
        by_layer[span.layer].append(span)
    order = sorted(updates, key=lambda s: (s.start_s, s.layer))
    done = [0] * len(blocks)
    pending = list(order)
    while pending:  # each layer's updates in version order; a batch's gradient once its reads exist
        for span in pending:
            i, m = span.batch, span.layer
            ready = span.version == done[m] and all(
                reads[(i, k)] < len(versions[k]) for k in range(len(blocks))
            )
            if ready:
                break
        else:
            raise AssertionError("reference stuck")
        pending.remove(span)
        if i not in grads:
            grads[i] = gradients(
                blocks, names, [versions[k][reads[(i, k)]] for k in range(len(blocks))], *data[i]
            )
        new = []
        for p, g, buf in zip(versions[m][-1], grads[i][m], momenta[m], strict=True):
            d = g + decay * p
            buf.mul_(mom).add_(d)
            new.append(p - lr * buf)
        versions[m].append(tuple(new))
        done[m] += 1
    return [list(layer[-1]) for layer in versions]


def gradients(blocks, names, params, x, y) -> list[list[torch.Tensor]]:
    leaves = [[t.clone().requires_grad_() for t in layer] for layer in params]
    out = x
    for block, block_names, layer in zip(blocks, names, leaves, strict=True):
        out = functional_call(copy.copy(block), dict(zip(block_names, layer, strict=True)), (out,))
    flat = torch.autograd.grad(F.cross_entropy(out, y), [t for layer in leaves for t in layer])
    result, start = [], 0
    for layer in leaves:
        result.append(list(flat[start : start + len(layer)]))
        start += len(layer)
    return result


@pytest.mark.parametrize(
    ("method", "workers", "delays"),
    [
        ("async-lu", {"forward": 1, "backward": 2, "max_in_flight": 4}, {}),
        ("async-bu", {"forward": 1, "backward": 3, "max_in_flight": 5}, {"handoff_s": 0.004}),
        ("async-lu", {"forward": 2, "backward": 2, "max_in_flight": 6}, {"visibility_s": 0.01}),
        ("hogwild", {"replicas": 1, "per_replica": 3}, {"jitter_cv": 0.3}),
    ],
)
def test_a_simulated_trace_replays_to_the_independent_reference(method, workers, delays) -> None:
    sc = scenario(
        method,
        train={"network": "mlp", "width": 16, "depth": 2, **TRAIN},
        model={"layers": 3, "forward_s": 0.01, "beta": 2.0},
        workers=workers,
        delays=delays,
        run={"batches": 20},
    )
    trace = simulate(sc)
    reads = {(s.batch, s.layer): s.version for s in trace.spans if s.op == "forward"}
    stale = [s.version - reads[(s.batch, s.layer)] for s in trace.spans if s.op == "update"]
    assert max(stale) > 0  # batches read versions older than the ones their updates apply to
    assert_close(replay(sc, trace).parameters, reference(sc, trace))


def test_sequential_replay_is_a_plain_pytorch_training_loop() -> None:
    sc = scenario(
        "sequential",
        train={"network": "mlp", "width": 16, "depth": 2, **TRAIN},
        model={"layers": 3, "forward_s": 0.01, "beta": 2.0},
        run={"batches": 15},
    )
    replayed = replay(sc, simulate(sc))
    assert_close(replayed.parameters, plain_training(sc, 15))


# --- what is kept, the curve, refusals ----------------------------------------------------------------


def test_only_the_versions_pending_batches_read_are_kept() -> None:
    def peak(batches: int) -> int:
        sc = scenario(
            "async-bu",
            train=NETWORKS["mlp"],
            model={"layers": 4, "forward_s": 0.01, "beta": 2.0},
            workers={"forward": 1, "backward": 2, "max_in_flight": 4},
            run={"batches": batches},
        )
        return replay(sc, simulate(sc), eval_points=2).peak_versions

    short, long = peak(20), peak(200)
    assert short == long <= 4 * 4  # bounded by the batches in flight, not the run's length


def test_the_curve_follows_the_traces_time_axis_and_reaches_a_target() -> None:
    sc = scenario("async-lu", train={**NETWORKS["mlp"], "lr": 0.1}, run={"batches": 200})
    sc = sc.with_overrides({"model": {"layers": 4, "forward_s": 0.01, "beta": 2.0}})
    trace = simulate(sc)
    result = replay(sc, trace, eval_points=10)
    assert [p.batches for p in result.curve] == [20 * k for k in range(1, 11)]
    ends = sorted(max(s.end_s for s in trace.spans if s.batch == b) for b in range(200))
    assert [p.time_s for p in result.curve] == [ends[20 * k - 1] for k in range(1, 11)]
    assert result.final_accuracy > 0.8 and result.curve[0].accuracy < result.final_accuracy
    reached = result.time_to(0.8)
    assert reached is not None and reached.accuracy >= 0.8
    assert all(p.accuracy < 0.8 for p in result.curve if p.batches < reached.batches)
    assert result.time_to(1.01) is None
    assert len(result.losses) == 200 and result.losses[-1][2] < result.losses[0][2]


def test_averaging_methods_and_foreign_traces_are_refused() -> None:
    lapsgd = scenario(
        "lapsgd",
        workers={"replicas": 2, "per_replica": 1},
        model={"layers": 4, "forward_s": 0.01, "beta": 2.0},
    )
    with pytest.raises(TraceError, match="replay: lapsgd averages a parameter copy per rank"):
        replay(lapsgd, simulate(lapsgd))
    lu = scenario("async-lu", model={"layers": 4, "forward_s": 0.01, "beta": 2.0})
    bu_trace = simulate(lu.with_overrides({"method": "async-bu"}))
    with pytest.raises(TraceError, match="the trace is of async-bu, the scenario's method is async-lu"):
        replay(lu, bu_trace)
    wrong = scenario("async-lu", model={"layers": 2, "forward_s": 0.01, "beta": 2.0})
    with pytest.raises(TraceError, match="the trace has 2 layers, the network 4 blocks"):
        replay(lu, simulate(wrong))


def test_events_run_in_time_order_with_ties_resolved_by_what_they_need() -> None:
    # zero backward and update costs: every op of a batch's backward starts at one instant
    sc = scenario("async-lu", model={"layers": 4, "forward_s": 0.01, "beta": 0.0}, run={"batches": 8})
    trace = simulate(sc)
    events = events_of(trace)
    assert [e.time_s for e in events] == sorted(e.time_s for e in events)
    assert_close(replay(sc, trace).parameters, reference(sc, trace))


def test_a_diverging_schedule_says_from_which_batch_its_loss_is_not_finite() -> None:
    sc = scenario("async-lu", train={"lr": 1e6}, model={"layers": 4, "forward_s": 0.01, "beta": 2.0})
    result = replay(sc, simulate(sc), eval_points=2)
    first = result.diverged_at
    assert first is not None and result.to_dict()["loss_not_finite_from_batch"] == first
    losses = {batch: loss for batch, _, loss in result.losses}
    assert not math.isfinite(losses[first]) and all(math.isfinite(losses[b]) for b in losses if b < first)
    calm = scenario("async-lu", model={"layers": 4, "forward_s": 0.01, "beta": 2.0})
    assert replay(calm, simulate(calm), eval_points=0).diverged_at is None


# --- ddp: ranks whose copies stay equal ---------------------------------------------------------------


def ddp_scenario(**train):
    return scenario(
        "ddp",
        train={"network": "mlp", "width": 32, "depth": 2, "batch_size": 8, "device": "cpu", **TRAIN, **train},
        workers={"replicas": 2, "per_replica": 1},
        model={"layers": 3, "forward_s": 0.01, "beta": 2.0},
        distributed={"timeout_s": 20},
        run={"batches": 12, "warmup": 2},
    )


def test_a_simulated_ddp_trace_replays_to_sgd_on_the_concatenated_batches() -> None:
    sc = ddp_scenario()
    replayed = replay(sc, simulate(sc), eval_points=2)
    # a step: batches 2k (rank 0) and 2k + 1 (rank 1), their gradients averaged
    assert_close(replayed.parameters, plain_training(sc, 6, batches_per_step=2))


def test_a_measured_ddp_trace_replays_to_the_ranks_final_parameters() -> None:
    sc = ddp_scenario()
    measured = run(sc, curve_points=0)
    assert_close(replay(sc, measured.trace, eval_points=2).parameters, measured.parameters)


# --- gossip: a copy per rank, mixes as versions -----------------------------------------------------


def gossip_scenario(method: str = "gossip-lu", **distributed):
    return scenario(
        method,
        train={"network": "mlp", "width": 16, "depth": 2, "batch_size": 8, "device": "cpu", **TRAIN},
        workers={"replicas": 2, "forward": 1, "backward": 1, "max_in_flight": 3},
        model={"layers": 3, "forward_s": 0.003, "beta": 2.0, "param_bytes": 4096},
        delays={"allreduce_s": 0.001},
        distributed={"timeout_s": 20, **distributed},
        run={"batches": 120, "warmup": 2},
    )


def gossip_reference(sc, trace) -> list[list[torch.Tensor]]:
    """Rank 0's final parameters computed another way: whole-network autograd per batch at the versions it
    read of its rank's copy; per (rank, layer), writes in version order, an update SGD on the latest and a
    mix latest + w (partner's snapshot - own snapshot); then the copies averaged as the final all-reduce."""
    from pdasgd.gossip import paired_mixes
    from pdasgd.methods import split_rank

    dataset = load_dataset(sc.train, sc.run.seed)
    torch.manual_seed(sc.run.seed)
    blocks = [b.train() for b in build_network(sc.train, dataset.input_shape, dataset.num_classes, None)]
    names = [[name for name, _ in block.named_parameters()] for block in blocks]
    ranks = sc.workers.replicas
    start = [tuple(p.detach().clone() for p in block.parameters()) for block in blocks]
    versions = {(r, m): [start[m]] for r in range(ranks) for m in range(len(blocks))}
    momenta = {
        (r, m): [torch.zeros_like(p) for p in start[m]] for r in range(ranks) for m in range(len(blocks))
    }
    stream = batch_stream(dataset, sc.train.batch_size, sc.run.seed)
    data = [next(stream) for _ in range(trace.batches)]
    reads = {(s.batch, s.layer): s.version for s in trace.spans if s.op == "forward"}
    paired = paired_mixes(trace.info["mix_records"])
    writes = [s for s in trace.spans if s.op in ("update", "mix")]
    pending = sorted(writes, key=lambda s: (s.end_s if s.op == "mix" else s.start_s, s.layer))
    grads: dict[int, list[list[torch.Tensor]]] = {}
    lr, mom, decay, w = sc.train.lr, sc.train.momentum, sc.train.weight_decay, sc.distributed.gossip_mix
    while pending:
        for span in pending:
            r, m = split_rank(span.worker)[0], span.layer
            if len(versions[(r, m)]) - 1 != span.version:
                continue
            if span.op == "mix":
                _, partner, theirs = paired[(r, m, span.version)]
                if theirs < len(versions[(partner, m)]):
                    break
            elif all(reads[(span.batch, k)] < len(versions[(r, k)]) for k in range(len(blocks))):
                break
        else:
            raise AssertionError("reference stuck")
        pending.remove(span)
        latest = versions[(r, m)][-1]
        if span.op == "mix":
            own, partner, theirs = paired[(r, m, span.version)]
            mine = versions[(r, m)][own]
            new = [
                p + (t - o) * w for p, t, o in zip(latest, versions[(partner, m)][theirs], mine, strict=True)
            ]
        else:
            i = span.batch
            if i not in grads:
                at = [versions[(r, k)][reads[(i, k)]] for k in range(len(blocks))]
                grads[i] = gradients(blocks, names, at, *data[i])
            new = []
            for p, g, buf in zip(latest, grads[i][m], momenta[(r, m)], strict=True):
                buf.mul_(mom).add_(g + decay * p)
                new.append(p - lr * buf)
        versions[(r, m)].append(tuple(new))
    final = []
    for m in range(len(blocks)):
        mean = [
            sum(parts) / ranks for parts in zip(*(versions[(r, m)][-1] for r in range(ranks)), strict=True)
        ]
        final.append([p + (a - p) for p, a in zip(versions[(0, m)][-1], mean, strict=True)])
    return final


SLOW_NETWORK = {  # long exchanges on a shared, jittery CPU: reads wait for mixes that end after later updates
    "model.layers": 4,
    "model.beta": 1.0,
    "model.forward_s": 0.002,
    "model.param_bytes": 262144,
    "train.width": 32,
    "train.depth": 3,
    "workers.backward": 2,
    "workers.max_in_flight": 4,
    "delays.allreduce_s": 0.0002,
    "delays.allreduce_bytes_per_s": 2e8,
    "run.batches": 80,
}


@pytest.mark.parametrize(
    ("method", "slow_network"), [("gossip-lu", False), ("gossip-bu", False), ("gossip-lu", True)]
)
def test_a_simulated_gossip_trace_replays_to_the_independent_reference(
    method: str, slow_network: bool
) -> None:
    sc = gossip_scenario(method)
    if slow_network:
        sc = on_machine(sc.with_overrides(SLOW_NETWORK), {"cpu": 2}, jitter_cv=0.3)
    trace = simulate(sc)
    mixes = [s for s in trace.spans if s.op == "mix"]
    assert len(mixes) > 20 and len(trace.info["mix_records"]["rank"]) == len(mixes)
    replayed = replay(sc, trace, eval_points=2)
    assert_close(replayed.parameters, gossip_reference(sc, trace))
    alone = replay(sc, simulate(sc.with_overrides({"distributed.gossip_mode": "none"})), eval_points=0)
    assert not all(
        torch.equal(a, b) for a, b in zip(alone.parameters[0], replayed.parameters[0], strict=True)
    )


def test_a_measured_gossip_trace_replays_to_rank_0s_final_parameters() -> None:
    sc = gossip_scenario()
    measured = run(sc, curve_points=0)  # 120 batches: rounds with marks even on a loaded machine
    assert measured.trace.info["gossip_mixes"] > 0, "no exchange in the real run"
    records = measured.trace.info["mix_records"]
    assert set(records["rank"]) == {0, 1} and len(records["rank"]) == measured.trace.info["gossip_mixes"] * 2
    assert_close(replay(sc, measured.trace, eval_points=2).parameters, measured.parameters)


def test_push_gossip_and_mixes_without_records_are_refused() -> None:
    push = gossip_scenario(gossip_mode="push")
    with pytest.raises(TraceError, match="replay: push gossip"):
        replay(push, simulate(gossip_scenario()))
    sc = gossip_scenario()
    trace = simulate(sc)
    del trace.info["mix_records"]
    with pytest.raises(TraceError, match="mixes have no mix records"):
        replay(sc, trace)
