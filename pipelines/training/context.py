"""One process's view of an experiment: params bound to their data, device and models, and the
one way to train a model under ``params.train`` (:func:`train`)."""

from __future__ import annotations

import hashlib
import itertools
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import torch
from torch import nn
from torch.utils.data import IterableDataset, Subset, TensorDataset

from pipelines.core.config import Params
from pipelines.core.kinds import cpu_only
from pipelines.data import DataBundle, load_data, make_loader, plain, split_digest
from pipelines.models import build_model, check_output, load_weights, model_spec
from pipelines.training.loop import EpochCallback, History, evaluate, fit, outcomes, resolve_device, seed_everything


@dataclass
class Context:
    """Params plus the lazily loaded data and chosen device, shared by one process's steps."""

    params: Params
    # called after every training epoch run under this context (a search trial reports to its pruner)
    after_epoch: EpochCallback | None = field(default=None, compare=False, repr=False)

    @cached_property
    def data(self) -> DataBundle:
        return load_data(self.params.data, self.params.seed)

    @cached_property
    def device(self) -> torch.device:
        return resolve_device(self.params.train.device)

    def derive(self, params: Params, after_epoch: EpochCallback | None = None) -> "Context":
        """A context for ``params`` (e.g. one search trial's) that reuses this one's loaded data
        when the data section and seed (which decide the split) are the same."""
        ctx = Context(params, after_epoch)
        if params.data == self.params.data and params.seed == self.params.seed:
            ctx.data = self.data  # type: ignore[misc]  # fills the cached_property's slot
        return ctx

    def loader(self, split: str, shuffle: bool = False, dataset=None):
        """Batches of ``split`` (or ``dataset``) in order, or shuffled by the seed; streamed splits are
        read by ``data.num_workers`` persistent worker processes."""
        ds = dataset if dataset is not None else getattr(self.data, split)
        return make_loader(ds, self.params.data.batch_size, shuffle, seed=self.params.seed, workers=self.data.workers)

    def example(self, batch_size: int = 2) -> torch.Tensor:
        test = self.data.test
        if isinstance(test, TensorDataset):
            images = test.tensors[0]
        else:  # streamed: the first few test images, read in this process
            items = iter(test) if isinstance(test, IterableDataset) else (test[i] for i in range(len(test)))
            images = torch.stack([image for image, *_ in itertools.islice(items, batch_size)])
        reps = -(-batch_size // len(images))
        return images.repeat(reps, 1, 1, 1)[:batch_size].contiguous()

    def calibration_indices(self, count: int | None = None) -> list[int]:
        """Which train images PTQ calibrates on: the first ``count`` (default
        ``quantize.calibration_batches``) batches of the seeded shuffled order, as indices."""
        count = self.params.quantize.calibration_batches if count is None else count
        order = make_loader(range(len(self.data.train)), self.params.data.batch_size, True, seed=self.params.seed)
        return torch.cat(list(itertools.islice(order, count))).tolist()  # the seeded loader's own order

    def calibration_batches(self, count: int | None = None) -> list[torch.Tensor]:
        """The calibration images (:meth:`calibration_indices`) in batches, deterministic (never
        augmented): what PTQ calibrates on, in every engine and every deploy target."""
        train = self.data.train
        if isinstance(train, IterableDataset):  # shards: the first images of a seeded shuffled pass
            count = self.params.quantize.calibration_batches if count is None else count
            return list(itertools.islice((images for images, *_ in self.loader("train", dataset=train.calibration())),
                                         count))
        subset = Subset(plain(train), self.calibration_indices(count))
        return [images for images, *_ in self.loader("train", dataset=subset)]

    def calibration_digest(self, count: int | None = None) -> str:
        """sha256 of the calibration images and their order: the same for every engine."""
        digest = hashlib.sha256()
        for images in self.calibration_batches(count):
            digest.update(images.detach().cpu().contiguous().numpy().tobytes())
        return digest.hexdigest()

    def accuracy(self, model: nn.Module, split: str = "test") -> float:
        # int8 models (torch.ao kernels, PT2E graphs with x86 int8 ops) run on the CPU only.
        return evaluate(model, self.loader(split), "cpu" if cpu_only(model) else self.device)

    def correct(self, model: nn.Module, split: str = "test") -> torch.Tensor:
        """Per image of ``split``, in order: did ``model`` classify it right (bool tensor)? What
        paired comparisons of two models on the same images need (``pipelines.core.stats``)."""
        return outcomes(model, self.loader(split), "cpu" if cpu_only(model) else self.device)

    def split_tensors(self, split: str = "test") -> tuple[torch.Tensor, torch.Tensor]:
        """``split`` as (images, labels) tensors: held splits as they are, a streamed one read
        whole into memory (for the deploy targets' accuracy, which take arrays)."""
        ds = plain(getattr(self.data, split))
        if isinstance(ds, TensorDataset):
            return ds.tensors[0], ds.tensors[1]
        batches = list(self.loader(split, dataset=ds))
        return torch.cat([b[0] for b in batches]), torch.cat([b[1] for b in batches])

    def digest(self, split: str = "test") -> str:
        """sha256 of ``split``'s images and labels: which images an accuracy was measured on."""
        return split_digest(getattr(self.data, split))

    def spec(self, which: str) -> dict[str, Any]:
        return model_spec(getattr(self.params, which), self.data.in_channels, self.data.num_classes,
                          self.data.image_size)

    def new_model(self, which: str) -> nn.Module:
        """``which`` (teacher | student) as params say: built, checked on a batch of the data, and
        started from ``<which>.weights`` when given."""
        cfg = getattr(self.params, which)
        seed_everything(self.params.seed)
        model = build_model(cfg, self.data.in_channels, self.data.num_classes, self.data.image_size, key=which)
        check_output(model, self.example(2), self.data.num_classes, which, cfg.arch)
        if cfg.weights is not None:
            load_weights(model, cfg.weights, which, cfg.arch)
        return model


def train(ctx: Context, model: nn.Module, epochs: int, lr: float, desc: str, loss_fn=None,
          train_set=None, after_epoch: EpochCallback | None = None) -> History:
    """Train ``model`` in place for ``epochs`` with ``params.train``'s optimizer and weight decay,
    validating on the validation split after every epoch (``after_epoch(epoch, val_accuracy)``,
    by default the context's own)."""
    t = ctx.params.train
    kwargs = {"loss_fn": loss_fn} if loss_fn is not None else {}
    seed_everything(ctx.params.seed)
    return fit(model, ctx.loader("train", shuffle=True, dataset=train_set), ctx.loader("val"), epochs=epochs,
               lr=lr, weight_decay=t.weight_decay, optimizer=t.optimizer, device=ctx.device, desc=desc,
               after_epoch=after_epoch if after_epoch is not None else ctx.after_epoch, **kwargs)
