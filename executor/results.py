"""What a run returns: the trace, its summary, the accuracy curve and the final parameters.

The accuracy curve costs the run little: every `batches / curve_points` finished batches the finishing
worker copies the current versions (under each layer's lock) and the buffers; the snapshots are evaluated
on the test split after the run, on a private copy of the blocks. On the CPU the copies go into tensors
allocated (and touched) before the run starts: allocating ~10 fresh parameter copies during the run cost
the MLP of benchmarks/fidelity.md 15% of its sequential throughput (page faults, a fragmented heap).
Its points are (batches finished, seconds since the start, test accuracy); the last one is the final
accuracy the trace reports.
"""

from __future__ import annotations

import copy
import threading
from dataclasses import dataclass, field

import torch

from executor.blocks import Replica
from executor.data import evaluate
from executor.setup import Setup, cpu_slots
from executor.timing import CudaStreams
from executor.workers import Context
from pdasgd.trace import Trace


@dataclass
class RunResult:
    """A finished (or stopped) run. `parameters[m]` are layer m's final tensors, in named_parameters order."""

    trace: Trace
    summary: dict
    accuracy_curve: list[tuple[int, float, float]]
    parameters: list[tuple[torch.Tensor, ...]]
    buffers: list[torch.Tensor]
    completed: bool = True
    cpu_times: dict[str, list] | None = None  # worker: (op, batch, layer, thread CPU seconds), if asked


@dataclass
class Snapshot:
    completed: int
    time_s: float
    tensors: list[tuple[torch.Tensor, ...]]
    buffers: list[torch.Tensor]


@dataclass
class Curve:
    """Snapshots of the parameters taken while the run goes (module docstring)."""

    every: int
    snapshots: list[Snapshot] = field(default_factory=list)
    pool: list[list[tuple[torch.Tensor, ...]]] = field(default_factory=list)  # preallocated parameter copies
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def maybe_take(self, setup: Setup, ctx: Context, completed: int) -> None:
        if completed % self.every:
            return
        with self._lock:
            into = self.pool.pop() if self.pool else None
        snapshot = take_snapshot(setup, ctx.streams, completed, ctx.clock.now_s(), into)
        with self._lock:
            self.snapshots.append(snapshot)


def snapshot_pool(setup: Setup, count: int) -> list[list[tuple[torch.Tensor, ...]]]:
    """`count` zeroed copies of every layer's tensors for CPU snapshots (none on CUDA: those go to host)."""
    if setup.device.type == "cuda":
        return []
    return [
        [tuple(torch.zeros_like(t) for t in layer.latest.tensors) for layer in setup.layers]
        for _ in range(count)
    ]


def take_snapshot(
    setup: Setup,
    streams: CudaStreams | None,
    completed: int,
    time_s: float,
    into: list[tuple[torch.Tensor, ...]] | None = None,
) -> Snapshot:
    if streams is None:
        targets = into or [None] * len(setup.layers)
        tensors = [layer.copy_tensors(target)[1] for layer, target in zip(setup.layers, targets, strict=True)]
        buffers = [buffer.clone() for buffer in setup.buffers]
        return Snapshot(completed, time_s, tensors, buffers)
    versions = [layer.latest for layer in setup.layers]
    # On CUDA, copy to the host so snapshots do not count in max_memory_allocated.
    tensors = []
    for version in versions:
        streams.wait_version(version)
        tensors.append(tuple(t.to("cpu") for t in version.tensors))
    return Snapshot(completed, time_s, tensors, [buffer.to("cpu") for buffer in setup.buffers])


def evaluate_snapshot(setup: Setup, snapshot: Snapshot) -> float:
    """Test accuracy of a snapshot, on a private copy of the blocks (own buffers)."""
    blocks = [copy.deepcopy(block) for block in setup.blocks]
    replica = Replica(blocks)
    device = setup.device
    for m, tensors in enumerate(snapshot.tensors):
        replica.load(m, [t.to(device) for t in tensors])
    own_buffers = [buffer for block in replica.blocks for buffer in block.buffers()]
    with torch.no_grad():
        for buffer, saved in zip(own_buffers, snapshot.buffers, strict=True):
            buffer.copy_(saved)
    return evaluate(replica.blocks, setup.dataset.test_x, setup.dataset.test_y)


def accuracy_curve(setup: Setup, curve: Curve) -> list[tuple[int, float, float]]:
    snapshots = sorted(curve.snapshots, key=lambda s: s.completed)
    return [(s.completed, s.time_s, evaluate_snapshot(setup, s)) for s in snapshots]


def build_trace(
    setup: Setup,
    ctx: Context,
    peak_bytes: int,
    accuracy: float | None,
    sequential_batch_s: float | None = None,
    **info,
) -> Trace:
    scenario = setup.scenario
    ctx.clock.finish()
    spans = sorted((s for log in ctx.logs.values() for s in log.spans()), key=lambda s: (s.start_s, s.end_s))
    slots = {ctx.device: len(ctx.streams.pool) if ctx.streams else cpu_slots()}
    for log in ctx.logs.values():
        slots.setdefault(log.device, 1)  # a rank's network: one communication op at a time
    return Trace(
        spans=spans,
        source="executor",
        method=scenario.method,
        layers=len(setup.layers),
        batches=ctx.progress.completed,
        warmup=scenario.run.warmup,
        device_slots=slots,
        sequential_batch_s=sequential_batch_s,
        memory_peak_bytes=peak_bytes,
        accuracy=accuracy,
        info={
            "device": str(setup.device),
            "threads_per_worker": scenario.train.threads_per_worker,
            "torch": torch.__version__,
            "first_batch": setup.first,
            "activation_bytes": setup.activation_bytes,
            "param_bytes": [layer.nbytes for layer in setup.layers],
            **ctx.info,
            **info,
        },
    )
