"""Checks on the network before a run starts: it fits in memory, and its blocks run forward and backward.

Both fail in one line naming the `[train]` field, before any batch is timed:

- `check_fits`: the built-in networks are built once on PyTorch's meta device (shapes only, no memory), so
  the bytes of their parameters are known before anything is allocated. A run holds several copies of
  them (the current and the latest version, momentum, gradients, the accuracy curve's snapshots); if those
  copies would not fit in the machine's memory, the field that sizes the network is named (an MLP's
  `train.width` of 65536 needs 17 GiB per layer).
- `check_blocks_run`: the blocks run forward on one real batch, the last block's output must be logits of
  shape (batch, classes), and one backward must give a gradient for every parameter. A user network
  (`train.network = "module:function"`) that raises, returns the wrong shape or cannot be differentiated is
  reported here as `train.network: ...`, not as a worker's traceback in the middle of a run. BatchNorm
  running statistics are restored afterwards: the check changes nothing.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import torch
from torch import nn

from pdasgd.scenario import Train

SIZING_FIELD = {"mlp": "train.width", "resnet": "train.channels", "lstm": "train.hidden"}
MEMORY_FRACTION = 0.8  # of the machine's memory a run may plan to use for parameters


def machine_bytes() -> int:
    """The machine's physical memory."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # not Linux: no limit known
        return 2**62


def check_fits(train: Train, build, copies: int) -> None:
    """ValueError naming the sizing field when `copies` copies of a built-in network's parameters would
    not fit in memory; `build()` builds the network's blocks (called under the meta device)."""
    if train.network not in SIZING_FIELD:
        return  # the timed network is tiny; a user's network is the user's to size
    with torch.device("meta"):
        blocks = build()
    nbytes = sum(p.numel() * p.element_size() for block in blocks for p in block.parameters())
    available = MEMORY_FRACTION * machine_bytes()
    if nbytes * copies > available:
        raise ValueError(
            f"{SIZING_FIELD[train.network]}: this {train.network} holds {nbytes / 2**30:.3g} GiB of "
            f"parameters, {copies} copies of which a run keeps; this machine has "
            f"{machine_bytes() / 2**30:.3g} GiB"
        )


def check_blocks_run(
    blocks: Sequence[nn.Module], x: torch.Tensor, y: torch.Tensor, num_classes: int, spec: str
) -> None:
    """ValueError naming train.network when the blocks do not turn batch `x` into (batch, classes) logits
    with a gradient for every parameter."""
    saved = [buffer.detach().clone() for block in blocks for buffer in block.buffers()]
    try:
        _forward_and_backward(blocks, x, y, num_classes)
    except ValueError:
        raise
    except Exception as error:  # the user's code: say what failed, in one line
        message = " ".join(str(error).split()) or type(error).__name__
        raise ValueError(
            f"train.network: {spec!r} fails on a batch of shape {tuple(x.shape)}: "
            f"{type(error).__name__}: {message[:300]}"
        ) from None
    finally:
        with torch.no_grad():
            for buffer, value in zip((b for block in blocks for b in block.buffers()), saved, strict=True):
                buffer.copy_(value)


def _forward_and_backward(
    blocks: Sequence[nn.Module], x: torch.Tensor, y: torch.Tensor, classes: int
) -> None:
    with torch.enable_grad():
        out = x
        for block in blocks:
            out = block(out)
        if not isinstance(out, torch.Tensor) or out.shape != (len(x), classes) or not out.is_floating_point():
            got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise ValueError(
                f"train.network: the last block must give float logits of shape ({len(x)}, {classes}), "
                f"got {got}"
            )
        params = [p for block in blocks for p in block.parameters() if p.requires_grad]
        loss = nn.functional.cross_entropy(out, y)
        if params:
            torch.autograd.grad(loss, params, allow_unused=True)
