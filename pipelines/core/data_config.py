"""The ``data:`` section of params.yaml (:class:`DataConfig`) and its cross-key checks
(:func:`check_data`, called by the whole-file schema in :mod:`pipelines.core.config`)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, field_validator

from pipelines.core import augment_spec
from pipelines.core.params_base import BATCH_WHY, PositiveFloat, PositiveInt, Section

# What a streamed split's DataLoader may start: more workers than this only queue on the cores.
MAX_WORKERS = 64
STREAMING_SOURCES = ("imagefolder", "webdataset")
Shards = Annotated[list[Annotated[str, Field(min_length=1)]], Field(min_length=1)] | Annotated[str, Field(min_length=1)]


class DataConfig(Section):
    name: Literal["digits", "mnist", "fashion_mnist", "cifar10", "imagefolder", "webdataset"] = "digits"
    root: str = "data"
    download: bool = False
    val_fraction: Annotated[float, Field(gt=0.0, lt=0.5)] = 0.15
    test_fraction: Annotated[float, Field(gt=0.0, lt=0.5)] = 0.2
    batch_size: Annotated[int, Field(gt=0, le=8192, description=BATCH_WHY)] = 64
    max_train_samples: PositiveInt | None = None
    # imagefolder / webdataset only (see pipelines/data/imagefolder.py): images resized to
    # image_size x image_size (null: the size every train image already has), loaded as RGB (3,
    # torchvision's ImageFolder default) or grayscale (1), normalised with mean/std per channel
    # (null: computed on the train split and recorded in metrics/train_baseline.json).
    image_size: PositiveInt | None = None
    channels: Literal[1, 3] = 3
    mean: Annotated[list[float], Field(min_length=1, max_length=3)] | None = None
    std: Annotated[list[PositiveFloat], Field(min_length=1, max_length=3)] | None = None
    # Data at scale (docs/data.md). in_memory: auto holds a split set in memory as one float tensor
    # when its decoded size is at most in_memory_max_mb, else streams it from disk through a
    # DataLoader; digits and the torchvision sets are always held.
    in_memory: Literal["auto"] | bool = "auto"
    in_memory_max_mb: Annotated[float, Field(gt=0, le=1_000_000)] = 1024.0
    num_workers: Annotated[int, Field(ge=0, le=MAX_WORKERS, description=(
        "each worker is a process decoding images"))] | None = None  # null: from the cores this process may use
    augment: list[Any] = []  # train only: [{random_crop: {size: 32, padding: 4}}, horizontal_flip]
    # streamed imagefolder: none decodes every image in DataLoader workers each epoch; decoded
    # decodes each once into a uint8 file under cache_dir, read a batch at a time by the training
    # process, augmentation per batch (pipelines/data/decoded.py: keeps up with training on 2 cores)
    cache: Literal["none", "decoded"] = "none"
    cache_dir: str = ".cache/decoded"
    stats_sample: Annotated[int, Field(gt=0, le=1_000_000, description=(
        "these train images are decoded once to compute mean/std"))] = 10_000
    max_image_pixels: Annotated[int, Field(gt=0, le=2**31)] = 89_478_485  # PIL's own bomb limit
    # webdataset: .tar shards (a list, or a brace pattern such as data/train-{000..009}.tar),
    # each sample <key>.<png|jpg|...> + <key>.cls (the class number as text)
    train_shards: Shards | None = None
    val_shards: Shards | None = None
    test_shards: Shards | None = None

    @field_validator("augment")
    @classmethod
    def _known_transforms(cls, value: list[Any]) -> list[Any]:
        if value:
            augment_spec.check(value, channels=3)
        return value


def check_data(data: DataConfig) -> None:
    """The keys only some sources take, one mean/std value per channel, augment on this many channels."""
    if data.name not in STREAMING_SOURCES:
        for key in ("image_size", "mean", "std"):
            if getattr(data, key) is not None:
                raise ValueError(f"data.{key}: only for data.name imagefolder or webdataset "
                                 f"(got data.name {data.name!r})")
        if data.in_memory is False:
            raise ValueError(f"data.in_memory: false streams imagefolder and webdataset only; {data.name} is held "
                             "in memory (use auto or true)")
    for key in ("mean", "std"):
        value = getattr(data, key)
        if value is not None and len(value) != data.channels:
            raise ValueError(f"data.{key}: needs one value per channel, data.channels is {data.channels} "
                             f"(got {value!r})")
    for key in ("train_shards", "val_shards", "test_shards"):
        given = getattr(data, key) is not None
        if given != (data.name == "webdataset"):
            need = "needs" if data.name == "webdataset" else "is only for data.name webdataset, not"
            raise ValueError(f"data.{key}: {need} data.name {data.name!r}")
    if data.name == "webdataset" and data.in_memory is True:
        raise ValueError("data.in_memory: true holds imagefolder only; shards are always streamed (use auto or false)")
    if data.cache != "none" and data.name != "imagefolder":
        raise ValueError(f"data.cache: {data.cache} caches a streamed imagefolder only (got data.name {data.name!r})")
    if data.name == "webdataset" and data.max_train_samples is not None:
        raise ValueError("data.max_train_samples: shards are read whole; list fewer data.train_shards instead")
    if data.augment and data.channels == 1:
        try:
            augment_spec.check(data.augment, channels=1)
        except ValueError as exc:
            raise ValueError(f"data.augment: {exc}") from None
