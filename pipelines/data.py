"""Datasets as in-memory tensors.

:func:`load_data` turns a :class:`~pipelines.config.DataConfig` into a :class:`DataBundle` of three
``TensorDataset`` splits (float32 images ``[N, C, H, W]``, normalised per channel with statistics of
the train split only; int64 labels). Every dataset is small enough to live in memory, so each split
is converted to one tensor once and no per-item transforms run during training.

* ``digits``: scikit-learn's bundled 8x8 digits (no files, no network). Seeded stratified split of
  all samples into test (``test_fraction``), val (``val_fraction``) and train (the rest).
* ``mnist``, ``fashion_mnist``, ``cifar10``: torchvision's own dataset classes and file parsers,
  reading ``data.root`` (downloading only when ``data.download`` is true). Val is a seeded
  stratified split of the official train split; test is the official test split.

``max_train_samples`` caps the train split (seeded, stratified where possible) after val/test have
been carved out, and the normalisation statistics come from the uncapped train split, so val and
test tensors are identical whatever the cap is.

All randomness comes from a local ``numpy.random.RandomState(seed)`` (no global RNG state is read
or written), so the same seed always gives the same splits, also when called from several threads.
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from sklearn.model_selection import train_test_split
from torch.utils.data import DataLoader, TensorDataset
from torchvision import datasets as tvd

from pipelines.config import DataConfig

__all__ = ["DataBundle", "DataError", "load_data", "make_loader"]


class DataError(RuntimeError):
    """A dataset problem the user can fix (missing files, failed download), phrased as one line."""


@dataclass(frozen=True)
class DataBundle:
    train: TensorDataset  # float32 images [N, C, H, W] normalised, int64 labels
    val: TensorDataset
    test: TensorDataset
    num_classes: int
    in_channels: int
    image_size: int  # H (== W)
    name: str


# --------------------------------------------------------------------------------------------------
# torchvision-backed datasets


class _PresentCIFAR10(tvd.CIFAR10):
    """torchvision's CIFAR10, accepting the batch files it finds without comparing their md5.

    ``CIFAR10`` insists that every batch file and ``batches.meta`` match the md5 of the official
    release, even when nothing is downloaded. That makes it impossible to read any other file in the
    same format (a test fixture, a subset). This subclass changes *data only*: the expected md5s
    are ``None``, which torchvision's own ``check_integrity`` treats as "the file must exist". All
    parsing (pickle batches, HWC layout, label names from the meta file) is torchvision's code.

    It is used only when ``data.download`` is false, i.e. for files the user placed there. When
    ``data.download`` is true the stock ``CIFAR10`` runs instead, with full md5 verification of the
    archive and of every extracted file (and a re-download if they do not match).
    """

    train_list = [[name, None] for name, _ in tvd.CIFAR10.train_list]
    test_list = [[name, None] for name, _ in tvd.CIFAR10.test_list]
    meta = {**tvd.CIFAR10.meta, "md5": None}


# MNIST-family classes already check only that the (unzipped) raw files exist when download is
# off; md5 is verified on the .gz archives when they are downloaded.
_TORCHVISION = {
    "mnist": tvd.MNIST,
    "fashion_mnist": tvd.FashionMNIST,
    "cifar10": tvd.CIFAR10,
}

# Errors torchvision's parsers raise on truncated or malformed files.
_PARSE_ERRORS = (
    OSError,
    ValueError,
    TypeError,
    KeyError,
    IndexError,
    EOFError,
    AssertionError,
    RuntimeError,
    pickle.UnpicklingError,
)


def _expected_files(name: str) -> list[str]:
    """Files (relative to data.root) that torchvision reads for dataset ``name``."""
    cls = _TORCHVISION[name]
    if issubclass(cls, tvd.CIFAR10):
        names = [f for f, _ in cls.train_list + cls.test_list] + [cls.meta["filename"]]
        return [os.path.join(cls.base_folder, f) for f in names]
    return [os.path.join(cls.__name__, "raw", os.path.splitext(f)[0]) for f, _ in cls.resources]


def _missing_message(cfg: DataConfig) -> str | None:
    expected = _expected_files(cfg.name)
    missing = [f for f in expected if not os.path.isfile(os.path.join(cfg.root, f))]
    if not missing:
        return None
    fix = "set data.download: true, or place the files there"
    if len(missing) == len(expected):
        return f"data.name={cfg.name}: no dataset files under data.root={cfg.root!r} ({fix})"
    shown = ", ".join(missing[:3]) + (", ..." if len(missing) > 3 else "")
    return (
        f"data.name={cfg.name}: missing {len(missing)} of {len(expected)} dataset files under "
        f"data.root={cfg.root!r}: {shown} ({fix})"
    )


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _open_torchvision(cfg: DataConfig, train: bool) -> tvd.VisionDataset:
    cls = _TORCHVISION[cfg.name]
    if cls is tvd.CIFAR10 and not cfg.download:
        cls = _PresentCIFAR10
    try:
        return cls(root=cfg.root, train=train, download=cfg.download)
    except _PARSE_ERRORS as exc:
        if not cfg.download:
            missing = _missing_message(cfg)
            if missing is not None:
                raise DataError(missing) from None
        what = "could not download or read" if cfg.download else "could not read"
        raise DataError(
            f"data.name={cfg.name}: {what} dataset files under data.root={cfg.root!r} "
            f"({type(exc).__name__}: {_first_line(exc)})"
        ) from None


def _torchvision_arrays(ds: tvd.VisionDataset) -> tuple[torch.Tensor, torch.Tensor]:
    """Whole split as (uint8 images [N, C, H, W], int64 labels)."""
    data = torch.as_tensor(np.asarray(ds.data))
    if data.ndim == 3:  # MNIST-family: [N, H, W]
        images = data.unsqueeze(1)
    else:  # CIFAR: [N, H, W, C]
        images = data.permute(0, 3, 1, 2)
    labels = torch.as_tensor(np.asarray(ds.targets), dtype=torch.int64)
    return images.contiguous(), labels


# --------------------------------------------------------------------------------------------------
# splitting and normalisation


def _can_stratify(labels: np.ndarray, n_first: int, n_second: int) -> bool:
    _, counts = np.unique(labels, return_counts=True)
    n_classes = len(counts)
    return counts.min() >= 2 and n_first >= n_classes and n_second >= n_classes


def _split(
    indices: np.ndarray, labels: np.ndarray, n_take: int, rng: np.random.RandomState
) -> tuple[np.ndarray, np.ndarray]:
    """Split ``indices`` into (rest, taken) with ``len(taken) == n_take``; stratified where possible."""
    n_rest = len(indices) - n_take
    stratify = labels[indices] if _can_stratify(labels[indices], n_rest, n_take) else None
    rest, taken = train_test_split(indices, test_size=n_take, random_state=rng, stratify=stratify)
    return np.sort(rest), np.sort(taken)


def _count(fraction: float, n: int) -> int:
    """Samples for ``fraction`` of ``n``: at least 1 and leaving at least 1."""
    return min(max(1, round(fraction * n)), n - 1)


def _cap(indices: np.ndarray, labels: np.ndarray, cap: int | None, rng: np.random.RandomState) -> np.ndarray:
    if cap is None or cap >= len(indices):
        return indices
    _, kept = _split(indices, labels, cap, rng)
    return kept


def _normalise(images: torch.Tensor, train_idx: np.ndarray) -> torch.Tensor:
    """Float images standardised per channel with mean/std of the train rows only."""
    train = images[torch.as_tensor(train_idx)]
    var, mean = torch.var_mean(train, dim=(0, 2, 3), correction=0, keepdim=True)
    std = var.sqrt()
    std = torch.where(std > 0, std, torch.ones_like(std))
    return ((images - mean) / std).contiguous()


def _subset(images: torch.Tensor, labels: torch.Tensor, idx: np.ndarray) -> TensorDataset:
    t = torch.as_tensor(idx, dtype=torch.int64)
    return TensorDataset(images[t].contiguous(), labels[t].contiguous())


def _check_labels(cfg: DataConfig, labels: torch.Tensor, num_classes: int) -> None:
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        raise DataError(
            f"data.name={cfg.name}: labels under data.root={cfg.root!r} fall outside 0..{num_classes - 1} "
            f"(found {int(labels.min())}..{int(labels.max())})"
        )


# --------------------------------------------------------------------------------------------------
# public API


def _load_digits(cfg: DataConfig, seed: int) -> DataBundle:
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = torch.as_tensor(digits.images / 16.0, dtype=torch.float32).unsqueeze(1)
    labels = torch.as_tensor(digits.target, dtype=torch.int64)
    y = digits.target
    n = len(y)
    rng = np.random.RandomState(seed)
    pool, test_idx = _split(np.arange(n), y, _count(cfg.test_fraction, n), rng)
    train_idx, val_idx = _split(pool, y, _count(cfg.val_fraction, n), rng)
    images = _normalise(images, train_idx)
    train_idx = _cap(train_idx, y, cfg.max_train_samples, rng)
    return DataBundle(
        train=_subset(images, labels, train_idx),
        val=_subset(images, labels, val_idx),
        test=_subset(images, labels, test_idx),
        num_classes=len(digits.target_names),
        in_channels=1,
        image_size=images.shape[-1],
        name=cfg.name,
    )


def _load_torchvision(cfg: DataConfig, seed: int) -> DataBundle:
    train_ds = _open_torchvision(cfg, train=True)
    test_ds = _open_torchvision(cfg, train=False)
    num_classes = len(train_ds.classes)
    train_u8, train_labels = _torchvision_arrays(train_ds)
    test_u8, test_labels = _torchvision_arrays(test_ds)
    _check_labels(cfg, train_labels, num_classes)
    _check_labels(cfg, test_labels, num_classes)
    if len(train_labels) < 2 or len(test_labels) < 1:
        raise DataError(
            f"data.name={cfg.name}: too few samples under data.root={cfg.root!r} "
            f"({len(train_labels)} train, {len(test_labels)} test)"
        )

    y = train_labels.numpy()
    n = len(y)
    rng = np.random.RandomState(seed)
    train_idx, val_idx = _split(np.arange(n), y, _count(cfg.val_fraction, n), rng)

    # One float tensor holding train+test, normalised with train-split statistics only.
    images = torch.cat([train_u8, test_u8]).to(torch.float32).div_(255.0)
    labels = torch.cat([train_labels, test_labels])
    images = _normalise(images, train_idx)
    test_idx = np.arange(n, n + len(test_labels))

    train_idx = _cap(train_idx, y, cfg.max_train_samples, rng)
    return DataBundle(
        train=_subset(images, labels, train_idx),
        val=_subset(images, labels, val_idx),
        test=_subset(images, labels, test_idx),
        num_classes=num_classes,
        in_channels=images.shape[1],
        image_size=images.shape[-1],
        name=cfg.name,
    )


def load_data(cfg: DataConfig, seed: int) -> DataBundle:
    """Load ``cfg.name`` as normalised in-memory train/val/test tensors (same seed, same splits)."""
    if cfg.name == "digits":
        return _load_digits(cfg, seed)
    if cfg.name in _TORCHVISION:
        return _load_torchvision(cfg, seed)
    raise DataError(f"data.name: unknown dataset {cfg.name!r}; allowed: digits, {', '.join(_TORCHVISION)}")


def make_loader(ds: TensorDataset | Sequence, batch_size: int, shuffle: bool, seed: int = 0) -> DataLoader:
    """A single-process DataLoader; when shuffling, the order comes from its own seeded generator."""
    generator = torch.Generator().manual_seed(seed) if shuffle else None
    return DataLoader(ds, batch_size=batch_size, shuffle=shuffle, generator=generator, num_workers=0)
