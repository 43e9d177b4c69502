"""A user network for the fault tests: an MLP whose rank `PDASGD_FAULT_RANK` misbehaves once its first
block has run `PDASGD_FAULT_AT` forwards: `raise` an error, `kill` itself (SIGKILL) or `freeze` (SIGSTOP,
as a hung node: it never answers again). Before it does, it writes the moment to `PDASGD_FAULT_STAMP`."""

from __future__ import annotations

import os
import signal
import time

from torch import nn

from executor.networks import build_mlp


class Fault(nn.Module):
    def __init__(self, block: nn.Module) -> None:
        super().__init__()
        self.block = block
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        if os.environ.get("RANK") == os.environ["PDASGD_FAULT_RANK"] and self.calls == int(
            os.environ["PDASGD_FAULT_AT"]
        ):
            with open(os.environ["PDASGD_FAULT_STAMP"], "w") as stamp:
                stamp.write(repr(time.time()))
            kind = os.environ["PDASGD_FAULT"]
            if kind == "raise":
                raise RuntimeError("a deliberate fault in rank " + os.environ["RANK"])
            os.kill(os.getpid(), signal.SIGKILL if kind == "kill" else signal.SIGSTOP)
        return self.block(x)


def blocks(input_shape, num_classes):
    import math

    mlp = build_mlp(math.prod(input_shape), 32, 2, num_classes)
    mlp[0] = Fault(mlp[0])
    mlp[0].block_name = "fc1"
    return mlp
