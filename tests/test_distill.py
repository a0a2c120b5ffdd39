import pytest
import torch
from torch import nn
from torch.nn import functional as F

from pipelines.distill import DistillationLoss, with_teacher_logits
from pipelines.workflow import Context, distill_student, train_teacher


def _teacher():
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 10))


def test_loss_matches_the_formula():
    teacher = _teacher()
    x = torch.randn(16, 1, 8, 8)
    y = torch.randint(0, 10, (16,))
    s = torch.randn(16, 10, requires_grad=True)
    alpha, T = 0.3, 4.0
    loss = DistillationLoss(teacher, alpha, T)(s, y, x)
    t = teacher(x)
    kl = (F.softmax(t / T, 1) * (F.log_softmax(t / T, 1) - F.log_softmax(s / T, 1))).sum(1).mean()
    expected = alpha * F.cross_entropy(s, y) + (1 - alpha) * T * T * kl
    assert torch.allclose(loss, expected, atol=1e-5)


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
