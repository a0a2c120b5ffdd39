"""The one way batches are fed: :func:`make_loader`, a ``torch.utils.data.DataLoader`` over any
split (in-memory tensors in the process, streamed images in ``workers`` worker processes that
persist across epochs, pinned memory on CUDA).

What goes wrong in a worker comes back as one :class:`~pipelines.core.errors.DataError` line:
a corrupt image or a bad shard member names its file (not DataLoader's "Caught DataError in
DataLoader worker process 0" and the worker's traceback), and a worker that dies (killed, out of
memory) ends the pass with one line naming it instead of a hang (DataLoader notices the dead
process; see :func:`as_data_error`).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence

import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset

from pipelines.core.errors import DataError, UserError, error_line, first_line
from pipelines.core.params_base import CORES

# "pipelines.core.errors.DataError: <message>": the last line of a worker's formatted traceback
_RAISED = re.compile(r"^[A-Za-z_][\w.]*(?:Error|Exception): (.+)$")


def default_workers(cores: int = CORES) -> int:
    """Worker processes for a streamed split: one core stays with the training process."""
    return max(1, min(cores - 1, 8))


def as_data_error(exc: BaseException) -> BaseException:
    """``exc`` from iterating a DataLoader, as the one line the user should see: a user error raised
    in a worker keeps its own message; a dead worker becomes a DataError naming it; anything else
    (a bug) is returned unchanged, traceback and all."""
    text = str(exc)
    if isinstance(exc, UserError) and text.startswith("Caught "):
        lines = [ln for ln in text.strip().splitlines() if ln.strip()]
        found = _RAISED.match(lines[-1].strip()) if lines else None
        return type(exc)(found.group(1) if found else first_line(exc))
    # DataLoader's own check, or the dead worker's end of the pipe a batch was coming through
    if (isinstance(exc, RuntimeError) and "DataLoader worker" in text) or isinstance(exc, (ConnectionError, EOFError)):
        return DataError(f"a data loader worker died ({error_line(exc)}): killed, or out of memory; lower "
                         "data.num_workers or data.batch_size, or free memory")
    return exc


class FeedingLoader(DataLoader):
    """A DataLoader whose iteration turns worker failures into one line (:func:`as_data_error`)."""

    def __iter__(self) -> Iterator:
        batches = super().__iter__()
        while True:
            try:
                batch = next(batches)
            except StopIteration:
                return
            except Exception as exc:  # noqa: BLE001 - translated, or re-raised as it was
                # stop the workers now: a dead one left registered would raise again from the
                # SIGCHLD handler whenever any child process exits later
                shutdown = getattr(batches, "_shutdown_workers", None)
                if shutdown is not None:
                    try:
                        shutdown()
                    except Exception:  # noqa: BLE001 - DataLoader's SIGCHLD handler reporting the same
                        pass           # dead worker again while joining it: the error below says it once
                self._iterator = None
                translated = as_data_error(exc)
                if translated is exc:
                    raise
                raise translated from None
            yield batch


def make_loader(ds: Dataset | Sequence, batch_size: int, shuffle: bool, seed: int = 0, workers: int = 0) -> DataLoader:
    """A DataLoader over ``ds``; when shuffling, the order comes from its own seeded generator (so
    also which worker seeds each augmentation draws). ``workers`` 0: in this process (in-memory
    tensors); more: persistent worker processes (streamed images)."""
    if isinstance(ds, IterableDataset):  # shards: the dataset shuffles itself (seed and epoch)
        shuffle = False
        if not getattr(ds, "shuffle", False):
            workers = min(workers, 1)  # one reader keeps the shard order: outcomes in image order
    generator = torch.Generator().manual_seed(seed) if shuffle else None
    if workers == 0:
        return DataLoader(ds, batch_size=batch_size, shuffle=shuffle, generator=generator, num_workers=0)
    return FeedingLoader(ds, batch_size=batch_size, shuffle=shuffle, generator=generator, num_workers=workers,
                         persistent_workers=True, pin_memory=torch.cuda.is_available(), prefetch_factor=4)
