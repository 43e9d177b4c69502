"""Networks as lists of blocks: the unit of a layer-wise update.

`build_network` turns the `[train]` section into a list of `nn.Module` blocks, block 0 the input layer. The
runtime chains them (`x = block(x)`) and takes `F.cross_entropy(logits, y)` on the last block's output, of
shape (batch, num_classes). Built-in networks:

- `mlp`: `depth` blocks Linear + ReLU of `width` units (block 0 flattens its input), then a Linear head.
- `resnet`: a CIFAR-style ResNet with BatchNorm (networks_resnet.py): stem, each residual block, head.
- `lstm`: [embedding, LSTM layer, LSTM layer, head], all of `hidden` units; the embedding takes int64 tokens
  (batch, seq_len) and the head classifies the last time step.
- `timed`: one block per `[[model.layer]]` that sleeps the layer's costs (networks_timed.py), for checking
  the executor's schedule against the simulator's.
- `"package.module:function"`: `function(input_shape=..., num_classes=...)` returns the blocks.

Every built-in block carries a readable `block_name` ("fc1", "res2.1", "lstm1", "head"); `block_names` reads
them. Building is deterministic: `torch.manual_seed(seed)` before `build_network` gives identical parameters.

Memory per block, for the profiler: `parameter_bytes` (one version of the parameters) and `activation_bytes`
(what one batch keeps alive from a block's forward until its backward, estimated as below).
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Sequence

import torch
from torch import nn

from executor.networks_resnet import build_resnet
from executor.networks_timed import build_timed
from pdasgd.scenario import Model, Train

LSTM_LAYERS = 2


def build_network(
    train: Train,
    input_shape: tuple[int, ...],
    num_classes: int,
    vocab_size: int | None = None,
    model: Model | None = None,
) -> list[nn.Module]:
    """The blocks of `train.network` for inputs of `input_shape` (one sample) and `num_classes` classes;
    the timed network takes its layers from `model`."""
    network = train.network
    if network == "timed":
        if model is None:
            raise ValueError("train.network: timed sleeps the [model] costs, so it needs [model]")
        return build_timed(model.layers, math.prod(input_shape))
    if ":" in network:
        return build_user_network(network, input_shape, num_classes)
    if network == "mlp":
        return build_mlp(math.prod(input_shape), train.width, train.depth, num_classes)
    if network == "resnet":
        return build_resnet(train.depth, train.channels, tuple(input_shape), num_classes)
    if network == "lstm":
        if vocab_size is None:
            raise ValueError("train.network: lstm needs a token dataset with a vocabulary size")
        return build_lstm(vocab_size, train.hidden, num_classes)
    raise ValueError(f"train.network: must be mlp, resnet, lstm or 'module:function'; got {network!r}")


def build_mlp(in_features: int, width: int, depth: int, num_classes: int) -> list[nn.Module]:
    """`depth` blocks Linear(in, width) + ReLU (the first flattens its input), then a Linear head."""
    blocks: list[nn.Module] = []
    for index in range(depth):
        layers = [nn.Flatten()] if index == 0 else []
        layers += [nn.Linear(in_features if index == 0 else width, width), nn.ReLU()]
        blocks.append(_named(nn.Sequential(*layers), f"fc{index + 1}"))
    if depth > 0:
        head: nn.Module = nn.Linear(width, num_classes)
    else:
        head = nn.Sequential(nn.Flatten(), nn.Linear(in_features, num_classes))
    blocks.append(_named(head, "head"))
    return blocks


class LSTMLayer(nn.Module):
    """One LSTM layer (batch first) that returns only its output sequence (batch, seq_len, hidden)."""

    def __init__(self, input_size: int, hidden: int) -> None:
        super().__init__()
        self.lstm = nn.LSTM(input_size, hidden, num_layers=1, batch_first=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        output, _ = self.lstm(x)
        return output


class LastStep(nn.Module):
    """Classifies the last time step: (batch, seq_len, hidden) -> (batch, num_classes)."""

    def __init__(self, hidden: int, num_classes: int) -> None:
        super().__init__()
        self.linear = nn.Linear(hidden, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x[:, -1])


def build_lstm(vocab_size: int, hidden: int, num_classes: int) -> list[nn.Module]:
    """[embedding (vocab -> hidden), LSTM layer, LSTM layer, head on the last step]."""
    blocks: list[nn.Module] = [_named(nn.Embedding(vocab_size, hidden), "embedding")]
    blocks += [_named(LSTMLayer(hidden, hidden), f"lstm{index + 1}") for index in range(LSTM_LAYERS)]
    blocks.append(_named(LastStep(hidden, num_classes), "head"))
    return blocks


def build_user_network(spec: str, input_shape: tuple[int, ...], num_classes: int) -> list[nn.Module]:
    """Import `package.module:function`, call it with input_shape and num_classes, check it gives blocks."""
    module_name, _, function_name = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except Exception as error:  # ImportError, or whatever the module raises while it is imported
        raise ValueError(f"train.network: cannot import {module_name!r}: {_brief(error)}") from None
    function = getattr(module, function_name, None)
    if function is None:
        raise ValueError(f"train.network: module {module_name!r} has no {function_name!r}")
    if not callable(function):
        raise ValueError(f"train.network: {spec!r} is not callable")
    try:
        blocks = function(input_shape=tuple(input_shape), num_classes=num_classes)
    except TypeError as error:
        raise ValueError(
            f"train.network: {spec!r} must accept input_shape= and num_classes= ({_brief(error)})"
        ) from None
    except Exception as error:
        raise ValueError(f"train.network: {spec!r} raised {_brief(error)}") from None
    return _check_blocks(spec, blocks)


def _brief(error: BaseException) -> str:
    """`Type: message` of a user's error, on one line and not too long."""
    message = " ".join(str(error).split())
    return f"{type(error).__name__}: {message[:300]}" if message else type(error).__name__


