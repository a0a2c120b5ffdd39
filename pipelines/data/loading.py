"""Datasets as in-memory tensors.

:func:`load_data` turns a :class:`~pipelines.core.config.DataConfig` into a :class:`DataBundle` of three
``TensorDataset`` splits (float32 images ``[N, C, H, W]``, normalised per channel with statistics of
the train split only; int64 labels). Every dataset is small enough to live in memory, so each split
is converted to one tensor once and no per-item transforms run during training.

* ``digits``: scikit-learn's bundled 8x8 digits (no files, no network). Seeded stratified split of
  all samples into test (``test_fraction``), val (``val_fraction``) and train (the rest).
* ``mnist``, ``fashion_mnist``, ``cifar10``: torchvision's own dataset classes and file parsers,
  reading ``data.root`` (downloading only when ``data.download`` is true). Val is a seeded
  stratified split of the official train split; test is the official test split.
* ``imagefolder``: the user's images (:mod:`pipelines.data.imagefolder`); ``val/`` and ``test/``
  folders when present, else seeded stratified splits of ``train/`` (test first, as for digits);
  ``data.mean``/``data.std`` replace the computed statistics when given.

The statistics used are kept in :attr:`DataBundle.mean` / :attr:`DataBundle.std` (per channel, on
the 0..1 pixel scale, as ``transforms.Normalize`` takes them) so they can be recorded.

``max_train_samples`` caps the train split (seeded, stratified where possible) after val/test have
been carved out, and the normalisation statistics come from the uncapped train split, so val and
test tensors are identical whatever the cap is.

All randomness comes from a local ``numpy.random.RandomState(seed)`` (no global RNG state is read
or written), so the same seed always gives the same splits, also when called from several threads.
"""

from __future__ import annotations

import dataclasses
from typing import get_args

import numpy as np
import torch
from torch.utils.data import TensorDataset

from pipelines.core.config import DataConfig
from pipelines.core.errors import DataError
from pipelines.data.augment import augmented
from pipelines.data.augment import build as build_augment
from pipelines.data.bundle import DataBundle, capped, folder_indices, share_count, stratified_split
from pipelines.data.feeding import default_workers, make_loader

__all__ = ["DataBundle", "DataError", "load_data", "make_loader"]

# The schema's dataset names, less the bundled one and the user's folder: pipelines.data.torchvision_sets
# serves these.
TORCHVISION_DATASETS = tuple(n for n in get_args(DataConfig.model_fields["name"].annotation)
                             if n not in ("digits", "imagefolder", "webdataset"))


# --------------------------------------------------------------------------------------------------
# splitting and normalisation


Stats = tuple[tuple[float, ...], tuple[float, ...]]  # per-channel mean, std


def _stats(images: torch.Tensor, train_idx: np.ndarray) -> Stats:
    """Per-channel mean/std of the train rows only (a constant channel gets std 1)."""
    train = images[torch.as_tensor(train_idx)]
    var, mean = torch.var_mean(train, dim=(0, 2, 3), correction=0)
    std = var.sqrt()
    std = torch.where(std > 0, std, torch.ones_like(std))
    return tuple(mean.tolist()), tuple(std.tolist())


def _normalise(images: torch.Tensor, stats: Stats) -> torch.Tensor:
    mean, std = (torch.tensor(v, dtype=images.dtype).view(1, -1, 1, 1) for v in stats)
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
    pool, test_idx = stratified_split(np.arange(n), y, share_count(cfg.test_fraction, n), rng)
    train_idx, val_idx = stratified_split(pool, y, share_count(cfg.val_fraction, n), rng)
    stats = _stats(images, train_idx)
    images = _normalise(images, stats)
    train_idx = capped(train_idx, y, cfg.max_train_samples, rng)
    return DataBundle(
        train=_subset(images, labels, train_idx),
        val=_subset(images, labels, val_idx),
        test=_subset(images, labels, test_idx),
        num_classes=len(digits.target_names),
        in_channels=1,
        image_size=images.shape[-1],
        name=cfg.name,
        mean=stats[0],
        std=stats[1],
    )


