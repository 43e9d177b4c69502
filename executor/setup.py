"""Everything a run needs before its first batch: device, data, network, versioned layers, resume state.

`make_setup` is deterministic in `run.seed`: `torch.manual_seed(seed)` before the network is built, the data
split and the batch stream seeded with it, so two runs of one scenario start from identical parameters and see
identical batches. With a checkpoint folder that holds a checkpoint, the layers, buffers and the first batch
come from it (`executor.checkpoint`).
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from executor import checkpoint as checkpoints
from executor.blocks import warm_up
from executor.checks import check_blocks_run, check_fits
from executor.data import Dataset, batch_stream, load_dataset
from executor.links import BatchSource
from executor.memory import MemoryMeter
from executor.networks import activation_bytes, build_network
from executor.params import SGD, VersionedLayer
from executor.timing import CudaStreams, make_clock
from executor.workers import Completions, Context, Delivery
from pdasgd.methods import split_rank
from pdasgd.ranks import rank_batches
from pdasgd.scenario import Scenario

PARAMETER_COPIES = 4  # current and latest version, momentum, gradients


@dataclass
class Setup:
    scenario: Scenario
    device: torch.device
    dataset: Dataset
    blocks: list[nn.Module]
    layers: list[VersionedLayer]
    meter: MemoryMeter
    activation_bytes: list[int]
    first: int  # the first batch this run trains (0 unless resumed)

    @property
    def buffers(self) -> list[torch.Tensor]:
        """The blocks' buffers (BatchNorm running statistics), shared by every worker."""
        return [buffer for block in self.blocks for buffer in block.buffers()]


def resolve_device(name: str) -> torch.device:
    """`auto` is CUDA when available, else the CPU; ValueError for a CUDA device that is not there."""
    device = (
        torch.device("cuda" if torch.cuda.is_available() else "cpu") if name == "auto" else torch.device(name)
    )
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"train.device: {name} requested but torch sees no CUDA device")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise ValueError(f"train.device: {name} does not exist ({torch.cuda.device_count()} CUDA devices)")
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    return device


def cpu_slots() -> int:
    """The cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def make_setup(
    scenario: Scenario,
    checkpoint_dir: str | os.PathLike | None = None,
    copies: int = PARAMETER_COPIES,
    device: torch.device | None = None,
) -> Setup:
    """Everything before the first batch (module docstring); `copies` of the parameters must fit in memory;
    `device` (a rank's) replaces `train.device`."""
    train, seed = scenario.train, scenario.run.seed
    device = device or resolve_device(train.device)
    warm_up()
    dataset = load_dataset(train, seed)

    def build() -> list[nn.Module]:
        return build_network(
            train, dataset.input_shape, dataset.num_classes, dataset.vocab_size, scenario.model
        )

    check_fits(train, build, copies)
    torch.manual_seed(seed)
    blocks = [block.to(device).train() for block in build()]
    sample_x, sample_y = next(batch_stream(dataset, train.batch_size, seed))
    check_blocks_run(blocks, sample_x.to(device), sample_y.to(device), dataset.num_classes, train.network)
    sizes = activation_bytes(blocks, sample_x.to(device))
    meter = MemoryMeter()
    sgd = SGD(train.lr, train.momentum, train.weight_decay)
    state = checkpoints.load(checkpoint_dir, scenario) if checkpoint_dir else None
    if state is None:
        in_place = device.type == "cpu"
        layers = [VersionedLayer(list(block.parameters()), sgd, meter, in_place=in_place) for block in blocks]
        return Setup(scenario, device, dataset, blocks, layers, meter, sizes, 0)
    checkpoints.check_unfinished(checkpoint_dir, state, scenario)
    _check_restorable(state, blocks, train)
    layers = [_restored_layer(saved, sgd, meter, device) for saved in state["layers"]]
    setup = Setup(scenario, device, dataset, blocks, layers, meter, sizes, state["batches_done"])
    with torch.no_grad():
        for buffer, saved in zip(setup.buffers, state["buffers"], strict=True):
            buffer.copy_(saved)
    return setup


def _check_restorable(state: dict, blocks: list[nn.Module], train) -> None:
    """ValueError unless the checkpoint's tensors have the shapes of this network's parameters."""
    if len(state["layers"]) != len(blocks):
        raise ValueError("checkpoint: its layer count does not match the network")
    buffers = [buffer for block in blocks for buffer in block.buffers()]
    if [tuple(b.shape) for b in state["buffers"]] != [tuple(b.shape) for b in buffers]:
        raise ValueError("checkpoint: its buffers do not match the network's")
    for m, (saved, block) in enumerate(zip(state["layers"], blocks, strict=True)):
        shapes = [tuple(p.shape) for p in block.parameters()]
        if [tuple(t.shape) for t in saved["tensors"]] != shapes:
            raise ValueError(f"checkpoint: layer {m}'s parameters do not match the network's")
        if saved["momentum"] is not None and [tuple(t.shape) for t in saved["momentum"]] != shapes:
            raise ValueError(f"checkpoint: layer {m}'s momentum does not match the network's")
        if (saved["momentum"] is None) != (train.momentum == 0):
            raise ValueError("checkpoint: written with another train.momentum")


def _restored_layer(saved: dict, sgd: SGD, meter: MemoryMeter, device: torch.device) -> VersionedLayer:
    tensors = [t.to(device) for t in saved["tensors"]]
    momentum = [t.to(device) for t in saved["momentum"]] if saved["momentum"] else None
    in_place = device.type == "cpu"
    return VersionedLayer(tensors, sgd, meter, saved["version"], momentum, in_place)


def make_context(
    setup: Setup, stop: threading.Event, probe: object | None = None, world: Any = None
) -> Context:
    """What the workers of a run of `setup` share, with a fresh clock and the seeded batch stream; a rank
    (`world`) trains its share of the batches, and its stragglers are those named with its rank."""
    scenario = setup.scenario
    stream = batch_stream(setup.dataset, scenario.train.batch_size, scenario.run.seed)
    rank, ranks = (world.rank, world.size) if world is not None else (0, 1)
    stragglers = {s.worker: s for s in scenario.delays.stragglers}
    if world is not None:
        named = [(split_rank(s.worker), s) for s in scenario.delays.stragglers]
        stragglers = {local: s for (at, local), s in named if at == rank}
    return Context(
        method=scenario.definition,
        workers=scenario.workers,
        blocks=setup.blocks,
        layers=setup.layers,
        source=BatchSource(stream, setup.first, setup.device, rank, ranks),
        clock=make_clock(setup.device),
        stop=stop,
        meter=setup.meter,
        activation_bytes=setup.activation_bytes,
        first=setup.first,
        end=scenario.run.batches,
        threads=scenario.train.threads_per_worker,
        device=str(setup.device) if setup.device.type == "cuda" else "cpu",
        progress=Completions(setup.first),
        streams=_streams(setup),
        stragglers=stragglers,
        delivery=Delivery(scenario.delays.visibility_s, stop) if scenario.delays.visibility_s > 0 else None,
        probe=probe,
        batch_ids=rank_batches(rank, ranks, scenario.run.batches) if world is not None else range(0),
    )


def _streams(setup: Setup) -> CudaStreams | None:
    """On CUDA, a stream per batch in flight (methods with a hand-off) or per worker (the others)."""
    if setup.device.type != "cuda":
        return None
    scenario = setup.scenario
    method = scenario.definition
    count = scenario.workers.max_in_flight if method.windowed else len(scenario.worker_names())
    return CudaStreams(setup.device, count)
