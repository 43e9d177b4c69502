"""Networks as lists of blocks: layouts, shapes, parameter counts, user networks, memory estimates."""

from __future__ import annotations

import textwrap

import pytest

torch = pytest.importorskip("torch")

from executor.networks import (  # noqa: E402
    activation_bytes,
    block_names,
    build_network,
    parameter_bytes,
)
from executor.networks_resnet import stage_layout  # noqa: E402
from pdasgd.scenario import Train  # noqa: E402


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def chain(blocks, x):
    for block in blocks:
        x = block(x)
    return x


def n_parameters(blocks) -> int:
    return sum(p.numel() for block in blocks for p in block.parameters())


# --- mlp ------------------------------------------------------------------------------------------


def test_mlp_has_depth_plus_one_blocks_and_flattens_its_input():
    blocks = build_network(Train(network="mlp", width=32, depth=3), (1, 8, 8), 10)
    assert len(blocks) == 4
    assert block_names(blocks) == ["fc1", "fc2", "fc3", "head"]
    assert chain(blocks, torch.randn(5, 1, 8, 8)).shape == (5, 10)
    assert n_parameters(blocks) == (64 * 32 + 32) + 2 * (32 * 32 + 32) + (32 * 10 + 10)


def test_mlp_block_outputs_have_the_width():
    blocks = build_network(Train(network="mlp", width=16, depth=2), (20,), 3)
    x = torch.randn(4, 20)
    assert blocks[0](x).shape == (4, 16)
    assert blocks[1](blocks[0](x)).shape == (4, 16)


# --- resnet ---------------------------------------------------------------------------------------


def test_resnet20_layout_and_parameter_count():
    blocks = build_network(Train(network="resnet", depth=20, channels=16), (3, 32, 32), 10)
    assert len(blocks) == 1 + 9 + 1
    assert block_names(blocks)[:3] == ["stem", "res1.1", "res1.2"]
    assert block_names(blocks)[-2:] == ["res3.3", "head"]
    assert 0.26e6 < n_parameters(blocks) < 0.28e6
    assert chain(blocks, torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_resnet18_with_64_channels_is_the_standard_size():
    blocks = build_network(Train(network="resnet", depth=18, channels=64), (3, 32, 32), 10)
    assert len(blocks) == 1 + 8 + 1
    assert 11.1e6 < n_parameters(blocks) < 11.3e6


@pytest.mark.parametrize(
    ("depth", "layout"),
    [(8, (1, 1, 1)), (20, (3, 3, 3)), (56, (9, 9, 9)), (18, (2, 2, 2, 2)), (34, (3, 4, 6, 3))],
)
def test_resnet_stage_layouts(depth, layout):
    assert stage_layout(depth) == layout


@pytest.mark.parametrize("depth", [2, 10, 19, 101])
def test_resnet_rejects_unsupported_depth(depth):
    with pytest.raises(ValueError, match=r"train.depth: resnet supports 18, 34 or 6n\+2"):
        build_network(Train(network="resnet", depth=depth), (3, 32, 32), 10)


@pytest.mark.parametrize("depth", [18, 20])
def test_resnet_works_on_small_single_channel_images(depth):
    blocks = build_network(Train(network="resnet", depth=depth, channels=8), (1, 8, 8), 10)
    assert chain(blocks, torch.randn(3, 1, 8, 8)).shape == (3, 10)


def test_resnet_needs_image_inputs():
    with pytest.raises(ValueError, match="resnet needs images"):
        build_network(Train(network="resnet", depth=20), (64,), 10)


# --- lstm -----------------------------------------------------------------------------------------


def test_lstm_blocks_and_shapes():
    blocks = build_network(Train(network="lstm", hidden=24), (30,), 5, vocab_size=17)
    assert block_names(blocks) == ["embedding", "lstm1", "lstm2", "head"]
    tokens = torch.randint(0, 17, (4, 30))
    sequence = blocks[1](blocks[0](tokens))
    assert sequence.shape == (4, 30, 24)
    assert chain(blocks, tokens).shape == (4, 5)
    assert blocks[1].lstm.num_layers == 1 and blocks[1].lstm.batch_first


def test_lstm_needs_a_vocabulary():
    with pytest.raises(ValueError, match="lstm needs a token dataset"):
        build_network(Train(network="lstm"), (30,), 5)


# --- user networks --------------------------------------------------------------------------------


USER_MODULE = """
from torch import nn

def good(input_shape, num_classes):
    return [nn.Flatten(), nn.Linear(input_shape[0], num_classes)]

def sequential(input_shape, num_classes):
    return nn.Sequential(nn.Linear(input_shape[0], 4), nn.Linear(4, num_classes))

def empty(input_shape, num_classes):
    return []

def not_modules(input_shape, num_classes):
    return [nn.Linear(2, 2), "relu"]

def single(input_shape, num_classes):
    return nn.Linear(2, 2)

not_a_function = 3
"""


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    (tmp_path / "pdasgd_user_net.py").write_text(textwrap.dedent(USER_MODULE))
    monkeypatch.syspath_prepend(str(tmp_path))
    return "pdasgd_user_net"


def test_user_network_is_imported_and_called(user_module):
    blocks = build_network(Train(network=f"{user_module}:good"), (6,), 3)
    assert len(blocks) == 2
    assert block_names(blocks) == ["block0", "block1"]
    assert chain(blocks, torch.randn(2, 6)).shape == (2, 3)


def test_user_network_may_return_a_sequential(user_module):
    blocks = build_network(Train(network=f"{user_module}:sequential"), (6,), 3)
    assert len(blocks) == 2


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("no_such_module_xyz:f", "train.network: cannot import 'no_such_module_xyz'"),
        ("{m}:missing", "train.network: module 'pdasgd_user_net' has no 'missing'"),
        ("{m}:not_a_function", "is not callable"),
        ("{m}:empty", "must return a non-empty list of nn.Module"),
        ("{m}:single", "must return a non-empty list of nn.Module"),
        ("{m}:not_modules", "item 1 is a str"),
    ],
)
def test_user_network_errors_are_one_line(user_module, spec, message):
    with pytest.raises(ValueError, match=message) as error:
        build_network(Train(network=spec.format(m=user_module)), (6,), 3)
    assert "\n" not in str(error.value)