def _load_torchvision(cfg: DataConfig, seed: int) -> DataBundle:
    # imported here: torchvision costs seconds to import, and the default dataset never needs it
    from pipelines.data.torchvision_sets import open_split, split_arrays

    train_ds = open_split(cfg, train=True)
    test_ds = open_split(cfg, train=False)
    num_classes = len(train_ds.classes)
    train_u8, train_labels = split_arrays(train_ds)
    test_u8, test_labels = split_arrays(test_ds)
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
    train_idx, val_idx = stratified_split(np.arange(n), y, share_count(cfg.val_fraction, n), rng)

    # One float tensor holding train+test, normalised with train-split statistics only.
    images = torch.cat([train_u8, test_u8]).to(torch.float32).div_(255.0)
    labels = torch.cat([train_labels, test_labels])
    stats = _stats(images, train_idx)
    images = _normalise(images, stats)
    test_idx = np.arange(n, n + len(test_labels))

    train_idx = capped(train_idx, y, cfg.max_train_samples, rng)
    return DataBundle(
        train=_subset(images, labels, train_idx),
        val=_subset(images, labels, val_idx),
        test=_subset(images, labels, test_idx),
        num_classes=num_classes,
        in_channels=images.shape[1],
        image_size=images.shape[-1],
        name=cfg.name,
        mean=stats[0],
        std=stats[1],
    )


def _load_imagefolder(cfg: DataConfig, seed: int, files) -> DataBundle:
    from pipelines.data.imagefolder import read_folder

    folder = read_folder(cfg, files)
    parts = [folder.train, *(s for s in (folder.val, folder.test) if s is not None)]
    images = torch.cat([p[0] for p in parts]).to(torch.float32).div_(255.0)
    labels = torch.cat([p[1] for p in parts])
    y = labels.numpy()
    rng = np.random.RandomState(seed)
    given = {name: len(part[1]) for name, part in (("val", folder.val), ("test", folder.test)) if part is not None}
    splits = folder_indices(cfg, y, len(folder.train[1]), given, rng)
    mean, std = _stats(images, splits["train"])
    stats = (tuple(cfg.mean) if cfg.mean is not None else mean, tuple(cfg.std) if cfg.std is not None else std)
    images = _normalise(images, stats)
    train_idx = capped(splits["train"], y, cfg.max_train_samples, rng)
    return DataBundle(
        train=_subset(images, labels, train_idx),
        val=_subset(images, labels, splits["val"]),
        test=_subset(images, labels, splits["test"]),
        num_classes=len(folder.classes),
        in_channels=images.shape[1],
        image_size=images.shape[-1],
        name=cfg.name,
        mean=stats[0],
        std=stats[1],
        classes=folder.classes,
    )


def _load(cfg: DataConfig, seed: int) -> DataBundle:
    if cfg.name == "digits":
        return _load_digits(cfg, seed)
    if cfg.name == "imagefolder":
        from pipelines.data import streaming
        from pipelines.data.imagefolder import list_folder

        files = list_folder(cfg)
        hold = cfg.in_memory if cfg.in_memory != "auto" else streaming.decoded_mb(cfg, files) <= cfg.in_memory_max_mb
        if hold:
            return _load_imagefolder(cfg, seed, files)
        data = streaming.load_folder(cfg, seed, files, cfg.num_workers if cfg.num_workers is not None
                                     else default_workers())
        if cfg.cache == "decoded":  # decoded once, then read by the training process (docs/data.md)
            from pipelines.data.decoded import decode_bundle

            data = decode_bundle(data, cfg.cache_dir)
        return data
    if cfg.name == "webdataset":
        from pipelines.data.shards import load_shards

        return load_shards(cfg, seed, cfg.num_workers if cfg.num_workers is not None else default_workers())
    if cfg.name in TORCHVISION_DATASETS:
        return _load_torchvision(cfg, seed)
    raise DataError(f"data.name: unknown dataset {cfg.name!r}; allowed: digits, imagefolder, webdataset, "
                    f"{', '.join(TORCHVISION_DATASETS)}")


def load_data(cfg: DataConfig, seed: int) -> DataBundle:
    """Load ``cfg.name``: normalised in-memory train/val/test tensors, or streamed splits (same
    seed, same splits); the train split augmented when ``data.augment`` is set."""
    data = _load(cfg, seed)
    transform = build_augment(cfg.augment, data.in_channels, data.image_size)
    if transform is None:
        return data
    return dataclasses.replace(data, train=augmented(data.train, transform, data.mean, data.std))
