"""torchvision-backed datasets (``mnist``, ``fashion_mnist``, ``cifar10``): torchvision's own
classes and file parsers over ``data.root``, with errors phrased as one :class:`DataError` line.
Imported only when such a dataset is asked for (see :func:`pipelines.data.load_data`)."""

from __future__ import annotations

import os
import pickle

import numpy as np
import torch
from torchvision import datasets as tvd

from pipelines.core.config import DataConfig
from pipelines.core.errors import DataError, error_line


class _PresentCIFAR10(tvd.CIFAR10):
    """torchvision's CIFAR10, accepting the batch files it finds without comparing their md5.

    ``CIFAR10`` insists that every batch file and ``batches.meta`` match the md5 of the official
    release, even when nothing is downloaded. That makes it impossible to read any other file in the
    same format (a test fixture, a subset). This subclass changes *data only*: the expected md5s
    are ``None``, which torchvision's own ``check_integrity`` treats as "the file must exist". All
    parsing (pickle batches, HWC layout, label names from the meta file) is torchvision's code.

    It is used only when ``data.download`` is false, i.e. for files the user placed there. When
    ``data.download`` is true the stock ``CIFAR10`` runs instead, with full md5 verification of the
    archive and of every extracted file (and a re-download if they do not match).
    """

    train_list = [[name, None] for name, _ in tvd.CIFAR10.train_list]
    test_list = [[name, None] for name, _ in tvd.CIFAR10.test_list]
    meta = {**tvd.CIFAR10.meta, "md5": None}


# MNIST-family classes already check only that the (unzipped) raw files exist when download is
# off; md5 is verified on the .gz archives when they are downloaded.
TORCHVISION = {
    "mnist": tvd.MNIST,
    "fashion_mnist": tvd.FashionMNIST,
    "cifar10": tvd.CIFAR10,
}

# Errors torchvision's parsers raise on truncated or malformed files.
_PARSE_ERRORS = (
    OSError,
    ValueError,
    TypeError,
    KeyError,
    IndexError,
    EOFError,
    AssertionError,
    RuntimeError,
    pickle.UnpicklingError,
)


def _expected_files(name: str) -> list[str]:
    """Files (relative to data.root) that torchvision reads for dataset ``name``."""
    cls = TORCHVISION[name]
    if issubclass(cls, tvd.CIFAR10):
        names = [f for f, _ in cls.train_list + cls.test_list] + [cls.meta["filename"]]
        return [os.path.join(cls.base_folder, f) for f in names]
    return [os.path.join(cls.__name__, "raw", os.path.splitext(f)[0]) for f, _ in cls.resources]


def _missing_message(cfg: DataConfig) -> str | None:
    expected = _expected_files(cfg.name)
    missing = [f for f in expected if not os.path.isfile(os.path.join(cfg.root, f))]
    if not missing:
        return None
    fix = "set data.download: true, or place the files there"
    if len(missing) == len(expected):
        return f"data.name={cfg.name}: no dataset files under data.root={cfg.root!r} ({fix})"
    shown = ", ".join(missing[:3]) + (", ..." if len(missing) > 3 else "")
    return (
        f"data.name={cfg.name}: missing {len(missing)} of {len(expected)} dataset files under "
        f"data.root={cfg.root!r}: {shown} ({fix})"
    )


def open_split(cfg: DataConfig, train: bool) -> tvd.VisionDataset:
    cls = TORCHVISION[cfg.name]
    if cls is tvd.CIFAR10 and not cfg.download:
        cls = _PresentCIFAR10
    try:
        return cls(root=cfg.root, train=train, download=cfg.download)
    except _PARSE_ERRORS as exc:
        if not cfg.download:
            missing = _missing_message(cfg)
            if missing is not None:
                raise DataError(missing) from None
        what = "could not download or read" if cfg.download else "could not read"
        raise DataError(
            f"data.name={cfg.name}: {what} dataset files under data.root={cfg.root!r} "
            f"({error_line(exc)})"
        ) from None


def split_arrays(ds: tvd.VisionDataset) -> tuple[torch.Tensor, torch.Tensor]:
    """Whole split as (uint8 images [N, C, H, W], int64 labels)."""
    data = torch.as_tensor(np.asarray(ds.data))
    if data.ndim == 3:  # MNIST-family: [N, H, W]
        images = data.unsqueeze(1)
    else:  # CIFAR: [N, H, W, C]
        images = data.permute(0, 3, 1, 2)
    labels = torch.as_tensor(np.asarray(ds.targets), dtype=torch.int64)
    return images.contiguous(), labels
