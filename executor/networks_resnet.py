"""CIFAR-style ResNets with BatchNorm, built as a list of blocks for layer-wise updates.

The blocks are the stem (conv3x3 + BN + ReLU), each residual basic block (two conv3x3 + BN, a shortcut, ReLU),
and the head (global average pool + flatten + Linear). A block is the unit of one layer-wise update.

Layouts by `depth` (He et al. 2016, section 4.2 for the CIFAR family; table 1 for 18/34):
- 6n+2 (8, 14, 20, 32, 44, 56, 110, ...): 3 stages of n basic blocks, widths `channels` x (1, 2, 4).
  `depth = 20` with the default `channels = 16` is ResNet-20 (about 0.27 M parameters).
- 18 and 34: 4 stages of (2, 2, 2, 2) and (3, 4, 6, 3) basic blocks, widths `channels` x (1, 2, 4, 8).
  `channels = 64` gives the standard ResNet-18 (about 11.2 M parameters with 10 classes) and ResNet-34.

The first stage keeps the resolution, each later stage halves it (stride 2), and the stem is a stride-1
conv3x3 without max pooling, so inputs as small as 8x8 (digits) work. Shortcuts that change shape use a
1x1 conv + BN projection (option B of the paper; ResNet-20 with option A has 2.7 k fewer parameters).
"""

from __future__ import annotations

import torch
from torch import nn

IMAGENET_LAYOUTS = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3)}


class BasicBlock(nn.Module):
    """Two conv3x3 + BatchNorm and a residual shortcut (identity, or 1x1 conv + BN when the shape changes)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.shortcut = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + self.shortcut(x))


def stage_layout(depth: int) -> tuple[int, ...]:
    """Basic blocks per stage for a ResNet of `depth` layers; ValueError for an unsupported depth."""
    if depth in IMAGENET_LAYOUTS:
        return IMAGENET_LAYOUTS[depth]
    if depth >= 8 and (depth - 2) % 6 == 0:
        n = (depth - 2) // 6
        return (n, n, n)
    raise ValueError(
        f"train.depth: resnet supports 18, 34 or 6n+2 (8, 14, 20, 32, 44, 56, 110, ...); got {depth}"
    )


def build_resnet(
    depth: int, channels: int, input_shape: tuple[int, ...], num_classes: int
) -> list[nn.Module]:
    """Blocks [stem, basic blocks stage by stage, head] of a CIFAR-style ResNet for (C, H, W) inputs."""
    if len(input_shape) != 3:
        shape = tuple(input_shape)
        raise ValueError(f"train.network: resnet needs images (channels, height, width); got shape {shape}")
    layout = stage_layout(depth)
    stem = nn.Sequential(
        nn.Conv2d(input_shape[0], channels, 3, padding=1, bias=False),
        nn.BatchNorm2d(channels),
        nn.ReLU(),
    )
    stem.block_name = "stem"
    blocks: list[nn.Module] = [stem]
    in_channels = channels
    for stage, count in enumerate(layout):
        out_channels = channels * 2**stage
        for index in range(count):
            stride = 2 if stage > 0 and index == 0 else 1
            block = BasicBlock(in_channels, out_channels, stride)
            block.block_name = f"res{stage + 1}.{index + 1}"
            blocks.append(block)
            in_channels = out_channels
    head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(in_channels, num_classes))
    head.block_name = "head"
    blocks.append(head)
    for block in blocks:
        _initialise(block)
    return blocks


def _initialise(block: nn.Module) -> None:
    """He initialisation for convolutions, BatchNorm as identity (the usual ResNet recipe)."""
    for module in block.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
