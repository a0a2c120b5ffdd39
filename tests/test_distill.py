import pytest
import torch
from torch import nn
from torch.nn import functional as F

from pipelines.compression.distill import DistillationLoss, with_teacher_logits
from pipelines.training.context import Context
from pipelines.workflow import distill_student, train_teacher


def _teacher():
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 10))


class _FixedLogits(nn.Module):
    def __init__(self, logits: list[float]) -> None:
        super().__init__()
        self.register_buffer("logits", torch.tensor([logits]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits.expand(len(x), -1)


# Teacher p = (1/4, 3/4), student q = (1/2, 1/2): KL(p || q) = 1/4 ln(1/2) + 3/4 ln(3/2) = 0.130812
# (the reverse, KL(q || p), would be 0.143841); CE of the student on label 0 = ln 2 = 0.693147.
KL_P_Q, LN2 = 0.130812, 0.693147


@pytest.mark.parametrize(("alpha", "temperature", "expected"), [
    (0.0, 1.0, KL_P_Q),                      # soft term only: KL(teacher || student), that direction
    (0.0, 2.0, 4.0 * KL_P_Q),                # same softened distributions at T=2: scaled by T^2
    (0.5, 1.0, 0.5 * LN2 + 0.5 * KL_P_Q),    # alpha weighs hard CE against the soft term
    (1.0, 3.0, LN2),                         # alpha 1: plain cross-entropy, teacher ignored
])
def test_loss_values_worked_by_hand(alpha, temperature, expected):
    import math

    teacher = _FixedLogits([0.0, temperature * math.log(3.0)])  # softmax(t / T) = (1/4, 3/4)
    student = torch.zeros(4, 2)
    labels = torch.zeros(4, dtype=torch.long)
    loss = DistillationLoss(teacher, alpha, temperature)(student, labels, torch.zeros(4, 1))
    assert loss.item() == pytest.approx(expected, abs=1e-5)


def test_alpha_one_is_plain_cross_entropy_and_teacher_is_frozen():
    teacher = _teacher()
    x, y = torch.randn(8, 1, 8, 8), torch.randint(0, 10, (8,))
    s = torch.randn(8, 10, requires_grad=True)
    loss_fn = DistillationLoss(teacher, 1.0, 2.0)
    assert torch.allclose(loss_fn(s, y, x), F.cross_entropy(s, y))
    loss_fn.train()
    assert not loss_fn.teacher.training
    DistillationLoss(teacher, 0.0, 2.0)(s, y, x).backward()
    assert all(p.grad is None for p in teacher.parameters())
    assert s.grad is not None and s.grad.abs().sum() > 0


@pytest.mark.parametrize(("alpha", "temperature"), [(-0.1, 1.0), (1.1, 1.0), (0.5, 0.0)])
def test_bad_hyperparameters_are_refused(alpha, temperature):
    with pytest.raises(ValueError):
        DistillationLoss(_teacher(), alpha, temperature)


def test_cached_logits_equal_a_live_teacher_forward(params):
    ctx = Context(params)
    teacher, _ = train_teacher(ctx)
    cached = with_teacher_logits(teacher, ctx.data.train)
    images, labels, logits = cached.tensors
    assert torch.equal(labels, ctx.data.train.tensors[1])
    with torch.no_grad():
        assert torch.allclose(logits, teacher(images), atol=1e-5)


def test_distill_student_records_the_no_kd_baseline(params):
    ctx = Context(params)
    teacher, _ = train_teacher(ctx)
    outcome = distill_student(ctx, teacher)
    m = outcome.metrics
    assert 0.5 < m["accuracy"] <= 1.0 and 0.0 < m["accuracy_no_kd"] <= 1.0
    assert m["kd_gain_pp"] == pytest.approx(100 * (m["accuracy"] - m["accuracy_no_kd"]))
    assert m["num_params"] < sum(p.numel() for p in teacher.parameters())
    assert len(outcome.history.rows) == params.distill.epochs
