"""The timed network: blocks that sleep their `[model]` costs instead of computing.

`network = "timed"` builds one block per `[[model.layer]]`. Block m's forward sleeps that layer's
`forward_s`, its backward (inside `autograd.grad`) sleeps `backward_s`, and the worker that applies its
update sleeps `update_s` first (the block's `update_cost_s`), each counted from the start of the worker's op
(`executor.timing.burn_from_start`), so the op's span lasts its cost. Sleeping threads release the GIL and
the cores, so the executor's threads behave as if every worker had a device of its own, even on a 2-core
machine: a run of the timed network is the executor's schedule with known op times, which the simulator
must predict
(tests/test_cross_engine.py). The sleeps are exact to a few microseconds (`executor.timing.burn`).

Each block adds a learnable bias to its input, `y = x + weight`, so it has a parameter to version and
update, and gradients flow; the data are synthetic features of width `num_classes` (`executor.data`), and
the last block's output is the logits.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from executor.timing import burn_from_start


class _Sleep(torch.autograd.Function):
    """x + weight, sleeping `forward_s` in the forward and `backward_s` in the backward."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, forward_s: float, backward_s: float):
        ctx.backward_s = backward_s
        burn_from_start(forward_s)
        return x + weight

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        burn_from_start(ctx.backward_s)
        return grad, grad.sum(dim=0), None, None


class TimedBlock(nn.Module):
    """One layer of the timed network: its costs and one bias of `width` values."""

    def __init__(self, width: int, forward_s: float, backward_s: float, update_s: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(width))
        self.forward_s = forward_s
        self.backward_s = backward_s
        self.update_cost_s = update_s

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _Sleep.apply(x, self.weight, self.forward_s, self.backward_s)


def build_timed(layers: Sequence, width: int) -> list[nn.Module]:
    """A TimedBlock per layer (`pdasgd.scenario.Layer`s), named as the layers."""
    blocks: list[nn.Module] = []
    for layer in layers:
        block = TimedBlock(width, layer.forward_s, layer.backward_s, layer.update_s)
        block.block_name = layer.name
        blocks.append(block)
    return blocks
