"""``data.name: imagefolder``: the user's own images in torchvision's ``ImageFolder`` layout.

    <data.root>/train/<class>/<image>   required; the class folders (sorted) number the classes
    <data.root>/val/<class>/<image>     optional, else a seeded stratified val_fraction of train
    <data.root>/test/<class>/<image>    optional, else a seeded stratified test_fraction of train

Images are read by torchvision's ``ImageFolder`` (same file walk, same extensions, same class
numbering), decoded by PIL as its default loader does (``convert("RGB")``, or ``"L"`` with
``data.channels: 1``), resized with ``transforms.Resize((image_size, image_size))`` when
``data.image_size`` is set, and kept as uint8 ``[N, C, H, W]`` tensors;
:func:`pipelines.data.load_data` carves the missing splits and normalises them.

Bad input is one :class:`~pipelines.core.errors.DataError` line naming the file or folder: an unreadable
or corrupt image, a class folder without images, a val/test class that train lacks, images of
different sizes when ``data.image_size`` is not set.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torchvision import datasets as tvd
from torchvision import transforms

from pipelines.core.config import DataConfig
from pipelines.core.errors import DataError, error_line

SPLITS = ("train", "val", "test")
Split = tuple[torch.Tensor, torch.Tensor]  # uint8 images [N, C, H, W], int64 labels


@dataclass(frozen=True)
class FolderData:
    classes: tuple[str, ...]
    train: Split
    val: Split | None  # None: no val/ folder
    test: Split | None


class _Loader:
    """PIL decode as torchvision's ``pil_loader``, with the file named when it fails."""

    def __init__(self, channels: int) -> None:
        self.mode = "L" if channels == 1 else "RGB"

    def __call__(self, path: str):
        from PIL import Image

        try:
            with open(path, "rb") as handle:
                return Image.open(handle).convert(self.mode)  # convert() decodes the whole file
        except Exception as exc:  # noqa: BLE001 - PIL raises OSError, ValueError, DecompressionBombError...
            raise DataError(f"{path}: not a readable image ({error_line(exc)})") from None


class _SplitFolder(tvd.ImageFolder):
    """``ImageFolder`` over one split, numbering classes as the train split does."""

    def __init__(self, root: Path, class_to_idx: dict[str, int] | None, channels: int, size: int | None) -> None:
        self._given = class_to_idx
        steps = [transforms.Resize((size, size))] if size else []
        super().__init__(str(root), transform=transforms.Compose([*steps, transforms.PILToTensor()]),
                         loader=_Loader(channels), allow_empty=True)

    def find_classes(self, directory: str) -> tuple[list[str], dict[str, int]]:
        if self._given is None:
            return super().find_classes(directory)
        return sorted(self._given, key=self._given.get), self._given


def _class_folders(root: Path) -> list[str]:
    return sorted(entry.name for entry in os.scandir(root) if entry.is_dir())


def _check_classes(root: Path, train_root: Path, train_classes: list[str]) -> None:
    extra = [name for name in _class_folders(root) if name not in train_classes]
    if extra:
        raise DataError(f"{root / extra[0]}: class {extra[0]!r} is not in {train_root} "
                        f"(train has {len(train_classes)} classes: {', '.join(train_classes[:8])}"
                        f"{', ...' if len(train_classes) > 8 else ''})")


def _check_not_empty(ds: tvd.ImageFolder, root: Path) -> None:
    found = {label for _, label in ds.samples}
    for name in _class_folders(root):
        if ds.class_to_idx.get(name) not in found:
            raise DataError(f"{root / name}: class folder holds no images "
                            f"(extensions: {' '.join(tvd.folder.IMG_EXTENSIONS)})")


class _SizeCheck:
    """Every image the same square size when data.image_size does not resize them."""

    def __init__(self) -> None:
        self.first: tuple[str, tuple[int, int]] | None = None

    def __call__(self, path: str, image: torch.Tensor) -> None:
        size = (int(image.shape[-1]), int(image.shape[-2]))  # W, H as image viewers say it
        if self.first is None:
            if size[0] != size[1]:
                raise DataError(f"{path}: {size[0]}x{size[1]} is not square; set data.image_size to resize "
                                "every image to image_size x image_size")
            self.first = (path, size)
        elif size != self.first[1]:
            raise DataError(f"{path}: {size[0]}x{size[1]}, but {self.first[0]} is {self.first[1][0]}x"
                            f"{self.first[1][1]}; set data.image_size to resize every image")


def _read(ds: tvd.ImageFolder, root: Path, check: _SizeCheck | None) -> Split:
    if not ds.samples:
        raise DataError(f"{root}: no images in its class folders (extensions: {' '.join(tvd.folder.IMG_EXTENSIONS)})")
    images = []
    for index, (path, _) in enumerate(ds.samples):
        image, _ = ds[index]
        if check is not None:
            check(path, image)
        images.append(image)
    return torch.stack(images), torch.as_tensor(ds.targets, dtype=torch.int64)


def read_folder(cfg: DataConfig) -> FolderData:
    """The image folder under ``cfg.root`` as uint8 tensors (see the module docstring)."""
    root = Path(cfg.root)
    train_root = root / "train"
    if not train_root.is_dir():
        what = "no train/ folder in" if root.is_dir() else "no such folder:"
        raise DataError(f"data.root: {what} {root} (imagefolder expects {root}/train/<class>/<image>, "
                        "optionally val/ and test/)")
    if not _class_folders(train_root):
        raise DataError(f"{train_root}: no class folders (expected {train_root}/<class>/<image>)")
    check = None if cfg.image_size else _SizeCheck()
    train_ds = _SplitFolder(train_root, None, cfg.channels, cfg.image_size)
    _check_not_empty(train_ds, train_root)
    splits: dict[str, Split | None] = {"train": _read(train_ds, train_root, check)}
    for name in SPLITS[1:]:
        split_root = root / name
        if not split_root.is_dir():
            splits[name] = None
            continue
        _check_classes(split_root, train_root, train_ds.classes)
        ds = _SplitFolder(split_root, train_ds.class_to_idx, cfg.channels, cfg.image_size)
        _check_not_empty(ds, split_root)
        splits[name] = _read(ds, split_root, check)
    return FolderData(tuple(train_ds.classes), splits["train"], splits["val"], splits["test"])
