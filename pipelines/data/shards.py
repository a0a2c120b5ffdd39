"""``data.name: webdataset``: WebDataset tar shards, read sequentially with the ``webdataset``
package (``data.train_shards`` / ``val_shards`` / ``test_shards``: a list of ``.tar`` paths or a
brace pattern such as ``data/train-{000000..000009}.tar``). A sample is ``<key>.<ext>`` (an
image: png, jpg, jpeg, bmp, webp, ...) plus ``<key>.cls`` (its class number as text).

Before any image is decoded every shard's headers are read once (:func:`scan`): that counts the
samples (so each split has a length, intervals have their n and progress its total), reads the
labels, and refuses hostile or broken shards in one line naming the shard and member: a member
with an absolute path or ``..``, a link or any other non-regular member (never followed, never
extracted), a sample without its ``.cls`` label or without an image, a label that is not a
number. Reading then streams each shard once per pass (train: shard order and a buffer of
samples shuffled by the seed and the epoch; val/test: shard order, one worker, so per-image
outcomes come in the same order for every model).

Normalisation statistics come from the first ``data.stats_sample`` images of a seeded shuffled
pass over train (or ``data.mean``/``data.std``). Teacher logits are not cached for shards (a
sample has no index to hang them on): distillation runs the teacher on each batch.
"""

from __future__ import annotations

import itertools
import random
import tarfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np
import torch
from torch.utils.data import IterableDataset

from pipelines.core.config import DataConfig
from pipelines.core.errors import DataError
from pipelines.data.bundle import DataBundle
from pipelines.data.decode import Decoder
from pipelines.data.streaming import prepare

IMAGE_EXTS = ("png", "jpg", "jpeg", "bmp", "webp", "ppm", "pgm", "tif", "tiff")
SHUFFLE_BUFFER = 2000  # samples held for shuffling train (a few MB of encoded images)
Stats = tuple[tuple[float, ...], tuple[float, ...]]


def expand(cfg: DataConfig, key: str) -> list[str]:
    """The shard paths of ``data.<key>`` (a list, or a brace pattern), each an existing file."""
    from webdataset.shardlists import expand_urls

    spec = getattr(cfg, key)
    paths = [path for pattern in ([spec] if isinstance(spec, str) else spec) for path in expand_urls(pattern)]
    for path in paths:
        if not Path(path).is_file():
            raise DataError(f"data.{key}: no such shard {path}")
    return paths


def _refusal(member: tarfile.TarInfo) -> str | None:
    name = member.name
    if name.startswith("/") or PurePosixPath(name).is_absolute():
        return "has an absolute path"
    if ".." in PurePosixPath(name).parts:
        return "has '..' in its path"
    if member.issym() or member.islnk():
        return "is a link"
    if not member.isreg():
        return "is not a regular file"
    return None


def scan(shard: str) -> list[int]:
    """The labels of ``shard``'s samples in order, every member checked (module docstring)."""
    samples: dict[str, dict[str, object]] = {}
    try:
        with tarfile.open(shard, "r:") as tar:
            for member in tar:
                why = _refusal(member)
                if why is not None:
                    if member.isdir():
                        continue
                    raise DataError(f"{shard}: member {member.name!r} {why}; refused (a shard holds plain files "
                                    "<key>.<ext>)")
                key, _, ext = member.name.partition(".")
                entry = samples.setdefault(key, {})
                if ext == "cls":
                    text = tar.extractfile(member).read(64).decode("ascii", "replace").strip()
                    if not text.isdigit():
                        raise DataError(f"{shard}: member {member.name!r} is not a class number (got {text[:20]!r})")
                    entry["cls"] = int(text)
                elif ext.lower() in IMAGE_EXTS:
                    entry["image"] = member.name
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise DataError(f"{shard}: not a readable tar shard ({type(exc).__name__}: {exc})") from None
    labels = []
    for key, entry in samples.items():
        if "cls" not in entry:
            raise DataError(f"{shard}: sample {key!r} has no label ({key}.cls missing)")
        if "image" not in entry:
            raise DataError(f"{shard}: sample {key!r} has no image (extensions: {', '.join(IMAGE_EXTS)})")
        labels.append(entry["cls"])
    if not labels:
        raise DataError(f"{shard}: no samples (<key>.<image ext> + <key>.cls)")
    return labels


