"""The one way batches are fed: :func:`make_loader`, a ``torch.utils.data.DataLoader`` over any
split (in-memory tensors in the process, streamed images in ``workers`` worker processes that
persist across epochs, pinned memory on CUDA).

What goes wrong in a worker comes back as one :class:`~pipelines.core.errors.DataError` line:
a corrupt image or a bad shard member names its file (not DataLoader's "Caught DataError in
DataLoader worker process 0" and the worker's traceback), and a worker that dies (killed, out of
memory) ends the pass with one line naming it instead of a hang (DataLoader notices the dead
process; see :func:`as_data_error`).

A dead worker is noticed by the loader itself, in its own frame: each wait for a batch checks its
workers every 5 s (``MP_STATUS_CHECK_INTERVAL``). DataLoader's other mechanism, a process-wide
SIGCHLD handler, is not installed (:func:`_no_asynchronous_worker_errors`): it raises its
RuntimeError at whatever line the main thread is on when *any* child exits while a dead worker is
still registered, a `git` or `dvc` subprocess included. It once raised inside a weakref callback
and once ended a pytest worker mid-report (CI hung until its limit).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence

import torch
from torch.utils.data import BatchSampler, DataLoader, Dataset, IterableDataset, RandomSampler, SequentialSampler

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


def _no_asynchronous_worker_errors() -> None:
    """Keep DataLoader from installing its SIGCHLD handler (see the module docstring); where torch
    no longer has the flag this sets, its default stays."""
    from torch.utils.data._utils import signal_handling

    if hasattr(signal_handling, "_SIGCHLD_handler_set"):
        signal_handling._SIGCHLD_handler_set = True


class FeedingLoader(DataLoader):
    """A DataLoader whose iteration turns worker failures into one line (:func:`as_data_error`)."""

    def __iter__(self) -> Iterator:
        _no_asynchronous_worker_errors()
        batches = super().__iter__()
        while True:
            try:
                batch = next(batches)
            except StopIteration:
                return
            except Exception as exc:  # noqa: BLE001 - translated, or re-raised as it was
                batches._shutdown_workers()  # the live ones too: the next pass starts new workers
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
    if getattr(ds, "batched", False):  # reads whole batches itself (pipelines.data.decoded), in this process
        order = RandomSampler(ds, generator=generator) if shuffle else SequentialSampler(ds)
        return DataLoader(ds, batch_size=None, sampler=BatchSampler(order, batch_size, drop_last=False), num_workers=0)
    if workers == 0:
        return DataLoader(ds, batch_size=batch_size, shuffle=shuffle, generator=generator, num_workers=0)
    return FeedingLoader(ds, batch_size=batch_size, shuffle=shuffle, generator=generator, num_workers=workers,
                         persistent_workers=True, pin_memory=torch.cuda.is_available(), prefetch_factor=4)
