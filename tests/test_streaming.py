"""Streamed image folders (``data.in_memory: false``): the same splits and the same inputs as the
in-memory path, fed by DataLoader workers, evaluated in one pass in image order; what goes wrong in
a worker is one line naming the file or the worker."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import Dataset

from conftest import corrupt_copy

from pipelines.core.config import DataConfig, validate
from pipelines.core.errors import DataError
from pipelines.data import load_data, make_loader, split_digest
from pipelines.data.synthetic import write_folder
from pipelines.training.context import Context, train

GIVEN = {"mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return write_folder(tmp_path_factory.mktemp("stream"), {"train": 40, "test": 12}, classes=3, size=16)


def _params(folder: Path, **data) -> object:
    return validate({"data": {"name": "imagefolder", "root": str(folder), "batch_size": 16, **data},
                     "teacher": {"arch": "cnn", "channels": [8, 16], "depth": 1}, "train": {"epochs": 1, "lr": 0.01},
                     "tracking": {"enabled": False}})


def test_streamed_splits_are_the_held_ones_image_for_image(folder):
    held = Context(_params(folder, in_memory=True, **GIVEN))
    streamed = Context(_params(folder, in_memory=False, num_workers=1, **GIVEN))
    assert held.data.in_memory and not streamed.data.in_memory and streamed.data.workers == 1
    for split in ("train", "val", "test"):
        x_held, y_held = held.split_tensors(split)
        x_streamed, y_streamed = streamed.split_tensors(split)
        assert torch.equal(y_held, y_streamed)
        assert torch.allclose(x_held, x_streamed, atol=1e-6)
    assert torch.equal(held.example(3), streamed.example(3))


def test_auto_streams_what_exceeds_the_memory_budget(folder):
    small = load_data(DataConfig(name="imagefolder", root=str(folder)), seed=0)
    assert small.in_memory  # 156 images of 16x16x3: far under 1024 MB
    budget = 156 * 3 * 16 * 16 * 4 / 1e6  # exactly what the folder decodes to
    assert load_data(DataConfig(name="imagefolder", root=str(folder), in_memory_max_mb=budget), seed=0).in_memory
    assert not load_data(DataConfig(name="imagefolder", root=str(folder), in_memory_max_mb=budget * 0.99,
                                    num_workers=0), seed=0).in_memory


def test_sampled_statistics_match_the_full_pass_when_the_sample_is_all_of_train(folder):
    held = load_data(DataConfig(name="imagefolder", root=str(folder)), seed=0)
    every = load_data(DataConfig(name="imagefolder", root=str(folder), in_memory=False, num_workers=0), seed=0)
    np.testing.assert_allclose(every.mean, held.mean, atol=1e-5)
    np.testing.assert_allclose(every.std, held.std, atol=1e-5)
    sampled = load_data(DataConfig(name="imagefolder", root=str(folder), in_memory=False, num_workers=0,
                                   stats_sample=20), seed=0)
    again = load_data(DataConfig(name="imagefolder", root=str(folder), in_memory=False, num_workers=0,
                                 stats_sample=20), seed=0)
    assert sampled.mean == again.mean and sampled.mean != every.mean  # seeded, and a sample


# two workers on purpose (their order is the point), also on a worker pinned to one core (conftest._pin_worker)
@pytest.mark.filterwarnings("ignore:This DataLoader will create 2 worker processes:UserWarning")
def test_training_and_evaluation_stream_with_counts_and_outcomes_in_image_order(folder):
    held = Context(_params(folder, in_memory=True, **GIVEN))
    streamed = Context(_params(folder, in_memory=False, num_workers=2, **GIVEN))
    model = held.new_model("teacher")
    history = train(streamed, model, 2, 0.01, "stream")
    assert history.images == 2 * len(streamed.data.train)
    assert history.images_per_s > 0 and 0 <= history.data_wait_share <= 1
    outcomes = streamed.correct(model, "test")
    assert outcomes.dtype == torch.bool and len(outcomes) == len(held.data.test)
    assert torch.equal(outcomes, held.correct(model, "test"))
    assert streamed.accuracy(model, "val") == pytest.approx(held.accuracy(model, "val"))


def test_calibration_is_a_seeded_fixed_subset_the_same_for_held_and_streamed(folder):
    held = Context(_params(folder, in_memory=True, **GIVEN))
    streamed = Context(_params(folder, in_memory=False, num_workers=1, **GIVEN))
    batches = held.calibration_batches(2)
    assert [len(b) for b in batches] == [16, 16]
    assert torch.equal(torch.cat(batches), torch.cat(streamed.calibration_batches(2)))
    assert held.calibration_digest(2) == streamed.calibration_digest(2)
    # the order a seeded shuffled DataLoader over train would take, as before streaming
    first = next(iter(make_loader(held.data.train, 16, shuffle=True, seed=0)))[0]
    assert torch.equal(batches[0], first)


def test_streamed_digest_follows_the_files(folder, tmp_path):
    cfg = DataConfig(name="imagefolder", root=str(folder), in_memory=False, num_workers=0, **GIVEN)
    digest = split_digest(load_data(cfg, seed=0).test)
    assert digest == split_digest(load_data(cfg, seed=0).test)
    assert digest != split_digest(load_data(cfg, seed=1).train)


def test_corrupt_image_mid_epoch_names_the_file_in_one_line(folder, tmp_path):
    copy, bad = corrupt_copy(folder, tmp_path)
    ctx = Context(_params(copy, in_memory=False, num_workers=1, **GIVEN))  # nothing decoded yet
    with pytest.raises(DataError) as err:
        train(ctx, ctx.new_model("teacher"), 1, 0.01, "corrupt")
    message = str(err.value)
    assert str(bad) in message and "not a readable image" in message and "\n" not in message, message


def test_image_whose_header_claims_too_many_pixels_is_refused_before_decoding(folder, tmp_path):
    copy, bad = corrupt_copy(folder, tmp_path)
    bad.unlink()
    Image.new("RGB", (4000, 4000)).save(bad)  # a small file, 16 million pixels once decoded
    ctx = Context(_params(copy, in_memory=False, num_workers=1, image_size=16, max_image_pixels=1_000_000, **GIVEN))
    with pytest.raises(DataError) as err:
        ctx.split_tensors("train")
    assert str(bad) in str(err.value) and "data.max_image_pixels=1000000" in str(err.value)
    with pytest.raises(DataError, match="data.max_image_pixels"):  # held in memory: the same refusal
        load_data(DataConfig(name="imagefolder", root=str(copy), image_size=16, max_image_pixels=1_000_000), seed=0)


class _KillsItsWorker(Dataset):
    def __len__(self) -> int:
        return 64

    def __getitem__(self, index: int):
        if index == 40:
            os.kill(os.getpid(), signal.SIGKILL)  # what the OOM killer does
        return torch.zeros(3), 0


def test_a_worker_that_dies_ends_the_pass_with_one_line_not_a_hang():
    with pytest.raises(DataError) as err:
        for _ in make_loader(_KillsItsWorker(), 8, shuffle=False, workers=1):
            pass
    message = str(err.value)
    assert "data loader worker died" in message and "\n" not in message, message
    # noticed in the loader's own frame: no process-wide SIGCHLD handler left to raise later
    handler = signal.getsignal(signal.SIGCHLD)
    assert getattr(handler, "__module__", "") != "torch.utils.data._utils.signal_handling", handler
    for _ in range(3):
        subprocess.run(["true"], check=True)  # later child exits: nothing raises
