"""``data.augment``: transforms.v2 by snake_case name, validated like every key, applied to the
train split only; distillation with augmentation runs the teacher on each augmented batch."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import TensorDataset
from torchvision.transforms import v2

from pipelines.chain.distill import distill_student
from pipelines.core.config import DataConfig, ParamsError, validate
from pipelines.core.errors import DataError
from pipelines.data import load_data, plain
from pipelines.data.augment import build
from pipelines.training.context import Context

FLIP = [{"random_horizontal_flip": {"p": 1.0}}]


@pytest.mark.parametrize("augment, named", [
    (["random_cropp"], "unknown transform 'random_cropp'"),
    ([{"random_crop": {"sizee": 3}}], "random_crop: bad arguments"),
    ([{"random_crop": {"size": 8}, "horizontal_flip": None}], "one-key mapping"),
    ([7], "transform name or a one-key mapping"),
    (["normalize"], "unknown transform 'normalize'"),  # normalisation is the pipeline's own
    ([{"jpeg": {"quality": 50}}], "cannot run on a float image"),  # uint8 only
])
def test_bad_augment_entries_are_one_line_naming_the_key(augment, named):
    with pytest.raises(ParamsError) as err:
        validate({"data": {"augment": augment}})
    message = str(err.value)
    assert message.startswith("data.augment: entry 0") and named in message and "\n" not in message, message


def test_bare_names_and_mappings_validate_random_prefix_optional():
    cfg = validate({"data": {"augment": [{"random_crop": {"size": 8, "padding": 1}}, "horizontal_flip"]}}).data
    transform = build(cfg.augment, channels=1, size=8)
    kinds = [type(t) for t in transform.transforms]
    assert kinds == [v2.RandomCrop, v2.RandomHorizontalFlip]
    issue = [{"random_crop": {"size": 32, "padding": 4}}, "horizontal_flip"]  # sized for 32x32 images
    assert validate({"data": {"augment": issue}}).data.augment == issue


def test_a_transform_that_changes_the_image_size_is_refused_when_the_data_is_known():
    with pytest.raises(DataError, match=r"data.augment: turns 1x8x8 images into 1x4x4"):
        load_data(DataConfig(augment=[{"random_resized_crop": {"size": 4}}]), seed=0)


def test_only_train_is_augmented_and_its_plain_twin_is_the_unaugmented_split():
    held = load_data(DataConfig(), seed=0)
    flipped = load_data(DataConfig(augment=FLIP), seed=0)
    assert isinstance(flipped.val, TensorDataset) and isinstance(flipped.test, TensorDataset)
    assert torch.equal(flipped.val.tensors[0], held.val.tensors[0])
    assert torch.equal(plain(flipped.train).tensors[0], held.train.tensors[0])
    image, label = flipped.train[5]
    base, base_label = held.train[5]
    assert label == base_label
    torch.testing.assert_close(image, base.flip(-1), atol=1e-5, rtol=0)  # flipped on 0..1 pixels, renormalised


def test_augmentation_draws_differ_between_reads_but_not_between_seeded_runs():
    cfg = DataConfig(augment=[{"random_crop": {"size": 8, "padding": 2}}])
    ctx = Context(validate({"data": cfg.model_dump(), "tracking": {"enabled": False}}))
    first = next(iter(ctx.loader("train", shuffle=True)))[0]
    torch.manual_seed(0)
    again = next(iter(ctx.loader("train", shuffle=True)))[0]
    torch.manual_seed(0)
    third = next(iter(ctx.loader("train", shuffle=True)))[0]
    assert not torch.equal(first, again) and torch.equal(again, third)


def test_calibration_never_sees_augmentation():
    base = {"data": {}, "tracking": {"enabled": False}, "quantize": {"calibration_batches": 2}}
    plain_ctx = Context(validate(base))
    aug_ctx = Context(validate({**base, "data": {"augment": FLIP}}))
    assert torch.equal(torch.cat(plain_ctx.calibration_batches()), torch.cat(aug_ctx.calibration_batches()))


def _distill_params(augment: list) -> object:
    return validate({"data": {"augment": augment, "max_train_samples": 200},
                     "teacher": {"arch": "mlp", "hidden": [16]}, "student": {"arch": "mlp", "hidden": [8]},
                     "distill": {"epochs": 1, "compare_without_kd": False}, "tracking": {"enabled": False}})


class _CountsBatches(torch.nn.Module):
    """A teacher that remembers which inputs it saw (a real MLP inside)."""

    def __init__(self) -> None:
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
        self.seen: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append(x.detach().clone())
        return self.net(x)


@pytest.mark.parametrize("augment, mode", [([], "cached"), (FLIP, "per_batch")])
def test_distillation_caches_teacher_logits_only_without_augmentation(augment, mode):
    ctx = Context(_distill_params(augment))
    teacher = _CountsBatches()
    outcome = distill_student(ctx, teacher)
    assert outcome.metrics["teacher_logits"] == mode
    assert outcome.metrics["train_images_per_s"] > 0 and 0 <= outcome.metrics["data_wait_share"] <= 1
    seen = torch.cat(teacher.seen)
    images = plain(ctx.data.train).tensors[0]
    if mode == "cached":  # one pass over the plain train split, in order
        assert torch.equal(seen, images)
    else:  # the augmented batches the student trained on: flipped images, never the plain ones
        flipped = images.flip(-1)
        assert len(seen) == len(images)
        assert not any(torch.equal(seen[i], images[j]) for i in range(3) for j in range(len(images)))
        assert all(any(torch.allclose(seen[i], flipped[j], atol=1e-5) for j in range(len(images))) for i in range(3))
