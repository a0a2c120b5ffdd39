"""Generated image sets for the scale tests and ``bench/data_scale.py``: an ``ImageFolder`` tree
of small PNGs whose class is learnable (a class-specific pattern under noise), and the same
images as WebDataset tar shards (``<key>.png`` + ``<key>.cls``)."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import numpy as np


def _patterns(classes: int, size: int, channels: int, rng: np.random.RandomState) -> np.ndarray:
    return rng.randint(0, 256, size=(classes, size, size, channels)).astype(np.float32)


def _image(pattern: np.ndarray, rng: np.random.RandomState, noise: float) -> np.ndarray:
    mixed = (1 - noise) * pattern + noise * rng.randint(0, 256, size=pattern.shape)
    return mixed.clip(0, 255).astype(np.uint8)


def write_folder(root: Path, per_class: dict[str, int], classes: int = 10, size: int = 16, channels: int = 3,
                 seed: int = 0, noise: float = 0.6) -> Path:
    """``root/<split>/c<k>/<i>.png`` for each split of ``per_class`` (images per class)."""
    from PIL import Image

    rng = np.random.RandomState(seed)
    patterns = _patterns(classes, size, channels, rng)
    mode = "RGB" if channels == 3 else "L"
    for split, count in per_class.items():
        for label in range(classes):
            folder = Path(root) / split / f"c{label}"
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                pixels = _image(patterns[label], rng, noise)
                Image.fromarray(pixels if channels == 3 else pixels[..., 0], mode).save(folder / f"{i:06d}.png")
    return Path(root)


def write_shards(folder: Path, split: str, out: Path, per_shard: int = 1000, seed: int | None = 0) -> list[Path]:
    """The images of ``folder/<split>/<class>/`` (class numbers as ``ImageFolder`` gives them) as
    tar shards ``out/<split>-000000.tar`` ..., each sample ``<key>.png`` + ``<key>.cls``. The train
    split's samples are written in a ``seed``-shuffled order (as WebDataset wants shards written:
    a reader shuffles shard order and a buffer of samples, which cannot mix class-sorted shards,
    so training saw single-class stretches and stayed at chance over 200,000 images); val/test
    and ``seed=None`` keep ``ImageFolder``'s file order (per-image outcomes line up with a folder)."""
    import random

    classes = sorted(p.name for p in (Path(folder) / split).iterdir() if p.is_dir())
    files = [(path, label) for label, name in enumerate(classes)
             for path in sorted((Path(folder) / split / name).iterdir())]
    if split == "train" and seed is not None:
        random.Random(seed).shuffle(files)
    Path(out).mkdir(parents=True, exist_ok=True)
    shards = []
    for start in range(0, len(files), per_shard):
        shard = Path(out) / f"{split}-{start // per_shard:06d}.tar"
        with tarfile.open(shard, "w") as tar:
            for index, (path, label) in enumerate(files[start:start + per_shard], start):
                key = f"{split}{index:08d}"
                _add(tar, f"{key}{path.suffix}", path.read_bytes())
                _add(tar, f"{key}.cls", str(label).encode())
        shards.append(shard)
    return shards


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))
