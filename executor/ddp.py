"""ddp across ranks: torch's DistributedDataParallel itself, its gradient buckets all-reduced by the rank's
communicator, traced op by op like every other method.

The rank's blocks become one `nn.Sequential` whose parameters are the tensors of the layers' current
versions (`executor.params`), wrapped in `DistributedDataParallel` with `bucket_cap_mb =
distributed.bucket_mb` and `broadcast_buffers=False` (BatchNorm statistics stay per rank). A comm hook
hands each bucket to the communicator (`executor.communicator`), which waits the rank's [[delays.comm]]
delay and the modelled network's cost, all-reduces the bucket on its own process group and divides by the
ranks, exactly DDP's default averaging; so the worker thread never calls torch.distributed and the comm
spans say when each bucket went. One worker per rank runs each batch:

- forward: `ddp(x)` then the loss; hooks on the blocks time each block's forward (version read: the
  layer's current version);
- backward: `loss.backward()`; block m's backward runs from the gradient of its output to the last of its
  parameters' gradients (hooks on both); DDP's buckets are all-reduced meanwhile and `backward` returns
  once the last is in, the worker idle while it waits;
- update: each layer, output first, through `VersionedLayer.apply` with the averaged `.grad`s (so
  versions count updates as everywhere else), after which the module's parameters are the new version's
  tensors.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from executor.blocks import loss_of
from executor.communicator import Communicator
from executor.links import check
from executor.timing import waited
from executor.workers import Context, PendingBatch, Worker, _on_stream
from executor.world import OwnedGroup, World
from pdasgd.methods import BACKWARD, FORWARD, Step


class DdpModel:
    """The rank's DistributedDataParallel module over the versioned layers (module docstring)."""

    def __init__(
        self, ctx: Context, world: World, communicator: Communicator, bucket_mb: float, nbytes
    ) -> None:
        self.ctx = ctx
        self.world = world
        self.communicator = communicator
        self.model_bytes: list[int] = nbytes  # per layer, for the modelled network's cost
        self.params = [list(block.parameters()) for block in ctx.blocks]
        self._bind()
        options: dict[str, Any] = {"device_ids": [world.device]} if world.device.type == "cuda" else {}
        options |= _no_buffer_sync()
        self.ddp = DistributedDataParallel(
            nn.Sequential(*ctx.blocks), process_group=world.ddp, bucket_cap_mb=bucket_mb, **options
        )
        self.layer_of = {id(p): m for m, params in enumerate(self.params) for p in params}
        self.ddp.register_comm_hook(None, self._hook)
        self.batch: int | None = None
        self.marks: dict[tuple[str, int], Any] = {}
        self.on_first_op: Callable[[], None] | None = None
        self._register_hooks()

    def _bind(self) -> None:
        """The module's parameters hold the layers' current tensors."""
        for layer, params in zip(self.ctx.layers, self.params, strict=True):
            for param, tensor in zip(params, layer.current.tensors, strict=True):
                if param.data is not tensor:
                    param.data = tensor

    def _register_hooks(self) -> None:
        stamp = self.ctx.clock.stamp
        for m, block in enumerate(self.ctx.blocks):
            block.register_forward_pre_hook(self._before(m, stamp))
            block.register_forward_hook(self._after(m, stamp))
            for param in self.params[m]:
                param.register_post_accumulate_grad_hook(self._accumulated(m, stamp))

    def _before(self, m: int, stamp) -> Callable:
        def hook(module: nn.Module, args: Any) -> None:
            self.marks[("forward", m)] = stamp()
            if m == 0 and self.on_first_op is not None:
                self.on_first_op()

        return hook

    def _after(self, m: int, stamp) -> Callable:
        def hook(module: nn.Module, args: Any, output: torch.Tensor) -> None:
            self.marks[("forward_end", m)] = stamp()
            if output.requires_grad:
                output.register_hook(lambda grad: self.marks.__setitem__(("backward", m), stamp()))

        return hook

    def _accumulated(self, m: int, stamp) -> Callable:
        def hook(param: torch.Tensor) -> None:
            self.marks[("backward_end", m)] = stamp()

        return hook

    def _hook(self, state, bucket):  # unannotated: DDP checks the annotations it finds
        """DDP's comm hook: the bucket goes to the communicator; DDP waits on the future."""
        buffer = bucket.buffer()
        layers = {self.layer_of[id(p)] for p in bucket.parameters()}
        cuda = buffer.is_cuda
        future = torch.futures.Future(devices=[buffer.device]) if cuda else torch.futures.Future()
        ready = None
        if cuda:
            ready = torch.cuda.Event()
            ready.record()
        ranks = self.world.size

        def reduce(group: OwnedGroup) -> torch.Tensor:
            group.all_reduce(buffer)
            return buffer.div_(ranks)

        nbytes = sum(self.model_bytes[m] for m in layers)
        return self.communicator.submit(reduce, nbytes, self.batch, min(layers), future, ready)

    def run(self, worker: Worker, item: PendingBatch) -> None:
        """One batch: forward, backward with the buckets' all-reduce, update (module docstring)."""
        ctx, layers, top = self.ctx, self.ctx.layers, len(self.ctx.layers) - 1
        self.batch, self.marks = item.index, {}
        self.on_first_op = lambda: worker._owed(item)
        ctx.current[worker.name] = (Step(FORWARD, 0), item.index, time.perf_counter())
        x, y = ctx.source.get(item.index)
        versions = [layer.version for layer in layers]
        loss = loss_of(self.ddp(x), y)
        self.marks[("forward_end", top)] = ctx.clock.stamp()
        for m in range(top + 1):
            worker.log.add(
                "forward",
                item.index,
                m,
                self.marks[("forward", m)],
                self.marks[("forward_end", m)],
                versions[m],
            )
        item.loss = float(loss.detach())
        worker.check_loss(item)
        check(ctx.stop)
        ctx.current[worker.name] = (Step(BACKWARD, top), item.index, time.perf_counter())
        self.marks[("backward", top)] = ctx.clock.stamp()
        loss.backward()
        waited()  # the worker waited for the last bucket: its next timed op starts now, not at its last end
        for m in reversed(range(top + 1)):
            start = self.marks.get(("backward", m), self.marks[("backward", top)])
            worker.log.add("backward", item.index, m, start, self.marks[("backward_end", m)])
        for m in reversed(range(top + 1)):
            grads = [param.grad for param in self.params[m]]
            item.grads[m] = (grads, [False] * len(grads))
            worker.update(item, m, True)
            for param in self.params[m]:
                param.grad = None
        self._bind()


def _no_buffer_sync() -> dict[str, bool]:
    """DDP's argument that keeps buffers per rank in the forward: `forward_sync_buffers` where this torch
    has it (2.13 deprecates `broadcast_buffers`), else `broadcast_buffers`."""
    parameters = inspect.signature(DistributedDataParallel.__init__).parameters
    key = "forward_sync_buffers" if "forward_sync_buffers" in parameters else "broadcast_buffers"
    return {key: False}


def ddp_worker(ctx: Context, name: str, role: Any, index: int, slot: int) -> None:
    """The loop of a ddp rank's worker: its batches in order, each through `DdpModel.run`."""
    worker = Worker(ctx, name, ())
    for batch in ctx.batch_ids[index :: role.count]:
        check(ctx.stop)
        item = PendingBatch(batch)
        with _on_stream(ctx, slot):
            worker.straggle(item)
            ctx.ddp.run(worker, item)
        role.done(worker, item)
