"""Knowledge distillation (Hinton et al.): a frozen teacher's softened outputs guide the student.

    loss = alpha * CE(student, labels) + (1 - alpha) * T^2 * KL(softmax(t/T) || softmax(s/T))

T^2 keeps the soft term's gradient scale independent of T. When the training data has no random
augmentation the teacher's logits are the same every epoch, so they are computed once and
carried in the dataset (:func:`with_teacher_logits`) instead of a teacher forward per batch.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import Dataset, IterableDataset, TensorDataset

from pipelines.data import make_loader
from pipelines.training.loop import predict


class DistillationLoss(nn.Module):
    def __init__(self, teacher: nn.Module, alpha: float, temperature: float) -> None:
        super().__init__()
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha must be in [0, 1], got {alpha}")
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.teacher = teacher.eval()
        for p in self.teacher.parameters():
            p.requires_grad_(False)
        self.alpha = alpha
        self.temperature = temperature

    def train(self, mode: bool = True) -> "DistillationLoss":  # the teacher stays frozen in eval
        super().train(mode)
        self.teacher.eval()
        return self

    def soft_loss(self, student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
        t = self.temperature
        return F.kl_div(F.log_softmax(student_logits / t, dim=1), F.softmax(teacher_logits / t, dim=1),
                        reduction="batchmean") * (t * t)

    def forward(self, student_logits: torch.Tensor, labels: torch.Tensor, inputs: torch.Tensor | None = None,
                teacher_logits: torch.Tensor | None = None) -> torch.Tensor:
        if teacher_logits is None:
            if inputs is None:
                raise ValueError("DistillationLoss needs the inputs or cached teacher logits")
            with torch.no_grad():
                teacher_logits = self.teacher(inputs)
        hard = F.cross_entropy(student_logits, labels)
        return self.alpha * hard + (1.0 - self.alpha) * self.soft_loss(student_logits, teacher_logits)


def caches_teacher_logits(cache: bool, augment: list, train: Dataset) -> bool:
    """Whether the teacher's logits are computed once (``distill.cache_teacher_logits``): only when
    the train images are the same every epoch and have an index to hang them on (not shards);
    with ``data.augment`` the teacher sees each augmented batch, the student's own, in
    :meth:`DistillationLoss.forward`."""
    return cache and not augment and not isinstance(train, IterableDataset)


class WithLogits(Dataset):
    """A streamed split's items with the teacher's logits of each image appended."""

    def __init__(self, base: Dataset, logits: torch.Tensor) -> None:
        self.base, self.logits = base, logits

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, index: int):
        return (*self.base[index], self.logits[index])


def with_teacher_logits(teacher: nn.Module, dataset: Dataset, device: torch.device | str = "cpu",
                        batch_size: int = 512, workers: int = 0) -> Dataset:
    """``dataset`` extended with the teacher's logits as a third item (one teacher pass): a
    TensorDataset for held splits, :class:`WithLogits` for streamed ones (``workers`` read them)."""
    logits = predict(teacher.to(device), make_loader(dataset, batch_size, shuffle=False, workers=workers), device)
    if isinstance(dataset, TensorDataset):
        return TensorDataset(*dataset.tensors[:2], logits)
    return WithLogits(dataset, logits)
