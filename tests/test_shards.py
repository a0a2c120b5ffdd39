"""``data.name: webdataset``: tar shards read with the webdataset package give the images of the
folder they were written from; hostile or broken shards are refused in one line naming them."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest
import torch

from pipelines.chain.distill import distill_student
from pipelines.core.config import DataConfig, ParamsError, validate
from pipelines.core.errors import DataError
from pipelines.data import load_data
from pipelines.data.synthetic import write_folder, write_shards
from pipelines.training.context import Context, train

GIVEN = {"mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}


@pytest.fixture(scope="module")
def made(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("shards")
    folder = write_folder(root / "images", {"train": 30, "val": 6, "test": 8}, classes=3, size=16)
    for split in ("train", "val", "test"):
        write_shards(folder, split, root / "tar", per_shard=20)
    return folder, root / "tar"


def _data(tar: Path, **extra) -> dict:
    return {"name": "webdataset", "batch_size": 16, "train_shards": str(tar / "train-{000000..000004}.tar"),
            "val_shards": [str(tar / "val-000000.tar")], "test_shards": str(tar / "test-00000{0..1}.tar"), **extra}


def _params(data: dict) -> object:
    return validate({"data": data, "teacher": {"arch": "cnn", "channels": [8, 16], "depth": 1},
                     "student": {"arch": "mlp", "hidden": [16]}, "distill": {"epochs": 1, "compare_without_kd": False},
                     "train": {"epochs": 1, "lr": 0.01}, "tracking": {"enabled": False}})


def test_shards_hold_the_folder_s_images_in_order(made):
    folder, tar = made
    held = Context(_params({"name": "imagefolder", "root": str(folder), "batch_size": 16, **GIVEN}))
    shards = Context(_params(_data(tar, num_workers=2, **GIVEN)))
    assert (len(shards.data.train), len(shards.data.val), len(shards.data.test)) == (90, 18, 24)
    assert shards.data.num_classes == 3 and not shards.data.in_memory
    for split in ("val", "test"):
        x_held, y_held = held.split_tensors(split)
        x_shards, y_shards = shards.split_tensors(split)
        assert torch.equal(y_held, y_shards) and torch.allclose(x_held, x_shards, atol=1e-6)
    model = held.new_model("teacher")
    assert torch.equal(held.correct(model, "test"), shards.correct(model, "test"))


# two workers on purpose (their order is the point), also on a worker pinned to one core (conftest._pin_worker)
@pytest.mark.filterwarnings("ignore:This DataLoader will create 2 worker processes:UserWarning")
def test_training_reads_every_train_image_once_per_epoch_in_a_seeded_order(made):
    _, tar = made
    ctx = Context(_params(_data(tar, num_workers=2, **GIVEN)))
    history = train(ctx, ctx.new_model("teacher"), 2, 0.01, "shards")
    assert history.images == 2 * 90
    first = torch.cat(Context(_params(_data(tar, num_workers=2, **GIVEN))).calibration_batches(2))
    assert torch.equal(first, torch.cat(ctx.calibration_batches(2)))  # same images for every engine
    labels = torch.cat([y for _, y in ctx.loader("train")])
    assert sorted(labels.tolist()) == sorted(ctx.data.train.labels.tolist())


def test_statistics_from_a_seeded_sample_of_train(made):
    _, tar = made
    cfg = DataConfig(**_data(tar, num_workers=0, stats_sample=32))
    a, b = load_data(cfg, seed=0), load_data(cfg, seed=0)
    assert a.mean == b.mean and len(a.mean) == 3 and all(0 < s < 1 for s in a.std)


def test_distillation_from_shards_runs_the_teacher_per_batch(made):
    _, tar = made
    ctx = Context(_params(_data(tar, num_workers=1, **GIVEN)))
    outcome = distill_student(ctx, ctx.new_model("teacher"))
    assert outcome.metrics["teacher_logits"] == "per_batch" and 0 <= outcome.metrics["accuracy"] <= 1


def _shard(path: Path, members: list[tarfile.TarInfo | tuple[str, bytes]]) -> Path:
    with tarfile.open(path, "w") as tar:
        for member in members:
            if isinstance(member, tarfile.TarInfo):
                tar.addfile(member)
            else:
                info = tarfile.TarInfo(member[0])
                info.size = len(member[1])
                tar.addfile(info, io.BytesIO(member[1]))
    return path


def _link(name: str, kind: bytes) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, "/etc/passwd"
    return info




@pytest.mark.parametrize("members, named", [
    ([("/abs/key.png", b"x"), ("/abs/key.cls", b"1")], "member '/abs/key.png' has an absolute path"),
    ([("../up.png", b"x"), ("../up.cls", b"1")], "member '../up.png' has '..' in its path"),
    ([_link("key.png", tarfile.SYMTYPE), ("key.cls", b"1")], "member 'key.png' is a link"),
    ([_link("key.png", tarfile.LNKTYPE), ("key.cls", b"1")], "member 'key.png' is a link"),
    ([("key.png", b"x")], "sample 'key' has no label (key.cls missing)"),
    ([("key.png", b"x"), ("key.cls", b"cat")], "member 'key.cls' is not a class number"),
    ([("key.cls", b"1")], "sample 'key' has no image"),
])
def test_hostile_or_broken_shard_is_refused_naming_shard_and_member(made, tmp_path, members, named):
    _, tar = made
    bad = _shard(tmp_path / "bad.tar", members)
    cfg = DataConfig(**_data(tar, num_workers=0, **GIVEN) | {"train_shards": [str(tar / "train-000000.tar"), str(bad)]})
    with pytest.raises(DataError) as err:
        load_data(cfg, seed=0)
    message = str(err.value)
    assert message.startswith(f"{bad}: ") and named in message and "\n" not in message, message


def test_not_a_tar_and_missing_shards_are_named(made, tmp_path):
    _, tar = made
    junk = tmp_path / "junk.tar"
    junk.write_bytes(b"not a tar file at all" * 40)
    with pytest.raises(DataError, match=f"{junk}: not a readable tar shard"):
        load_data(DataConfig(**_data(tar, train_shards=str(junk), **GIVEN)), seed=0)
    with pytest.raises(DataError, match="data.test_shards: no such shard .*test-000008.tar"):
        load_data(DataConfig(**_data(tar, test_shards=str(tar / "test-00000{8..9}.tar"), **GIVEN)), seed=0)


def test_corrupt_image_inside_a_shard_is_named_mid_epoch(made, tmp_path):
    _, tar = made
    bad = _shard(tmp_path / "corrupt.tar", [("k1.png", b"\x89PNG\r\n\x1a\n" + b"\0" * 40), ("k1.cls", b"0")])
    ctx = Context(_params(_data(tar, num_workers=1, image_size=16, **GIVEN)
                          | {"train_shards": [*(str(tar / f"train-00000{i}.tar") for i in range(5)), str(bad)]}))
    with pytest.raises(DataError) as err:
        train(ctx, ctx.new_model("teacher"), 1, 0.01, "corrupt shard")
    assert f"{bad}:k1.png: not a readable image" in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("data, named", [
    ({"name": "webdataset"}, "data.train_shards: needs data.name 'webdataset'"),
    ({"train_shards": "a.tar"}, "data.train_shards: is only for data.name webdataset"),
    ({"name": "digits", "in_memory": False}, "data.in_memory: false streams imagefolder and webdataset only"),
])
def test_shard_keys_are_checked_with_the_source(data, named):
    with pytest.raises(ParamsError, match=named):
        validate({"data": data})


def test_class_sorted_train_shards_are_warned_about_and_the_generator_shuffles(tmp_path, capsys):
    """WebDataset shuffles shard order and a sample buffer: class-sorted shards stay single-class
    stretches (a 200,000-image teacher trained on them stayed at chance). The generator writes
    train in a seeded shuffled order; shards that each hold one class get one warning line."""
    from pipelines.core.config import DataConfig
    from pipelines.data.shards import load_shards, scan

    folder = tmp_path / "folder"
    write_folder(folder, {"train": 10, "val": 2, "test": 2}, classes=2, size=8)
    mixed = write_shards(folder, "train", tmp_path / "mixed", per_shard=5)
    assert any(len(set(scan(str(p)))) > 1 for p in mixed)
    assert sorted(y for p in mixed for y in scan(str(p))) == [0] * 10 + [1] * 10  # every image, once
    write_shards(folder, "train", tmp_path / "sorted", per_shard=5, seed=None)
    for split in ("val", "test"):
        write_shards(folder, split, tmp_path / "sorted", per_shard=5)

    def load(train_dir):
        cfg = DataConfig(name="webdataset", channels=3, num_workers=0,
                         train_shards=sorted(str(p) for p in (tmp_path / train_dir).glob("train-*.tar")),
                         val_shards=sorted(str(p) for p in (tmp_path / "sorted").glob("val-*.tar")),
                         test_shards=sorted(str(p) for p in (tmp_path / "sorted").glob("test-*.tar")))
        load_shards(cfg, seed=0, workers=0)
        return capsys.readouterr().out

    assert "every one of the 4 train shards holds a single class" in load("sorted")
    assert "WARNING" not in load("mixed")
