"""What every data source produces: the :class:`DataBundle` of train/val/test splits (held
tensors or streamed datasets), the seeded stratified splitting they share (same files, same seed:
same splits, held or streamed), and what can be asked of any split without reading its images
twice (labels, digest, MLflow's dataset record)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset, TensorDataset

from pipelines.core.config import DataConfig
from pipelines.core.errors import DataError
from pipelines.data.augment import plain


@dataclass(frozen=True)
class DataBundle:
    train: TensorDataset  # float32 images [N, C, H, W] normalised, int64 labels
    val: TensorDataset
    test: TensorDataset
    num_classes: int
    in_channels: int
    image_size: int  # H (== W)
    name: str
    mean: tuple[float, ...] = ()  # per channel, what the images were normalised with
    std: tuple[float, ...] = ()
    classes: tuple[str, ...] = ()  # class names where the dataset has them (imagefolder)
    in_memory: bool = True  # False: the splits are streamed from disk (pipelines.data.streaming)
    workers: int = 0  # DataLoader worker processes that read a streamed split
    cache: str = "none"  # decoded: streamed from a file of decoded pixels (pipelines.data.decoded)


def can_stratify(labels: np.ndarray, n_first: int, n_second: int) -> bool:
    _, counts = np.unique(labels, return_counts=True)
    n_classes = len(counts)
    return counts.min() >= 2 and n_first >= n_classes and n_second >= n_classes


def stratified_split(
    indices: np.ndarray, labels: np.ndarray, n_take: int, rng: np.random.RandomState
) -> tuple[np.ndarray, np.ndarray]:
    """Split ``indices`` into (rest, taken) with ``len(taken) == n_take``; stratified where possible."""
    from sklearn.model_selection import train_test_split

    n_rest = len(indices) - n_take
    stratify = labels[indices] if can_stratify(labels[indices], n_rest, n_take) else None
    rest, taken = train_test_split(indices, test_size=n_take, random_state=rng, stratify=stratify)
    return np.sort(rest), np.sort(taken)


def share_count(fraction: float, n: int) -> int:
    """Samples for ``fraction`` of ``n``: at least 1 and leaving at least 1."""
    return min(max(1, round(fraction * n)), n - 1)


def capped(indices: np.ndarray, labels: np.ndarray, cap: int | None, rng: np.random.RandomState) -> np.ndarray:
    if cap is None or cap >= len(indices):
        return indices
    _, kept = stratified_split(indices, labels, cap, rng)
    return kept


def folder_indices(cfg: DataConfig, labels: np.ndarray, n_train: int, given_sizes: dict[str, int],
                   rng: np.random.RandomState) -> dict[str, np.ndarray]:
    """Indices into ``labels`` (train rows first, then the given val/test rows in that order) of
    train (uncapped), val and test: a split without its own folder is carved from train, seeded
    and stratified, test first as for digits. Same files, same seed: same splits, held or streamed."""
    train_idx, offset, splits = np.arange(n_train), n_train, {}
    for name in ("val", "test"):
        if name in given_sizes:
            splits[name] = np.arange(offset, offset + given_sizes[name])
            offset += given_sizes[name]
    for name, fraction in (("test", cfg.test_fraction), ("val", cfg.val_fraction)):  # digits' order
        if name not in splits:
            if len(train_idx) < 2:
                raise DataError(f"{Path(cfg.root) / 'train'}: {n_train} images are too few to carve a {name} split "
                                f"from; add images or a {Path(cfg.root) / name} folder")
            train_idx, splits[name] = stratified_split(train_idx, labels, share_count(fraction, n_train), rng)
    return {"train": train_idx, **splits}


def labels_of(ds: Dataset) -> torch.Tensor:
    """The int64 labels of a split, in order, without reading any image."""
    return ds.tensors[1] if isinstance(ds, TensorDataset) else ds.labels


def split_digest(ds: Dataset) -> str:
    """sha256 of a split's images and labels (held: the tensors' bytes; streamed: each file's
    path, bytes and label), without decoding anything: which images an accuracy was measured on."""
    digest = hashlib.sha256()
    if isinstance(ds, TensorDataset):
        for tensor in ds.tensors:
            digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
        return digest.hexdigest()
    for part in ds.digest_parts():
        digest.update(part)
    return digest.hexdigest()


def dataset_arrays(ds: Dataset) -> tuple[np.ndarray, np.ndarray]:
    """(features, targets) that stand for a train split in MLflow's dataset record: a held split's
    images and labels; a streamed one's digest bytes (its images are never all in memory) and labels."""
    ds = plain(ds)
    if isinstance(ds, TensorDataset):
        return ds.tensors[0].numpy(), ds.tensors[1].numpy()
    return np.frombuffer(bytes.fromhex(split_digest(ds)), dtype=np.uint8), labels_of(ds).numpy()
