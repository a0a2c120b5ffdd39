"""``data.cache: decoded`` on a small real image folder: the same images and labels as streaming
them, the file found again by its key and rebuilt when an image changes, a corrupt image named in
one line with nothing left behind, training without worker processes; and the batch form of
``random_crop``/``horizontal_flip`` (each image its own draw, every output a real crop or flip)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from conftest import corrupt_copy

from pipelines.core.config import validate
from pipelines.core.errors import DataError
from pipelines.data.augment import build
from pipelines.data.batch_augment import batched
from pipelines.data.synthetic import write_folder
from pipelines.training.context import Context, train

GIVEN = {"mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return write_folder(tmp_path_factory.mktemp("decoded"), {"train": 40, "test": 12}, classes=3, size=16)


def _ctx(folder: Path, cache_dir: Path, **data) -> Context:
    """A context whose data is loaded (the decoded file built or found) before it returns."""
    ctx = Context(validate({
        "data": {"name": "imagefolder", "root": str(folder), "batch_size": 16, "in_memory": False, "num_workers": 1,
                 "cache": "decoded", "cache_dir": str(cache_dir), **GIVEN, **data},
        "teacher": {"arch": "cnn", "channels": [8, 16], "depth": 1}, "train": {"epochs": 1, "lr": 0.01},
        "tracking": {"enabled": False}}))
    assert ctx.data.cache == "decoded"
    return ctx


def _files(cache_dir: Path) -> list[Path]:
    return sorted(cache_dir.glob("*.u8")) if cache_dir.exists() else []


def test_decoded_splits_are_the_streamed_ones_image_for_image(folder, tmp_path):
    decoded = _ctx(folder, tmp_path / "cache")
    streamed = Context(validate({"data": {"name": "imagefolder", "root": str(folder), "batch_size": 16,
                                          "in_memory": False, "num_workers": 1, **GIVEN},
                                 "tracking": {"enabled": False}}))
    assert decoded.data.cache == "decoded" and decoded.data.workers == 0 and not decoded.data.in_memory
    (cached,) = _files(tmp_path / "cache")
    assert cached.stat().st_size == 3 * 16 * 16 * 3 * (40 + 12)  # every image of every split (3 classes), uint8
    for split in ("train", "val", "test"):
        x_dec, y_dec = decoded.split_tensors(split)
        x_str, y_str = streamed.split_tensors(split)
        assert torch.equal(y_dec, y_str) and torch.allclose(x_dec, x_str, atol=1e-6)


def test_the_file_is_found_again_by_its_key_and_rebuilt_when_an_image_changes(folder, tmp_path):
    copy = tmp_path / "copy"
    for path in folder.rglob("*.png"):
        target = copy / path.relative_to(folder)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(path.read_bytes())
    cache = tmp_path / "cache"
    first = _ctx(copy, cache)
    (built,) = _files(cache)
    stamp = built.stat().st_mtime_ns
    _ctx(copy, cache)
    assert _files(cache) == [built] and built.stat().st_mtime_ns == stamp  # reused, not rewritten
    changed = next(iter(sorted((copy / "train").rglob("*.png"))))
    Image.new("RGB", (16, 16), (255, 0, 0)).save(changed)
    second = _ctx(copy, cache)
    assert len(_files(cache)) == 2  # a new key: the old file is not trusted for the new images
    assert any(not torch.equal(first.split_tensors(s)[0], second.split_tensors(s)[0]) for s in ("train", "val"))


def test_a_corrupt_image_is_named_in_one_line_and_no_file_is_left(folder, tmp_path):
    copy, bad = corrupt_copy(folder, tmp_path)
    with pytest.raises(DataError) as err:
        _ctx(copy, tmp_path / "cache")
    assert str(bad) in str(err.value) and "\n" not in str(err.value)
    assert list((tmp_path / "cache").iterdir()) == []  # no partial file, no temporary left


def test_training_reads_batches_in_process_with_augmentation(folder, tmp_path):
    ctx = _ctx(folder, tmp_path / "cache", augment=[{"random_crop": {"size": 16, "padding": 2}}, "horizontal_flip"])
    loader = ctx.loader("train", shuffle=True)
    x, y = next(iter(loader))
    assert x.shape == (16, 3, 16, 16) and y.shape == (16,) and loader.num_workers == 0
    plain_x, _ = ctx.split_tensors("train")
    assert not torch.allclose(x, plain_x[:16])  # augmented (and shuffled)
    stats = train(ctx, ctx.new_model("teacher"), 1, 0.01, "decoded")
    assert stats is not None


def test_batch_crop_and_flip_draw_per_image_and_output_real_crops_or_flips():
    torch.manual_seed(0)
    x = torch.rand(64, 3, 8, 8)
    crop = batched(build([{"random_crop": {"size": 8, "padding": 2}}], 3, 8))
    out = crop(x.clone())
    padded = F.pad(x, (2, 2, 2, 2))
    offsets = set()
    for i in range(len(x)):
        found = [(oy, ox) for oy in range(5) for ox in range(5)
                 if torch.equal(out[i], padded[i, :, oy:oy + 8, ox:ox + 8])]
        assert found, i  # every output is a window of its own padded image
        offsets.add(found[0])
    assert len(offsets) > 10  # not one draw for the whole batch
    flip = batched(build(["horizontal_flip"], 3, 8))
    out = flip(x.clone())
    flipped = [torch.equal(out[i], x[i].flip(-1)) for i in range(len(x))]
    assert all(f or torch.equal(out[i], x[i]) for i, f in enumerate(flipped))
    assert 10 < sum(flipped) < 54  # p = 0.5 per image
    other = batched(build([{"random_rotation": {"degrees": 10}}], 3, 8))  # no batch form: image by image
    assert other(x.clone()).shape == x.shape