def test_unknown_network_name():
    with pytest.raises(ValueError, match="train.network"):
        build_network(Train(network="transformer"), (6,), 3)


# --- determinism and memory -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("train", "shape", "vocab"),
    [
        (Train(network="mlp", width=16, depth=2), (8,), None),
        (Train(network="resnet", depth=8, channels=4), (3, 8, 8), None),
        (Train(network="lstm", hidden=8), (5,), 11),
    ],
)
def test_build_is_deterministic_under_a_seed(train, shape, vocab):
    def state():
        torch.manual_seed(7)
        blocks = build_network(train, shape, 4, vocab_size=vocab)
        return [t for block in blocks for t in block.state_dict().values()]

    first, second = state(), state()
    assert all(torch.equal(a, b) for a, b in zip(first, second, strict=True))


def test_parameter_bytes_counts_float32_parameters():
    blocks = build_network(Train(network="mlp", width=16, depth=1), (8,), 4)
    assert [parameter_bytes(b) for b in blocks] == [(8 * 16 + 16) * 4, (16 * 4 + 4) * 4]


def test_activation_bytes_of_mlp_scale_linearly_with_batch():
    blocks = build_network(Train(network="mlp", width=32, depth=3), (20,), 10)
    small = activation_bytes(blocks, torch.randn(8, 20))
    large = activation_bytes(blocks, torch.randn(32, 20))
    assert len(small) == len(blocks) and all(size > 0 for size in small)
    assert large == [4 * size for size in small]
    # block 0 keeps its input batch and its ReLU output; the head keeps its logits
    assert small[0] == 8 * 20 * 4 + 8 * 32 * 4
    assert small[-1] == 8 * 10 * 4


@pytest.mark.parametrize(
    ("train", "x", "vocab"),
    [
        (Train(network="resnet", depth=8, channels=4), torch.randn(4, 3, 8, 8), None),
        (Train(network="lstm", hidden=8), torch.randint(0, 11, (4, 5)), 11),
    ],
)
def test_activation_bytes_are_positive_and_leave_the_network_unchanged(train, x, vocab):
    blocks = build_network(train, tuple(x.shape[1:]), 4, vocab_size=vocab)
    before = [t.clone() for block in blocks for t in block.state_dict().values()]
    sizes = activation_bytes(blocks, x)
    after = [t for block in blocks for t in block.state_dict().values()]
    assert len(sizes) == len(blocks) and all(size > 0 for size in sizes)
    assert all(torch.equal(a, b) for a, b in zip(before, after, strict=True))
