"""torchvision-backed datasets (``mnist``, ``fashion_mnist``, ``cifar10``): torchvision's own
classes and file parsers over ``data.root`` (CIFAR-10's pickled batches through a restricted
unpickler, see :class:`_PresentCIFAR10`), with errors phrased as one :class:`DataError` line.
Imported only when such a dataset is asked for (see :func:`pipelines.data.load_data`)."""

from __future__ import annotations

import os
import pickle

import numpy as np
import torch
from torchvision import datasets as tvd

from pipelines.core.config import DataConfig
from pipelines.core.errors import DataError, error_line


class _RestrictedUnpickler(pickle.Unpickler):
    """Builds numpy arrays, lists, dicts, strings and numbers, and nothing else: a pickle that
    names any other global (``os.system``, ``builtins.eval`` ...) is refused before it runs."""

    def find_class(self, module: str, name: str):
        found = _SAFE_GLOBALS.get((module, name))
        if found is None:
            raise _UnsafePickle(f"{module}.{name}")
        return found


class _UnsafePickle(pickle.UnpicklingError):
    """A pickle that asks for a global outside :data:`_SAFE_GLOBALS`."""


def _latin1_encode(text: str, encoding: str = "utf-8", errors: str = "strict") -> bytes:
    """``_codecs.encode`` as protocol-2 pickles of ``bytes`` use it, limited to latin-1."""
    if encoding not in ("latin1", "latin-1") or not isinstance(text, str):
        raise _UnsafePickle(f"_codecs.encode({encoding!r})")
    return text.encode("latin1", errors)


def _numpy_globals() -> dict[tuple[str, str], object]:
    from numpy._core import multiarray

    out: dict[tuple[str, str], object] = {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype,
                                          ("_codecs", "encode"): _latin1_encode}
    for module in ("numpy.core.multiarray", "numpy._core.multiarray"):  # pickled by numpy 1 / numpy 2
        out[(module, "_reconstruct")] = multiarray._reconstruct
        out[(module, "scalar")] = multiarray.scalar
    return out


_SAFE_GLOBALS = _numpy_globals()


def _load_pickle(path: str, what: str) -> dict:
    """The dict pickled in ``path``, built by :class:`_RestrictedUnpickler`; arrays whose bytes
    exceed the file's (allocated, never read from it) are refused too."""
    try:
        with open(path, "rb") as handle:
            entry = _RestrictedUnpickler(handle, encoding="latin1").load()
    except _UnsafePickle as exc:
        raise DataError(f"data.name=cifar10: {path} is not a {what}: its pickle would call {exc} "
                        "(only numpy arrays, lists, dicts, strings and numbers are read)") from None
    arrays = [v for v in (entry.values() if isinstance(entry, dict) else []) if isinstance(v, np.ndarray)]
    if not isinstance(entry, dict) or sum(a.nbytes for a in arrays) > os.path.getsize(path):
        raise DataError(f"data.name=cifar10: {path} is not a {what} (a pickled dict of arrays and lists)")
    return entry


def _read_batch(path: str) -> tuple[np.ndarray, list[int]]:
    entry = _load_pickle(path, "CIFAR-10 batch")
    data, labels = entry.get("data"), entry.get("labels", entry.get("fine_labels"))
    ok = isinstance(data, np.ndarray) and data.dtype == np.uint8 and data.ndim == 2 and data.shape[1] == 3 * 32 * 32
    if not ok or not isinstance(labels, list) or not all(isinstance(y, int) for y in labels):
        raise DataError(f"data.name=cifar10: {path} is not a CIFAR-10 batch ('data': uint8 rows of 3072 "
                        "values, 'labels': a list of integers)")
    if len(labels) != len(data):
        raise DataError(f"data.name=cifar10: {path} has {len(data)} images but {len(labels)} labels")
    return data, labels


class _PresentCIFAR10(tvd.CIFAR10):
    """CIFAR-10's python batch files as they are in ``data.root``, read without running code.

    torchvision's ``CIFAR10`` compares every batch file with the md5 of the official release and
    then unpickles it, which makes any other file in the same format (a test fixture, a subset)
    unreadable. Skipping the md5 check alone would unpickle whatever sits there, and a pickle can
    run any code. This class reads the same files with :class:`_RestrictedUnpickler` instead and
    lays them out as torchvision does (``data`` [N, 32, 32, 3] uint8, ``targets``, ``classes``).

    It is used only when ``data.download`` is false, i.e. for files the user placed there. When
    ``data.download`` is true the stock ``CIFAR10`` runs instead, with full md5 verification of the
    archive and of every extracted file (and a re-download if they do not match).
    """

    def __init__(self, root: str, train: bool = True, download: bool = False) -> None:
        tvd.VisionDataset.__init__(self, root)
        self.train = train
        folder = os.path.join(self.root, self.base_folder)
        batches = [_read_batch(os.path.join(folder, name)) for name, _ in (self.train_list if train else self.test_list)]
        self.data = np.vstack([data for data, _ in batches]).reshape(-1, 3, 32, 32).transpose((0, 2, 3, 1))
        self.targets = [label for _, labels in batches for label in labels]
        meta_path = os.path.join(folder, self.meta["filename"])
        names = _load_pickle(meta_path, "CIFAR-10 meta file").get(self.meta["key"])
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise DataError(f"data.name=cifar10: {meta_path} has no list of class names under {self.meta['key']!r}")
        self.classes = names
        self.class_to_idx = {name: i for i, name in enumerate(names)}


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
        ds = cls(root=cfg.root, train=train, download=cfg.download)
    except DataError:
        raise
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
    if len(ds.data) != len(ds.targets):  # MNIST's image and label files are read separately
        split = "train" if train else "t10k"
        files = [f for f in _expected_files(cfg.name) if os.path.basename(f).startswith(split)]
        raise DataError(f"data.name={cfg.name}: {len(ds.data)} images but {len(ds.targets)} labels in the "
                        f"{'train' if train else 'test'} split under data.root={cfg.root!r} ({', '.join(files)})")
    return ds


def split_arrays(ds: tvd.VisionDataset) -> tuple[torch.Tensor, torch.Tensor]:
    """Whole split as (uint8 images [N, C, H, W], int64 labels)."""
    data = torch.as_tensor(np.asarray(ds.data))
    if data.ndim == 3:  # MNIST-family: [N, H, W]
        images = data.unsqueeze(1)
    else:  # CIFAR: [N, H, W, C]
        images = data.permute(0, 3, 1, 2)
    labels = torch.as_tensor(np.asarray(ds.targets), dtype=torch.int64)
    return images.contiguous(), labels
