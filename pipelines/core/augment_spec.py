"""``data.augment`` entries: torchvision ``transforms.v2`` transforms by snake_case name.

An entry is a bare name (``horizontal_flip``) or a one-key mapping of a name to its keyword
arguments (``{random_crop: {size: 32, padding: 4}}``). A name is the snake_case of a v2 class
(``random_horizontal_flip`` -> ``RandomHorizontalFlip``), the ``random_`` prefix optional
(``horizontal_flip`` means the same). Augmentation runs on float images on the 0..1 pixel scale,
before normalisation, on the train split only (:mod:`pipelines.data.augment`).

:func:`resolve` is the one parser: the schema validates each entry with it (building the
transform and running it on a small image), the data layer builds the pipeline with it.
"""

from __future__ import annotations

import re
from typing import Any

# v2 classes that are not per-image augmentations of a float image: conversions, normalisation,
# containers that take other transforms, batch-level mixing (labels), detection/video helpers.
EXCLUDED = frozenset({
    "Transform", "Compose", "Lambda", "RandomApply", "RandomChoice", "RandomOrder", "LinearTransformation",
    "Normalize", "ToDtype", "ConvertImageDtype", "ToImage", "ToPILImage", "ToPureTensor", "ToTensor",
    "PILToTensor", "FiveCrop", "TenCrop", "CutMix", "MixUp", "ClampBoundingBoxes", "ClampKeyPoints",
    "ConvertBoundingBoxFormat", "SanitizeBoundingBoxes", "SanitizeKeyPoints", "SetClampingMode",
    "UniformTemporalSubsample", "RandomIoUCrop", "RGB", "Grayscale",
})


def _snake(name: str) -> str:
    """``RandomHorizontalFlip`` -> ``random_horizontal_flip``, ``JPEG`` -> ``jpeg``."""
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", "_", name).lower()


def transforms() -> dict[str, type]:
    """snake_case name -> v2 class, for every per-image transform v2 has."""
    from torchvision.transforms import v2

    return {_snake(n): obj for n, obj in vars(v2).items()
            if isinstance(obj, type) and issubclass(obj, v2.Transform) and n not in EXCLUDED}


def split_entry(entry: Any) -> tuple[str, dict[str, Any]]:
    """(name, keyword arguments) of one entry; ValueError for any other shape."""
    if isinstance(entry, str):
        return entry, {}
    if isinstance(entry, dict) and len(entry) == 1:
        (name, args), = entry.items()
        if args is None:
            args = {}
        if isinstance(name, str) and isinstance(args, dict) and all(isinstance(k, str) for k in args):
            return name, args
    raise ValueError(f"an entry is a transform name or a one-key mapping {{name: {{argument: value}}}} (got {entry!r})")


def resolve(entry: Any) -> tuple[str, Any]:
    """(name, the built v2 transform) for one entry; ValueError naming what is wrong."""
    name, args = split_entry(entry)
    known = transforms()
    cls = known.get(name) or known.get(f"random_{name}")
    if cls is None:
        shown = ", ".join(sorted(known))
        raise ValueError(f"unknown transform {name!r}; allowed (torchvision transforms.v2, snake_case): {shown}")
    try:
        return name, cls(**args)
    except Exception as exc:  # noqa: BLE001 - whatever a constructor raises about its arguments
        first = (str(exc).splitlines() or [type(exc).__name__])[0][:160]
        raise ValueError(f"{name}: bad arguments {args!r} ({first})") from None


def check(entries: list[Any], channels: int, size: int = 256) -> None:
    """Each entry resolves and runs on a float 0..1 image of ``channels`` x ``size`` x ``size``
    (so a transform that needs uint8 images or other channels is refused at validation; the
    probe is large so that crops sized for real images fit, and the data layer checks the real
    size once it is known)."""
    import torch

    for index, entry in enumerate(entries):
        try:
            name, transform = resolve(entry)
        except ValueError as exc:
            raise ValueError(f"entry {index}: {exc}") from None
        try:
            transform(torch.rand(channels, size, size))
        except Exception as exc:  # noqa: BLE001 - any failure here is a bad augmentation setting
            raise ValueError(f"entry {index} ({name}) cannot run on a float image of {channels} channels with "
                             f"0..1 pixels ({type(exc).__name__}: {str(exc).splitlines()[0][:160]})") from None
