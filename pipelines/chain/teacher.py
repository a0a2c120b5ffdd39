"""Stage train_baseline as a function: the teacher trained (or its given weights evaluated)."""

from __future__ import annotations

from typing import Any

from torch import nn

from pipelines.data import DataBundle, labels_of, plain
from pipelines.training.context import Context, train
from pipelines.training.loop import History, cross_entropy, predict


def train_teacher(ctx: Context) -> tuple[nn.Module, History]:
    """The teacher trained for ``train.epochs``; with 0 epochs, ``teacher.weights`` as given and a
    history of one row (epoch 0: their loss on the train split, their val accuracy)."""
    model = ctx.new_model("teacher")
    if ctx.params.train.epochs == 0:
        model.to(ctx.device).eval()
        images = plain(ctx.data.train)
        loss = cross_entropy(predict(model, ctx.loader("train", dataset=images), ctx.device), labels_of(images)).item()
        val = ctx.accuracy(model, "val")
        return model.cpu().eval(), History([{"epoch": 0, "train_loss": loss, "val_accuracy": val}], val, 0)
    history = train(ctx, model, ctx.params.train.epochs, ctx.params.train.lr, "teacher")
    return model.cpu().eval(), history


def data_record(data: DataBundle) -> dict[str, Any]:
    """How the images were prepared, for the metrics file: enough to feed the model the same
    inputs in plain PyTorch (``transforms.Normalize(mean, std)`` on 0..1 pixels)."""
    out: dict[str, Any] = {"data_mean": list(data.mean), "data_std": list(data.std),
                           "image_size": data.image_size, "in_channels": data.in_channels,
                           "num_classes": data.num_classes}
    if data.classes:
        out["classes"] = list(data.classes)
    out.update(data_in_memory=data.in_memory, data_workers=data.workers, data_cache=data.cache,
               train_images=len(data.train),
               val_images=len(data.val), test_images=len(data.test))
    return out
