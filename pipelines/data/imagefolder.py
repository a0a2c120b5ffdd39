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

from pipelines.core.config import DataConfig
from pipelines.core.errors import DataError
from pipelines.data.decode import Decoder

SPLITS = ("train", "val", "test")
Split = tuple[torch.Tensor, torch.Tensor]  # uint8 images [N, C, H, W], int64 labels


@dataclass(frozen=True)
class FolderData:
    classes: tuple[str, ...]
    train: Split
    val: Split | None  # None: no val/ folder
    test: Split | None


class _Loader:
    """The one decode (:class:`~pipelines.data.decode.Decoder`) as ``ImageFolder``'s loader."""

    def __init__(self, cfg: DataConfig) -> None:
        self.decode = Decoder(cfg.channels, cfg.image_size, cfg.max_image_pixels)

    def __call__(self, path: str) -> torch.Tensor:
        return self.decode(path, path)


class _SplitFolder(tvd.ImageFolder):
    """``ImageFolder`` over one split, numbering classes as the train split does."""

    def __init__(self, root: Path, class_to_idx: dict[str, int] | None, cfg: DataConfig) -> None:
        self._given = class_to_idx
        super().__init__(str(root), loader=_Loader(cfg), allow_empty=True)

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


@dataclass(frozen=True)
class FolderFiles:
    """The files of each split, walked as ``ImageFolder`` walks them (nothing decoded)."""

    classes: tuple[str, ...]
    splits: dict[str, tvd.ImageFolder | None]  # None: no such split folder


def list_folder(cfg: DataConfig) -> FolderFiles:
    """Every split folder under ``cfg.root`` walked and checked (see the module docstring)."""
    root = Path(cfg.root)
    train_root = root / "train"
    if not train_root.is_dir():
        what = "no train/ folder in" if root.is_dir() else "no such folder:"
        raise DataError(f"data.root: {what} {root} (imagefolder expects {root}/train/<class>/<image>, "
                        "optionally val/ and test/)")
    if not _class_folders(train_root):
        raise DataError(f"{train_root}: no class folders (expected {train_root}/<class>/<image>)")
    train_ds = _SplitFolder(train_root, None, cfg)
    _check_not_empty(train_ds, train_root)
    if not train_ds.samples:
        raise DataError(f"{train_root}: no images in its class folders "
                        f"(extensions: {' '.join(tvd.folder.IMG_EXTENSIONS)})")
    splits: dict[str, tvd.ImageFolder | None] = {"train": train_ds}
    for name in SPLITS[1:]:
        split_root = root / name
        if not split_root.is_dir():
            splits[name] = None
            continue
        _check_classes(split_root, train_root, train_ds.classes)
        ds = _SplitFolder(split_root, train_ds.class_to_idx, cfg)
        _check_not_empty(ds, split_root)
        splits[name] = ds
    return FolderFiles(tuple(train_ds.classes), splits)


def read_folder(cfg: DataConfig, files: FolderFiles | None = None) -> FolderData:
    """The image folder under ``cfg.root`` (walked as ``files``) as uint8 tensors (see the module docstring)."""
    files = files or list_folder(cfg)
    check = None if cfg.image_size else _SizeCheck()
    read = {name: None if ds is None else _read(ds, Path(ds.root), check) for name, ds in files.splits.items()}
    return FolderData(files.classes, read["train"], read["val"], read["test"])
