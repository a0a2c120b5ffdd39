"""Splits read from disk one image at a time: ``data.name: imagefolder`` when it is not held in
memory (``data.in_memory``), decoded in DataLoader workers and never held as a whole.

A split is an :class:`ImageFiles` dataset: the file paths (as one numpy bytes array, so forked
workers share it without copying it page by page as they would a list of Python strings) and the
int64 labels, which is all that grows with the number of images. Each item is decoded
(:class:`~pipelines.data.decode.Decoder`), scaled to 0..1, augmented (train only, when
``data.augment`` is set) and normalised with the recorded statistics.

The splits are the ones the in-memory path makes of the same folder and seed
(:func:`~pipelines.data.loading.folder_indices`); the normalisation statistics come from a
seeded sample of ``data.stats_sample`` train images (:func:`sample_stats`), or from
``data.mean``/``data.std`` when given.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from pipelines.core.config import DataConfig
from pipelines.core.errors import DataError
from pipelines.data.bundle import DataBundle, capped, folder_indices
from pipelines.data.decode import Decoder

Stats = tuple[tuple[float, ...], tuple[float, ...]]


def checked(image: torch.Tensor, name: str, size: tuple[int, int] | None) -> torch.Tensor:
    """``image`` when its (W, H) is ``size`` (or nothing is required), else the one-line error."""
    if size is not None and (image.shape[-1], image.shape[-2]) != size:
        raise DataError(f"{name}: {image.shape[-1]}x{image.shape[-2]}, but the train images are "
                        f"{size[0]}x{size[1]}; set data.image_size to resize every image")
    return image


def prepare(image: torch.Tensor, name: str, size: tuple[int, int] | None, augment, mean: torch.Tensor,
            std: torch.Tensor) -> torch.Tensor:
    """A decoded uint8 image as the model's input: size checked (when nothing resizes), scaled to
    0..1, augmented (train), normalised with ``mean``/``std`` shaped [C, 1, 1]."""
    x = checked(image, name, size).to(torch.float32).div_(255.0)
    if augment is not None:
        x = augment(x)
    return (x - mean) / std


class ImageFiles(Dataset):
    """Images on disk as ``(float32 [C, H, W] normalised, label)`` items."""

    def __init__(self, paths: np.ndarray, labels: np.ndarray, decoder: Decoder, stats: Stats,
                 size: tuple[int, int] | None, augment: Callable[[torch.Tensor], torch.Tensor] | None = None) -> None:
        self.paths = paths  # numpy bytes array (os.fsencode of each path)
        self._labels = np.asarray(labels, dtype=np.int64)
        self.decoder = decoder
        self.stats = stats
        self.size = size  # (W, H) every image must have when data.image_size does not resize them
        self.augment = augment
        self._mean = torch.tensor(stats[0], dtype=torch.float32).view(-1, 1, 1)
        self._std = torch.tensor(stats[1], dtype=torch.float32).view(-1, 1, 1)

    def __len__(self) -> int:
        return len(self._labels)

    @property
    def labels(self) -> torch.Tensor:
        return torch.as_tensor(self._labels)

    def name(self, index: int) -> str:
        return os.fsdecode(self.paths[index])

    def pixels(self, index: int) -> torch.Tensor:
        """Item ``index`` decoded, uint8 [C, H, W], its size checked; nothing else applied."""
        path = self.name(index)
        return checked(self.decoder(path, path), path, self.size)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        path = self.name(index)
        x = prepare(self.decoder(path, path), path, self.size, self.augment, self._mean, self._std)
        return x, int(self._labels[index])

    def digest_parts(self):
        """What :func:`~pipelines.data.loading.split_digest` hashes: each image's file bytes and label, in order."""
        for index in range(len(self)):
            path = self.name(index)
            with open(path, "rb") as handle:
                yield handle.read() + int(self._labels[index]).to_bytes(8, "little")

    @staticmethod
    def concat(parts: Sequence["ImageFiles"]) -> "ImageFiles":
        """The images of ``parts`` one after another (same decoder, statistics and size)."""
        first = parts[0]
        return ImageFiles(np.concatenate([p.paths for p in parts]), np.concatenate([p._labels for p in parts]),
                          first.decoder, first.stats, first.size, first.augment)

    def subset(self, indices: Sequence[int] | np.ndarray) -> "ImageFiles":
        idx = np.asarray(indices, dtype=np.int64)
        return ImageFiles(self.paths[idx], self._labels[idx], self.decoder, self.stats, self.size, self.augment)

    def with_stats(self, stats: Stats) -> "ImageFiles":
        return ImageFiles(self.paths, self._labels, self.decoder, stats, self.size, self.augment)

    def with_augment(self, augment: Callable[[torch.Tensor], torch.Tensor] | None) -> "ImageFiles":
        return ImageFiles(self.paths, self._labels, self.decoder, self.stats, self.size, augment)

    def plain(self) -> "ImageFiles":
        """The same images with the deterministic transform (no augmentation)."""
        return self.with_augment(None)


