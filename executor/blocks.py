"""One block's forward and backward: the code path the runtime and the profiler share.

The graph of a batch is cut at block boundaries. Block m's forward reads a version of its parameters, makes
detached leaves of them (`leaf = tensor.detach().requires_grad_()`), and runs on a detached copy of block
m-1's output that requires grad. Its backward is one `torch.autograd.grad` call from the block's output (the
loss, for the last block) back to its leaves and its input:

    (param grads, grad of input) = autograd.grad(output, [*leaves, input], grad of output)

so the backward worker visits blocks from the output down, gets each layer's gradient as soon as that block
is done (a layer-wise update can follow at once), and never touches `.grad`: several backward workers share
no gradient state.

A `Replica` is one worker's private copy of the module objects (parameters and buffers shared, not copied):
putting a leaf into a module's `_parameters` slot is then safe while another worker runs the same block.
It costs a few dict writes per block, where `torch.func.functional_call` costs about 40 us (docs/platform.md:
per-layer Python overhead decides the 2-core speed-up). nn.LSTM notices swapped weights by itself.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from itertools import chain

import torch
import torch.nn.functional as F
from torch import nn


class Replica:
    """A worker's own module objects for `blocks`, sharing their parameters and buffers."""

    def __init__(self, blocks: Sequence[nn.Module]) -> None:
        shared = {id(t): t for block in blocks for t in chain(block.parameters(), block.buffers())}
        self.blocks = [copy.deepcopy(block, dict(shared)) for block in blocks]
        self.slots = [parameter_slots(block) for block in self.blocks]

    def forward(
        self, m: int, x: torch.Tensor, tensors: Sequence[torch.Tensor]
    ) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Run block m on `x` with leaves of `tensors`; return (leaves, output)."""
        leaves = [tensor.detach().requires_grad_() for tensor in tensors]
        for (module, name), leaf in zip(self.slots[m], leaves, strict=True):
            module._parameters[name] = leaf
        return leaves, self.blocks[m](x)

    def load(self, m: int, tensors: Sequence[torch.Tensor]) -> None:
        """Put plain tensors (no leaves) into block m, e.g. to evaluate a snapshot."""
        for (module, name), tensor in zip(self.slots[m], tensors, strict=True):
            module._parameters[name] = tensor


def parameter_slots(block: nn.Module) -> list[tuple[nn.Module, str]]:
    """(owning module, attribute) of each parameter, in `named_parameters` order."""
    return [
        (block.get_submodule(full.rpartition(".")[0]), full.rpartition(".")[2])
        for full, _ in block.named_parameters()
    ]


def block_input(x: torch.Tensor, m: int) -> torch.Tensor:
    """Block m's input: the batch itself for block 0, else a detached leaf of block m-1's output."""
    if m == 0 or not x.is_floating_point():
        return x
    return x.detach().requires_grad_()


def loss_of(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits, y)


def backward_block(
    output: torch.Tensor,
    grad_output: torch.Tensor | None,
    leaves: Sequence[torch.Tensor],
    x_in: torch.Tensor,
) -> tuple[list[torch.Tensor], torch.Tensor | None]:
    """Gradients of block params and of its input, from its output (the loss when `grad_output` is None)."""
    wants_input = x_in.requires_grad
    inputs = [*leaves, x_in] if wants_input else list(leaves)
    if not inputs:
        return [], None
    grads = torch.autograd.grad(output, inputs, grad_output, allow_unused=True, materialize_grads=True)
    if wants_input:
        return list(grads[:-1]), grads[-1]
    return list(grads), None


def owned(grads: Sequence[torch.Tensor], grad_input: torch.Tensor | None) -> list[bool]:
    """Which parameter gradients own their memory alone (no other returned gradient shares its storage).

    An update may write the new parameters into such a gradient: its cache lines are warm, which makes an
    out-of-place update nearly as cheap as an in-place one (5.8 against 8.6 ms per batch on the MLP 8x1024).
    """
    tensors = [*grads, grad_input] if grad_input is not None else list(grads)
    storages = [t.untyped_storage().data_ptr() for t in tensors]
    return [
        grad.is_contiguous() and storages.count(storage) == 1
        for grad, storage in zip(grads, storages, strict=False)
    ]


def warm_up() -> None:
    """Pay torch's one-time costs before a run's clock starts.

    The first `autograd.grad` call with `grad_outputs` imports sympy (through torch.fx's symbolic shapes):
    0.3-0.7 s that would otherwise land in the first batch's backward span.
    """
    x = torch.ones(2, requires_grad=True)
    torch.autograd.grad(x * 2, [x], torch.ones(2))