@dataclass
class ShardSamples(IterableDataset):
    """The samples of some shards as ``(float32 [C, H, W] normalised, label)`` items."""

    shards: list[str]
    label_array: np.ndarray  # every sample's label, in shard order
    decoder: Decoder
    stats: Stats
    size: tuple[int, int] | None  # (W, H) every image must have when nothing resizes them
    shuffle: bool = False
    seed: int = 0
    augment: object = None
    epoch: int = 0

    def __len__(self) -> int:
        return len(self.label_array)

    @property
    def labels(self) -> torch.Tensor:
        return torch.as_tensor(self.label_array)

    def with_augment(self, augment) -> "ShardSamples":
        return ShardSamples(self.shards, self.label_array, self.decoder, self.stats, self.size, self.shuffle,
                            self.seed, augment)

    def plain(self) -> "ShardSamples":
        """In shard order, not augmented (what evaluation and the teacher's train loss read)."""
        return ShardSamples(self.shards, self.label_array, self.decoder, self.stats, self.size, False, self.seed)

    def calibration(self) -> "ShardSamples":
        """A fresh seeded shuffled pass, not augmented: its first images are the calibration set."""
        return ShardSamples(self.shards, self.label_array, self.decoder, self.stats, self.size, True, self.seed)

    def _item(self, sample: dict) -> tuple[torch.Tensor, int]:
        where = f"{sample.get('__url__', '?')}: sample {sample.get('__key__', '?')!r}"
        if "cls" not in sample:
            raise DataError(f"{where} has no label (.cls missing)")
        ext = next((e for e in IMAGE_EXTS if e in sample), None)
        if ext is None:
            raise DataError(f"{where} has no image")
        name = f"{sample['__url__']}:{sample['__key__']}.{ext}"
        mean, std = (torch.tensor(v, dtype=torch.float32).view(-1, 1, 1) for v in self.stats)
        return prepare(self.decoder(sample[ext], name), name, self.size, self.augment, mean, std), int(sample["cls"])

    def __iter__(self):
        import webdataset as wds

        self.epoch += 1  # each worker keeps its own copy across epochs (persistent workers)
        rng = random.Random(self.seed * 1_000_003 + self.epoch)
        shards = list(self.shards)
        if self.shuffle:
            rng.shuffle(shards)
        stages = [wds.SimpleShardList(shards), wds.split_by_worker, wds.tarfile_to_samples()]
        if self.shuffle:
            stages.append(wds.shuffle(SHUFFLE_BUFFER, initial=SHUFFLE_BUFFER // 2, rng=rng))
        stages.append(wds.map(self._item))
        return iter(wds.DataPipeline(*stages))

    def digest_parts(self):
        """Each shard's bytes, in order (:func:`~pipelines.data.loading.split_digest`)."""
        for shard in self.shards:
            with open(shard, "rb") as handle:
                while block := handle.read(1 << 20):
                    yield block


def _stats(ds: ShardSamples, count: int, batch_size: int, workers: int) -> Stats:
    from pipelines.data.feeding import make_loader
    from pipelines.data.streaming import batch_stats

    batches = make_loader(ds, batch_size, False, workers=workers)
    return batch_stats(itertools.islice(batches, -(-count // batch_size)))


def _warn_if_sorted(per_shard: list[list[int]], num_classes: int) -> None:
    """One warning line when every train shard holds a single class: the reader shuffles shard
    order and a buffer of :data:`SHUFFLE_BUFFER` samples, which cannot mix class-sorted shards
    (training then sees one class at a time and can stay at chance)."""
    if num_classes < 2 or len(per_shard) < 2:
        return
    if all(len(set(labels)) == 1 for labels in per_shard):
        print(f"data: WARNING every one of the {len(per_shard)} train shards holds a single class: shuffling shard "
              f"order and a {SHUFFLE_BUFFER}-sample buffer cannot mix them; write the shards in shuffled order "
              "(docs/data.md)", flush=True)


def load_shards(cfg: DataConfig, seed: int, workers: int):
    """``data.name: webdataset``: every split's shards scanned, the splits streamed."""
    shards = {split: expand(cfg, f"{split}_shards") for split in ("train", "val", "test")}
    scanned = {split: [scan(shard) for shard in paths] for split, paths in shards.items()}
    labels = {split: np.array([y for shard in per_shard for y in shard], dtype=np.int64)
              for split, per_shard in scanned.items()}
    num_classes = int(labels["train"].max()) + 1
    _warn_if_sorted(scanned["train"], num_classes)
    for split in ("val", "test"):
        if labels[split].max() >= num_classes:
            raise DataError(f"data.{split}_shards: class {int(labels[split].max())} is not in data.train_shards "
                            f"(train has classes 0..{num_classes - 1})")
    decoder = Decoder(cfg.channels, cfg.image_size, cfg.max_image_pixels)
    neutral = ((0.0,) * cfg.channels, (1.0,) * cfg.channels)
    first = ShardSamples(shards["train"][:1], labels["train"][:1], decoder, neutral, None)
    image = next(iter(first))[0]
    if cfg.image_size is None and image.shape[-1] != image.shape[-2]:
        raise DataError(f"{shards['train'][0]}: its first image is {image.shape[-1]}x{image.shape[-2]}, not square; "
                        "set data.image_size to resize every image to image_size x image_size")
    side = cfg.image_size or image.shape[-1]
    size = None if cfg.image_size else (side, side)
    if cfg.mean is not None and cfg.std is not None:
        stats: Stats = (tuple(cfg.mean), tuple(cfg.std))
    else:
        sample = ShardSamples(shards["train"], labels["train"], decoder, neutral, size, shuffle=True, seed=seed)
        sampled = _stats(sample, cfg.stats_sample, cfg.batch_size, workers)
        stats = (tuple(cfg.mean) if cfg.mean is not None else sampled[0],
                 tuple(cfg.std) if cfg.std is not None else sampled[1])
    splits = {split: ShardSamples(shards[split], labels[split], decoder, stats, size, shuffle=split == "train",
                                  seed=seed) for split in shards}
    return DataBundle(train=splits["train"], val=splits["val"], test=splits["test"], num_classes=num_classes,
                      in_channels=cfg.channels, image_size=side, name=cfg.name, mean=stats[0], std=stats[1],
                      in_memory=False, workers=workers)
