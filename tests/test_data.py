"""pipelines.data: real datasets (sklearn digits, tiny on-disk MNIST/FashionMNIST/CIFAR10 files)."""

from __future__ import annotations

import pickle
import socket
import struct
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits
from torchvision import datasets as tvd

from pipelines.core.config import DataConfig
from pipelines.data import DataBundle, load_data, make_loader
from pipelines.core.errors import DataError

N_TRAIN, N_TEST = 20, 10


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Any attempt to open a socket fails the test loudly (nothing here may download)."""

    def refuse(*args, **kwargs):
        raise AssertionError(f"network access attempted: {args!r}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


# --------------------------------------------------------------------------------------------------
# digits


@pytest.fixture(scope="module")
def digits() -> DataBundle:
    return load_data(DataConfig(), seed=0)


def _raw_digit_rows(bundle: DataBundle) -> dict[str, list[bytes]]:
    """Undo the normalisation: raw digit pixels are the integers 0..16, so the two smallest distinct
    normalised values are raw 0 and raw 1 and fix the affine map back."""
    v0, v1 = torch.unique(bundle.train.tensors[0])[:2].tolist()
    out = {}
    for split in ("train", "val", "test"):
        x = getattr(bundle, split).tensors[0]
        raw = torch.round((x - v0) / (v1 - v0)).to(torch.uint8).reshape(len(x), -1).numpy()
        out[split] = [r.tobytes() for r in raw]
    return out


def test_digits_shapes_and_metadata(digits):
    assert (digits.name, digits.num_classes, digits.in_channels, digits.image_size) == ("digits", 10, 1, 8)
    for split in (digits.train, digits.val, digits.test):
        x, y = split.tensors
        assert x.dtype == torch.float32 and y.dtype == torch.int64
        assert x.shape[1:] == (1, 8, 8) and len(x) == len(y)


def test_digits_splits_partition_the_dataset(digits):
    rows = _raw_digit_rows(digits)
    original = load_digits()
    original_rows = [r.astype(np.uint8).tobytes() for r in original.images.reshape(len(original.images), -1)]
    # every original sample appears exactly once across the three splits ...
    assert Counter(rows["train"] + rows["val"] + rows["test"]) == Counter(original_rows)
    # ... so samples that are unique in the dataset are never shared between splits
    unique = {r for r, c in Counter(original_rows).items() if c == 1}
    train, val, test = (set(rows[s]) & unique for s in ("train", "val", "test"))
    assert not (train & val) and not (train & test) and not (val & test)
    # labels travel with their images
    label_of = {r: int(t) for r, t in zip(original_rows, original.target) if r in unique}
    for split in ("train", "val", "test"):
        labels = getattr(digits, split).tensors[1].tolist()
        assert all(label_of[r] == y for r, y in zip(rows[split], labels) if r in unique)


def test_digits_sizes_match_fractions(digits):
    cfg = DataConfig()
    n = len(digits.train) + len(digits.val) + len(digits.test)
    assert n == 1797
    assert abs(len(digits.test) - cfg.test_fraction * n) <= 1
    assert abs(len(digits.val) - cfg.val_fraction * n) <= 1


def test_digits_other_fractions():
    b = load_data(DataConfig(val_fraction=0.1, test_fraction=0.3), seed=0)
    assert abs(len(b.test) - 0.3 * 1797) <= 1 and abs(len(b.val) - 0.1 * 1797) <= 1


def test_digits_splits_are_stratified(digits):
    overall = np.bincount(load_digits().target, minlength=10) / 1797
    for split in (digits.train, digits.val, digits.test):
        counts = np.bincount(split.tensors[1].numpy(), minlength=10)
        assert (counts > 0).all()
        assert np.abs(counts - overall * len(split)).max() <= 2


def test_digits_train_is_normalised(digits):
    x = digits.train.tensors[0]
    assert abs(x.mean().item()) < 1e-5
    assert abs(x.std(correction=0).item() - 1.0) < 1e-4
    # val/test use the train statistics, so they are close to but not exactly standardised
    assert abs(digits.test.tensors[0].mean().item()) < 0.1


def test_digits_deterministic_per_seed(digits):
    again = load_data(DataConfig(), seed=0)
    other = load_data(DataConfig(), seed=1)
    for split in ("train", "val", "test"):
        for a, b in zip(getattr(digits, split).tensors, getattr(again, split).tensors):
            assert torch.equal(a, b)
    assert not torch.equal(digits.test.tensors[1], other.test.tensors[1])


def test_digits_max_train_samples(digits):
    capped = load_data(DataConfig(max_train_samples=100), seed=0)
    assert len(capped.train) == 100
    assert (np.bincount(capped.train.tensors[1].numpy(), minlength=10) > 0).all()
    # val/test (and their normalisation) do not depend on the cap
    for split in ("val", "test"):
        for a, b in zip(getattr(digits, split).tensors, getattr(capped, split).tensors):
            assert torch.equal(a, b)
    # the capped train rows are a subset of the full train rows
    full = {r.numpy().tobytes() for r in digits.train.tensors[0]}
    assert all(r.numpy().tobytes() in full for r in capped.train.tensors[0])
    # a cap above the train size changes nothing
    loose = load_data(DataConfig(max_train_samples=10_000), seed=0)
    assert torch.equal(loose.train.tensors[0], digits.train.tensors[0])


def test_make_loader(digits):
    def order(seed):
        return torch.cat([y for _, y in make_loader(digits.train, 256, shuffle=True, seed=seed)])

    loader = make_loader(digits.val, 64, shuffle=False)
    assert loader.num_workers == 0
    assert torch.equal(torch.cat([y for _, y in loader]), digits.val.tensors[1])
    assert torch.equal(order(3), order(3))
    assert not torch.equal(order(3), order(4))
    assert sorted(order(3).tolist()) == sorted(digits.train.tensors[1].tolist())
    xb, yb = next(iter(make_loader(digits.train, 32, shuffle=True)))
    assert xb.shape == (32, 1, 8, 8) and yb.shape == (32,)


# --------------------------------------------------------------------------------------------------
# torchvision datasets from tiny files in their real on-disk formats


def _images(n: int, shape: tuple[int, ...], seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(n, *shape), dtype=np.uint8)


def _labels(n: int) -> np.ndarray:
    return (np.arange(n) % 10).astype(np.uint8)


def _write_idx(path: Path, array: np.ndarray) -> None:
    """IDX ("SN3 Pascal Vincent") file: 0x00 0x00 <type 0x08=uint8> <ndim>, big-endian dims, data."""
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(header + np.ascontiguousarray(array, dtype=np.uint8).tobytes())


def write_mnist(root: Path, folder: str) -> dict[str, np.ndarray]:
    raw = root / folder / "raw"  # torchvision 0.29 reads the unzipped files from <root>/<Class>/raw/
    raw.mkdir(parents=True)
    arrays = {
        "train_x": _images(N_TRAIN, (28, 28), 1),
        "train_y": _labels(N_TRAIN),
        "test_x": _images(N_TEST, (28, 28), 2),
        "test_y": _labels(N_TEST)[::-1].copy(),
    }
    _write_idx(raw / "train-images-idx3-ubyte", arrays["train_x"])
    _write_idx(raw / "train-labels-idx1-ubyte", arrays["train_y"])
    _write_idx(raw / "t10k-images-idx3-ubyte", arrays["test_x"])
    _write_idx(raw / "t10k-labels-idx1-ubyte", arrays["test_y"])
    return arrays


CIFAR_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def write_cifar10(root: Path) -> dict[str, np.ndarray]:
    """python-version CIFAR-10 layout: pickled dicts with 'data' (N x 3072 uint8, channel-major
    rows: 1024 R, 1024 G, 1024 B) and 'labels', five train batches, a test batch and batches.meta."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    # channel-dependent offsets so per-channel statistics differ
    train_x = _images(N_TRAIN, (3, 32, 32), 3) // 2 + np.array([0, 60, 120], np.uint8)[:, None, None]
    train_y = _labels(N_TRAIN)
    test_x = _images(N_TEST, (3, 32, 32), 4)
    test_y = _labels(N_TEST)

    def dump(name: str, obj: dict) -> None:
        with open(folder / name, "wb") as f:
            pickle.dump(obj, f, protocol=2)

    per_batch = N_TRAIN // 5
    for i in range(5):
        sl = slice(i * per_batch, (i + 1) * per_batch)
        batch = {"data": train_x[sl].reshape(per_batch, -1), "labels": train_y[sl].tolist()}
        dump(f"data_batch_{i + 1}", batch)
    dump("test_batch", {"data": test_x.reshape(N_TEST, -1), "labels": test_y.tolist()})
    dump("batches.meta", {"label_names": CIFAR_NAMES, "num_vis": 3072})
    return {"train_x": train_x, "train_y": train_y, "test_x": test_x, "test_y": test_y}