def sample_stats(ds: Dataset, count: int, seed: int, batch_size: int, workers: int) -> Stats:
    """Per-channel mean/std (0..1 pixels) of ``count`` seeded images of ``ds`` (a dataset whose
    items are not yet normalised)."""
    from pipelines.data.feeding import make_loader

    n = len(ds)
    rng = np.random.RandomState(seed)
    idx = np.sort(rng.choice(n, size=min(count, n), replace=False))
    return batch_stats(make_loader(torch.utils.data.Subset(ds, idx.tolist()), batch_size, False, workers=workers))


def batch_stats(batches) -> Stats:
    """Per-channel mean/std of the images of ``batches`` (not yet normalised), summed in float64
    batch by batch; a constant channel gets std 1."""
    total, squares, pixels = None, None, 0
    for images, *_ in batches:
        x = images.to(torch.float64)
        s, q = x.sum(dim=(0, 2, 3)), (x * x).sum(dim=(0, 2, 3))
        total, squares = (s, q) if total is None else (total + s, squares + q)
        pixels += x.numel() // x.shape[1]
    mean = total / pixels
    std = (squares / pixels - mean * mean).clamp_min(0).sqrt()
    std = torch.where(std > 0, std, torch.ones_like(std))
    return tuple(mean.tolist()), tuple(std.tolist())


def image_size_of(path: str, decoder: Decoder) -> tuple[int, int]:
    """(W, H) of one decoded image: what the others must match when nothing resizes them."""
    image = decoder(path, path)
    return int(image.shape[-1]), int(image.shape[-2])


def folder_files(files, cfg: DataConfig) -> tuple[np.ndarray, np.ndarray, dict[str, int]]:
    """Paths and labels of every split of an :class:`~pipelines.data.imagefolder.FolderFiles`,
    train first, then val and test where they have folders, with the sizes of those given splits."""
    paths, labels, given = [], [], {}
    for name in ("train", "val", "test"):
        ds = files.splits[name]
        if ds is None:
            continue
        paths.extend(os.fsencode(path) for path, _ in ds.samples)
        labels.extend(label for _, label in ds.samples)
        if name != "train":
            given[name] = len(ds.samples)
    return np.array(paths, dtype=np.bytes_), np.array(labels, dtype=np.int64), given


def load_folder(cfg: DataConfig, seed: int, files, workers: int):
    """``data.name: imagefolder`` streamed: the same splits as held in memory, statistics from a
    seeded sample of train (or data.mean/std), every split an :class:`ImageFiles`."""

    paths, labels, given = folder_files(files, cfg)
    rng = np.random.RandomState(seed)
    splits = folder_indices(cfg, labels, len(files.splits["train"].samples), given, rng)
    decoder = Decoder(cfg.channels, cfg.image_size, cfg.max_image_pixels)
    size = None
    if cfg.image_size is None:
        first = os.fsdecode(paths[splits["train"][0]])
        size = image_size_of(first, decoder)
        if size[0] != size[1]:
            raise DataError(f"{first}: {size[0]}x{size[1]} is not square; set data.image_size to resize "
                            "every image to image_size x image_size")
    side = cfg.image_size or size[0]
    ones = (1.0,) * cfg.channels
    every = ImageFiles(paths, labels, decoder, ((0.0,) * cfg.channels, ones), size)
    if cfg.mean is not None and cfg.std is not None:
        stats = (tuple(cfg.mean), tuple(cfg.std))
    else:
        sampled = sample_stats(every.subset(splits["train"]), cfg.stats_sample, seed, cfg.batch_size, workers)
        stats = (tuple(cfg.mean) if cfg.mean is not None else sampled[0],
                 tuple(cfg.std) if cfg.std is not None else sampled[1])
    every = every.with_stats(stats)
    train_idx = capped(splits["train"], labels, cfg.max_train_samples, rng)
    return DataBundle(train=every.subset(train_idx), val=every.subset(splits["val"]), test=every.subset(splits["test"]),
                      num_classes=len(files.classes), in_channels=cfg.channels, image_size=side, name=cfg.name,
                      mean=stats[0], std=stats[1], classes=files.classes, in_memory=False, workers=workers)


def decoded_mb(cfg: DataConfig, files) -> float:
    """What every split of the folder would take held as float32 tensors, in MB (from one header)."""
    from PIL import Image

    count = sum(len(ds.samples) for ds in files.splits.values() if ds is not None)
    if cfg.image_size:
        pixels = cfg.image_size ** 2
    else:
        path = files.splits["train"].samples[0][0]
        try:
            with Image.open(path) as image:
                pixels = image.size[0] * image.size[1]
        except Exception:  # noqa: BLE001 - decoding names the file when it is read
            pixels = 0
    return count * cfg.channels * pixels * 4 / 1e6
