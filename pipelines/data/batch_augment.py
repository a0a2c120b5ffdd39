"""``data.augment`` applied to a whole batch at once, each image with its own random draw, for
splits read a batch at a time in the training process (:mod:`pipelines.data.decoded`).

The two augmentations most training recipes of small images use have a batch form here:
``random_crop`` with padding (constant fill, output the image's own size: pad the batch once,
then gather each image's window at its own offset) and ``horizontal_flip`` (flip the images whose
draw says so). Draws follow torchvision's own: a crop offset uniform over every valid position,
a flip with probability ``p``. Any other transform of ``data.augment`` runs image by image, in
order, exactly as torchvision runs it.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

Batch = Callable[[torch.Tensor], torch.Tensor]


def _flip(p: float) -> Batch:
    def run(x: torch.Tensor) -> torch.Tensor:
        chosen = torch.rand(len(x)) < p
        if chosen.any():
            x[chosen] = x[chosen].flip(-1)
        return x

    return run


def _crop(padding: list[int]) -> Batch:
    left, right, top, bottom = padding  # v2.RandomCrop's order, which is F.pad's for the last two dims

    def run(x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        padded = F.pad(x, (left, right, top, bottom))
        oy = torch.randint(0, top + bottom + 1, (n,))
        ox = torch.randint(0, left + right + 1, (n,))
        rows = (oy[:, None] + torch.arange(h))[:, None, :, None]
        cols = (ox[:, None] + torch.arange(w))[:, None, None, :]
        return padded[torch.arange(n)[:, None, None, None], torch.arange(c)[None, :, None, None], rows, cols]

    return run


def _per_image(transform) -> Batch:
    def run(x: torch.Tensor) -> torch.Tensor:
        return torch.stack([transform(image) for image in x])

    return run


def _one(transform) -> Batch:
    from torchvision.transforms import v2

    if type(transform) is v2.RandomHorizontalFlip:
        return _flip(float(transform.p))
    if (type(transform) is v2.RandomCrop and transform.padding is not None and not transform.pad_if_needed
            and transform.padding_mode == "constant" and transform._fill == {"others": 0}):
        size = tuple(transform.size)
        crop = _crop(list(transform.padding))
        return lambda x: crop(x) if tuple(x.shape[-2:]) == size else _per_image(transform)(x)
    return _per_image(transform)


def batched(transform) -> Batch | None:
    """The ``v2.Compose`` of :func:`pipelines.data.augment.build` (or None) as a function of a
    float batch [N, C, H, W] on the 0..1 scale."""
    if transform is None:
        return None
    steps = [_one(t) for t in getattr(transform, "transforms", [transform])]

    def run(x: torch.Tensor) -> torch.Tensor:
        for step in steps:
            x = step(x)
        return x

    return run
