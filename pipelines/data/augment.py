"""``data.augment``: the train split's random transforms (torchvision ``transforms.v2``), built
from the entries :mod:`pipelines.core.augment_spec` validated. They run on each float image on
the 0..1 pixel scale, before normalisation, in whichever process reads the item (a DataLoader
worker for streamed images). Val, test, calibration and every ranking set see the plain,
deterministic transform: only the train split of a :class:`~pipelines.data.DataBundle` is
augmented, and :func:`plain` gives back its deterministic twin.

In-memory splits hold normalised tensors, so :class:`Augmented` undoes the normalisation of
each item, augments it and normalises it again: the same images as when streamed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch.utils.data import Dataset, TensorDataset

from pipelines.core import augment_spec
from pipelines.core.errors import DataError

Transform = Callable[[torch.Tensor], torch.Tensor]


def build(entries: list[Any], channels: int, size: int) -> Transform | None:
    """The entries as one ``v2.Compose`` (None when there are none); refused in one line when a
    transform would change the image's shape (the model takes ``channels`` x ``size`` x ``size``)."""
    if not entries:
        return None
    from torchvision.transforms import v2

    transform = v2.Compose([augment_spec.resolve(entry)[1] for entry in entries])
    probe = torch.rand(channels, size, size)
    try:
        shape = tuple(transform(probe).shape)
    except Exception as exc:  # noqa: BLE001 - a transform that cannot take these images
        raise DataError(f"data.augment: cannot run on {channels}x{size}x{size} images ({type(exc).__name__}: "
                        f"{str(exc).splitlines()[0][:160]})") from None
    if shape != tuple(probe.shape):
        raise DataError(f"data.augment: turns {channels}x{size}x{size} images into {'x'.join(map(str, shape))}; "
                        "the model takes one size (crop with padding, or resize back)")
    return transform


class Augmented(Dataset):
    """A normalised in-memory split whose items are augmented on the 0..1 pixel scale."""

    def __init__(self, base: TensorDataset, transform: Transform, mean: tuple[float, ...], std: tuple[float, ...]):
        self.base = base
        self.transform = transform
        self._mean = torch.tensor(mean, dtype=torch.float32).view(-1, 1, 1)
        self._std = torch.tensor(std, dtype=torch.float32).view(-1, 1, 1)

    def __len__(self) -> int:
        return len(self.base)

    @property
    def labels(self) -> torch.Tensor:
        return self.base.tensors[1]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = self.base[index]
        x = self.transform(x * self._std + self._mean)
        return (x - self._mean) / self._std, y

    def plain(self) -> TensorDataset:
        return self.base


def augmented(ds: Dataset, transform: Transform | None, mean: tuple[float, ...], std: tuple[float, ...]) -> Dataset:
    """``ds`` (a train split) with ``transform`` applied to each item; ``ds`` itself when None."""
    if transform is None:
        return ds
    if isinstance(ds, TensorDataset):
        return Augmented(ds, transform, mean, std)
    return ds.with_augment(transform)


def plain(ds: Dataset) -> Dataset:
    """The deterministic twin of a split (itself when it is not augmented)."""
    return ds.plain() if hasattr(ds, "plain") else ds

