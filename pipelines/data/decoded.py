"""``data.cache: decoded``: a streamed image folder decoded once into a file of uint8 pixels, then
read back a batch at a time by the training process itself.

Why (issue 23, measured on this 2-vCPU machine with 200,000 PNGs of 32x32): decoding in a
DataLoader worker costs ~200 us an image (PIL decode, to tensor, crop and flip, normalise), and its
bursts take one of the two cores from the training process's two OpenMP threads, whose barriers
then wait for it: augmented streaming trained at 0.55x the images/s of the same images held in
memory. With the pixels decoded once, an epoch needs no per-image work outside the training
threads: each batch is ``batch_size`` positioned reads (``os.pread``) from the file, one uint8 ->
float conversion, the augmentation applied to the whole batch (:mod:`pipelines.data.batch_augment`)
and the normalisation.

Memory: the file is read with ``pread``, not mapped, so its pages live in the kernel's page cache
(shared, reclaimable) and never count in the process's RSS; RSS holds one batch. Disk: ``C x H x W``
bytes an image (200,000 x 32 x 32 x 3 = 0.6 GB, a quarter of float32).

The file is ``<cache dir>/<key>.u8`` (``data.cache_dir``, default ``.cache/decoded``), the key a
digest of every path, size and modification time, the decoder's settings and :data:`VERSION`: a
changed, added or removed image, or another ``data.image_size``/``channels``, makes a new file. It
is written to a temporary name and renamed when complete, so an interrupted build leaves nothing a
later run would trust. Decoding runs once, in ``data.num_workers`` DataLoader workers, with the
same one-line errors as streaming (a corrupt image names its file, nothing is kept).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from pipelines.core.errors import DataError
from pipelines.core.io import atomic_write
from pipelines.data.bundle import DataBundle
from pipelines.data.streaming import ImageFiles

VERSION = 1
Augment = Callable[[torch.Tensor], torch.Tensor]


def cache_key(files: ImageFiles, shape: tuple[int, int, int]) -> str:
    """A digest of what the decoded file depends on (see the module docstring)."""
    h = hashlib.sha256(f"v{VERSION} {shape} {files.decoder.mode} {files.decoder.size}".encode())
    for path in files.paths:
        st = os.stat(path)
        h.update(path + b"\0" + f"{st.st_size} {st.st_mtime_ns}".encode() + b"\0")
    return h.hexdigest()[:24]


class _Pixels(Dataset):
    """The images of ``files`` as decoded uint8 [C, H, W] tensors (the cache build's items)."""

    def __init__(self, files: ImageFiles) -> None:
        self.files = files

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.files.pixels(index).contiguous()


def build(files: ImageFiles, shape: tuple[int, int, int], directory: str | Path, workers: int,
          batch_size: int = 256) -> Path:
    """The decoded file of ``files`` (every image, in order) under ``directory``: found by its key,
    or decoded now in ``workers`` processes and written whole."""
    from tqdm import tqdm

    from pipelines.data.feeding import make_loader

    path = Path(directory) / f"{cache_key(files, shape)}.u8"
    item = int(np.prod(shape))
    if path.exists() and path.stat().st_size == item * len(files):
        return path

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as out, tqdm(total=len(files), desc="decode once (data.cache: decoded)",
                                          unit="img", leave=False) as bar:
            for batch in make_loader(_Pixels(files), batch_size, False, workers=workers):
                out.write(batch.numpy().tobytes())
                bar.update(len(batch))

    return atomic_write(path, write)


class DecodedImages(Dataset):
    """Images of a decoded file as normalised float32 batches: ``ds[[i, j, ...]]`` reads those
    images (one ``pread`` each) and returns ``(images [n, C, H, W], labels [n])``; ``ds[i]`` one
    ``(image, label)`` item. ``augment`` (train) runs on each whole batch on the 0..1 scale.
    ``files`` (the same images on disk) answers names and digests; ``rows``: each item's image
    index in the file."""

    batched = True  # make_loader hands it whole index batches (pipelines.data.feeding)

    def __init__(self, path: str | Path, shape: tuple[int, int, int], files: ImageFiles, rows: np.ndarray,
                 augment: Augment | None = None) -> None:
        self.path, self.shape, self.files = Path(path), tuple(shape), files
        self.rows = np.asarray(rows, dtype=np.int64)
        self.augment = augment
        self._item = int(np.prod(shape))
        self._fd: int | None = None
        self._pid = -1
        self._mean = torch.tensor(files.stats[0], dtype=torch.float32).view(1, -1, 1, 1)
        self._std = torch.tensor(files.stats[1], dtype=torch.float32).view(1, -1, 1, 1)

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def labels(self) -> torch.Tensor:
        return self.files.labels

    @property
    def stats(self):
        return self.files.stats

    def name(self, index: int) -> str:
        return self.files.name(index)

    def digest_parts(self):
        return self.files.digest_parts()

    def _descriptor(self) -> int:
        if self._fd is None or self._pid != os.getpid():  # a forked process opens its own
            self._fd, self._pid = os.open(self.path, os.O_RDONLY), os.getpid()
        return self._fd

    def __del__(self) -> None:
        if self._fd is not None and self._pid == os.getpid():
            os.close(self._fd)

    def __getstate__(self):
        return {**self.__dict__, "_fd": None, "_pid": -1}

    def read(self, indices: Sequence[int]) -> torch.Tensor:
        """The uint8 pixels of items ``indices``, [n, C, H, W]."""
        fd, item = self._descriptor(), self._item
        buffer = bytearray(item * len(indices))
        view = memoryview(buffer)
        for j, row in enumerate(self.rows[np.asarray(indices, dtype=np.int64)].tolist()):
            if os.preadv(fd, [view[j * item:(j + 1) * item]], row * item) != item:
                raise DataError(f"{self.path}: shorter than its images (changed while in use?); delete it and "
                                "run again to decode anew")
        return torch.frombuffer(buffer, dtype=torch.uint8).view(len(indices), *self.shape)

    def batch(self, indices: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.read(indices).to(torch.float32).div_(255.0)
        if self.augment is not None:
            x = self.augment(x)
        x = (x - self._mean) / self._std
        return x, self.files.labels[torch.as_tensor(np.asarray(indices, dtype=np.int64))]

    def __getitem__(self, index):
        if isinstance(index, (list, tuple, np.ndarray, torch.Tensor)):
            return self.batch(list(index))
        x, y = self.batch([int(index)])
        return x[0], y[0]

    def subset(self, indices) -> "DecodedImages":
        idx = np.asarray(indices, dtype=np.int64)
        return DecodedImages(self.path, self.shape, self.files.subset(idx), self.rows[idx], self.augment)

    def with_augment(self, augment) -> "DecodedImages":
        from pipelines.data.batch_augment import batched

        return DecodedImages(self.path, self.shape, self.files, self.rows, batched(augment))

    def plain(self) -> "DecodedImages":
        return DecodedImages(self.path, self.shape, self.files, self.rows, None)


def decode_bundle(data: DataBundle, directory: str | Path) -> DataBundle:
    """A streamed folder's splits read from one decoded file (:func:`build`, decoding in the
    bundle's workers), in the training process from then on (``workers`` 0)."""
    import dataclasses

    parts = (data.train, data.val, data.test)
    every = ImageFiles.concat(parts)
    shape = (data.in_channels, data.image_size, data.image_size)
    whole = DecodedImages(build(every, shape, directory, data.workers), shape, every, np.arange(len(every)))
    bounds = np.cumsum([0, *map(len, parts)])
    train, val, test = (whole.subset(np.arange(a, b)) for a, b in zip(bounds[:-1], bounds[1:]))
    return dataclasses.replace(data, train=train, val=val, test=test, workers=0, cache="decoded")