def write(name: str, root: Path) -> dict[str, np.ndarray]:
    if name == "cifar10":
        return write_cifar10(root)
    return write_mnist(root, {"mnist": "MNIST", "fashion_mnist": "FashionMNIST"}[name])


def _as_nchw(x: np.ndarray) -> np.ndarray:
    return x[:, None] if x.ndim == 3 else x


def _per_channel_affine(raw: np.ndarray, norm: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Fit norm = a * raw/255 + b per channel (least squares); returns (a, b)."""
    a, b = [], []
    for c in range(raw.shape[1]):
        u = raw[:, c].ravel().astype(np.float64) / 255
        v = norm[:, c].reshape(-1).double().numpy()
        slope, intercept = np.polyfit(u, v, 1)
        a.append(slope)
        b.append(intercept)
    return np.array(a), np.array(b)


TORCHVISION_CASES = [("mnist", 1, 28), ("fashion_mnist", 1, 28), ("cifar10", 3, 32)]


@pytest.mark.parametrize("name,channels,size", TORCHVISION_CASES)
def test_torchvision_dataset_from_files(tmp_path, name, channels, size):
    written = write(name, tmp_path)
    b = load_data(DataConfig(name=name, root=str(tmp_path)), seed=0)

    assert (b.name, b.num_classes, b.in_channels, b.image_size) == (name, 10, channels, size)
    assert len(b.train) + len(b.val) == N_TRAIN and len(b.val) == round(0.15 * N_TRAIN)
    assert len(b.test) == N_TEST
    for split in (b.train, b.val, b.test):
        x, y = split.tensors
        assert x.dtype == torch.float32 and y.dtype == torch.int64
        assert x.shape[1:] == (channels, size, size)

    # test split: the official test file, in order, with its labels
    raw_test = _as_nchw(written["test_x"])
    assert b.test.tensors[1].tolist() == written["test_y"].tolist()
    a, off = _per_channel_affine(raw_test, b.test.tensors[0])
    fitted = a[None, :, None, None] * raw_test / 255 + off[None, :, None, None]
    assert np.allclose(fitted, b.test.tensors[0].numpy(), atol=1e-4)

    # the same affine map (per-channel train statistics) undoes train+val back to the written pixels
    raw_train = _as_nchw(written["train_x"])
    back = torch.cat([b.train.tensors[0], b.val.tensors[0]]).double().numpy()
    back = np.round((back - off[None, :, None, None]) / a[None, :, None, None] * 255).astype(np.uint8)
    key = lambda img, y: (img.tobytes(), int(y))  # noqa: E731
    labels = torch.cat([b.train.tensors[1], b.val.tensors[1]]).tolist()
    assert Counter(map(key, back, labels)) == Counter(map(key, raw_train, written["train_y"]))

    # normalised with train-split statistics, per channel
    xt = b.train.tensors[0]
    assert torch.allclose(xt.mean(dim=(0, 2, 3)), torch.zeros(channels), atol=1e-5)
    assert torch.allclose(xt.std(dim=(0, 2, 3), correction=0), torch.ones(channels), atol=1e-4)


@pytest.mark.parametrize("name", ["mnist", "cifar10"])
def test_torchvision_deterministic_and_capped(tmp_path, name):
    write(name, tmp_path)
    cfg = DataConfig(name=name, root=str(tmp_path))
    a, b = load_data(cfg, seed=5), load_data(cfg, seed=5)
    for split in ("train", "val", "test"):
        assert all(torch.equal(u, v) for u, v in zip(getattr(a, split).tensors, getattr(b, split).tensors))
    capped = load_data(cfg.model_copy(update={"max_train_samples": 5}), seed=5)
    assert len(capped.train) == 5
    assert torch.equal(capped.val.tensors[0], a.val.tensors[0])


def test_stock_cifar10_rejects_non_release_files(tmp_path):
    """Why pipelines.data reads CIFAR-10 through an md5-free subclass when download is off."""
    write_cifar10(tmp_path)
    with pytest.raises(RuntimeError, match="not found or corrupted"):
        tvd.CIFAR10(root=str(tmp_path), train=True, download=False)


@pytest.mark.parametrize("name", ["mnist", "fashion_mnist", "cifar10"])
def test_missing_dataset_is_a_one_line_data_error(tmp_path, name):
    root = tmp_path / "nothing-here"
    with pytest.raises(DataError) as err:
        load_data(DataConfig(name=name, root=str(root)), seed=0)
    msg = str(err.value)
    assert "\n" not in msg
    assert f"data.name={name}" in msg and f"data.root={str(root)!r}" in msg and "data.download: true" in msg
    assert not root.exists()  # nothing was created either


def test_partially_missing_files_are_named(tmp_path):
    write_mnist(tmp_path, "MNIST")
    (tmp_path / "MNIST" / "raw" / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(DataError, match=r"missing 1 of 4 .*t10k-labels-idx1-ubyte"):
        load_data(DataConfig(name="mnist", root=str(tmp_path)), seed=0)


def test_corrupt_file_is_a_data_error(tmp_path):
    write_cifar10(tmp_path)
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").write_bytes(b"\x80\x02not a pickle")
    with pytest.raises(DataError, match=r"data.name=cifar10: could not read dataset files"):
        load_data(DataConfig(name="cifar10", root=str(tmp_path)), seed=0)


def test_out_of_range_labels_are_a_data_error(tmp_path):
    write_mnist(tmp_path, "MNIST")
    _write_idx(tmp_path / "MNIST" / "raw" / "t10k-labels-idx1-ubyte", np.full(N_TEST, 12, np.uint8))
    with pytest.raises(DataError, match=r"outside 0\.\.9"):
        load_data(DataConfig(name="mnist", root=str(tmp_path)), seed=0)


def test_dataset_names_match_the_torchvision_table():
    from pipelines import data
    from pipelines.data import torchvision_sets as tv_datasets

    assert tuple(tv_datasets.TORCHVISION) == data.TORCHVISION_DATASETS