def _check_blocks(spec: str, blocks: object) -> list[nn.Module]:
    if isinstance(blocks, nn.Sequential | nn.ModuleList):
        blocks = list(blocks)
    if not isinstance(blocks, list | tuple) or not blocks:
        got = f"{blocks!r:.60}"
        raise ValueError(f"train.network: {spec!r} must return a non-empty list of nn.Module; got {got}")
    for index, block in enumerate(blocks):
        if not isinstance(block, nn.Module):
            kind = type(block).__name__
            raise ValueError(f"train.network: {spec!r} returned a list whose item {index} is a {kind}")
    return list(blocks)


def _named(block: nn.Module, name: str) -> nn.Module:
    block.block_name = name
    return block


def block_names(blocks: Sequence[nn.Module]) -> list[str]:
    """Each block's `block_name`, or `block<i>` for blocks without one (user networks)."""
    return [getattr(block, "block_name", f"block{index}") for index, block in enumerate(blocks)]


# --- memory -------------------------------------------------------------------------------------


def parameter_bytes(block: nn.Module) -> int:
    """Bytes of one version of the block's parameters (shared ones once); optimizer state is not included."""
    return sum(p.numel() * p.element_size() for p in block.parameters())


def activation_bytes(blocks: Sequence[nn.Module], x: torch.Tensor) -> list[int]:
    """Estimated bytes each block keeps alive per batch of `x`, from its forward until its backward.

    A block keeps the tensors autograd saves for its backward (caught with `saved_tensors_hooks`) and its
    output, which the next block reads. Each storage counts once, for the first block that saves or produces
    it, so the sum over blocks is the activation memory of one batch in flight (the input batch included, in
    block 0). Parameters and buffers are not activations and are left out. Counts whole storages, so a saved
    view costs its base. BatchNorm running statistics are restored afterwards: measuring changes nothing.
    """
    excluded = {_storage_key(t) for block in blocks for t in [*block.parameters(), *block.buffers()]}
    buffers = [b.detach().clone() for block in blocks for b in block.buffers()]
    seen: set[tuple[int, int]] = set(excluded)
    sizes: list[int] = []
    alive: list[torch.Tensor] = []  # keeps every tensor alive, so no address is reused while measuring
    with torch.enable_grad():
        for block in blocks:
            saved: list[torch.Tensor] = []
            with torch.autograd.graph.saved_tensors_hooks(_collect(saved), lambda t: t):
                x = block(x)
            tensors = [*saved, *_tensors(x)]
            sizes.append(_new_bytes(tensors, seen))
            alive += tensors
    with torch.no_grad():
        for buffer, value in zip((b for block in blocks for b in block.buffers()), buffers, strict=True):
            buffer.copy_(value)
    return sizes


def _collect(saved: list[torch.Tensor]):
    def pack(tensor: torch.Tensor) -> torch.Tensor:
        saved.append(tensor)
        return tensor

    return pack


def _tensors(output: object) -> list[torch.Tensor]:
    if isinstance(output, torch.Tensor):
        return [output]
    if isinstance(output, list | tuple):
        return [t for item in output for t in _tensors(item)]
    return []


def _storage_key(tensor: torch.Tensor) -> tuple[int, int]:
    storage = tensor.untyped_storage()
    return (storage.data_ptr(), storage.nbytes())


def _new_bytes(tensors: list[torch.Tensor], seen: set[tuple[int, int]]) -> int:
    total = 0
    for tensor in tensors:
        try:
            key = _storage_key(tensor)
        except (RuntimeError, NotImplementedError):  # tensors without storage (e.g. some subclasses)
            continue
        if key not in seen and key[1] > 0:
            seen.add(key)
            total += key[1]
    return total
