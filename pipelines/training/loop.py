"""The one training / evaluation loop. Teacher training, distillation, pruning fine-tune and QAT
all go through :func:`fit`; they differ only in the loss and the model they pass."""

from __future__ import annotations

import copy
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from pipelines.core.errors import ParamsError, TrainingError

# loss_fn(logits, labels, inputs, *extra_batch_tensors) -> scalar loss
LossFn = Callable[..., torch.Tensor]
# after_epoch(epoch, val_accuracy): called after every epoch's validation (e.g. an Optuna pruner's report)
EpochCallback = Callable[[int, float], None]


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def resolve_device(name: str = "auto") -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise ParamsError("train.device: 'cuda' requested but no CUDA device is available")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


def cross_entropy(logits: torch.Tensor, labels: torch.Tensor, *_: torch.Tensor) -> torch.Tensor:
    return nn.functional.cross_entropy(logits, labels)


LONG_PASS = 10_000  # images: a pass over at least this many shows a progress bar with images/s


def progress(total: int, desc: str):
    """A progress bar in images (tqdm shows images/s) for a pass over ``total`` images; a quiet
    stand-in for shorter passes, so the default run's log stays as it was."""
    return tqdm(total=total, desc=desc, unit="img", unit_scale=True, leave=False, dynamic_ncols=True,
                disable=total < LONG_PASS)


def images_in(loader) -> int:
    """How many images a pass over ``loader`` reads (0 when its dataset cannot say)."""
    try:
        return len(loader.dataset)
    except (AttributeError, TypeError):
        return 0


def _eval_mode(model: nn.Module) -> None:
    try:
        model.eval()
    except NotImplementedError:  # a torch.export graph (e.g. loaded back from MLflow) has no train mode
        pass


@torch.no_grad()
def predict(model: nn.Module, loader: DataLoader, device: torch.device | str = "cpu") -> torch.Tensor:
    """Logits for every sample of ``loader`` in order (model put in eval mode)."""
    _eval_mode(model)
    out = []
    with progress(images_in(loader), "predict") as bar:
        for batch in loader:
            out.append(model(batch[0].to(device)).float().cpu())
            bar.update(len(batch[0]))
    return torch.cat(out)


@torch.no_grad()
def outcomes(model: nn.Module, loader: DataLoader, device: torch.device | str = "cpu") -> torch.Tensor:
    """Per image of ``loader``, in its order: did ``model`` classify it right (bool)? One pass in
    batches: memory holds one batch and one bool per image, whatever the split's size."""
    _eval_mode(model)
    out = []
    with progress(images_in(loader), "evaluate") as bar:
        for batch in loader:
            out.append(model(batch[0].to(device)).float().argmax(1).cpu() == batch[1])
            bar.update(len(batch[1]))
    return torch.cat(out)


def evaluate(model: nn.Module, loader: DataLoader, device: torch.device | str = "cpu") -> float:
    return outcomes(model, loader, device).float().mean().item()


@dataclass
class History:
    rows: list[dict[str, float]] = field(default_factory=list)
    best_val_accuracy: float = 0.0
    best_epoch: int = 0
    images: int = 0  # training images fed, all epochs
    train_time_s: float = 0.0  # time in the training passes, all epochs
    data_wait_s: float = 0.0  # of which waiting for the next batch

    @property
    def images_per_s(self) -> float:
        """Training throughput over every epoch (data, forward, backward and step)."""
        return self.images / self.train_time_s if self.train_time_s else 0.0

    @property
    def data_wait_share(self) -> float:
        """Share of training time spent waiting for data (0: the data path kept up)."""
        return self.data_wait_s / self.train_time_s if self.train_time_s else 0.0

    def feeding_metrics(self) -> dict[str, float]:
        return {"train_images_per_s": self.images_per_s, "data_wait_share": self.data_wait_share}

    @property
    def epoch_time_s(self) -> float:
        """Median training time of one epoch (the median ignores the first epoch's warm-up)."""
        times = sorted(r["epoch_time_s"] for r in self.rows)
        return times[len(times) // 2] if times else 0.0


def fit(model: nn.Module, train_loader: DataLoader, val_loader: DataLoader, *, epochs: int,
        lr: float, weight_decay: float = 0.0, optimizer: str = "adamw", device: torch.device | str = "cpu",
        loss_fn: LossFn = cross_entropy, desc: str = "train", keep_best: bool = True,
        before_epoch: Callable[[int], None] | None = None,
        after_epoch: EpochCallback | None = None) -> History:
    """Train ``model`` in place; with ``keep_best`` restore the weights of the best val epoch."""
    device = torch.device(device)
    model.to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    if optimizer == "sgd":
        opt: torch.optim.Optimizer = torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=weight_decay)
    else:
        opt = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, epochs * len(train_loader)))
    history = History()
    best_state = None
    bar = tqdm(range(1, epochs + 1), desc=desc, unit="epoch", dynamic_ncols=True)
    for epoch in bar:
        if before_epoch is not None:
            before_epoch(epoch)
        model.train()
        started = time.perf_counter()
        total, count, waited = 0.0, 0, 0.0
        batches = iter(train_loader)
        with progress(images_in(train_loader), f"{desc} epoch {epoch}") as pass_bar:
            while True:
                asked = time.perf_counter()
                batch = next(batches, None)
                waited += time.perf_counter() - asked
                if batch is None:
                    break
                x, y, *extra = (t.to(device) for t in batch)
                loss = loss_fn(model(x), y, x, *extra)
                if not torch.isfinite(loss):
                    raise TrainingError(f"{desc}: loss became {loss.item()} at epoch {epoch} "
                                        "(lower the learning rate)")
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                total += loss.item() * len(y)
                count += len(y)
                pass_bar.update(len(y))
        epoch_time = time.perf_counter() - started
        history.images, history.train_time_s = history.images + count, history.train_time_s + epoch_time
        history.data_wait_s += waited
        val_acc = evaluate(model, val_loader, device)
        history.rows.append({"epoch": epoch, "train_loss": total / max(count, 1), "val_accuracy": val_acc,
                             "epoch_time_s": epoch_time})
        bar.set_postfix(loss=f"{total / max(count, 1):.4f}", val_acc=f"{val_acc:.4f}")
        if val_acc > history.best_val_accuracy or best_state is None:
            history.best_val_accuracy, history.best_epoch = val_acc, epoch
            if keep_best:
                best_state = copy.deepcopy(model.state_dict())
        if after_epoch is not None:
            after_epoch(epoch, val_acc)
    if keep_best and best_state is not None:
        model.load_state_dict(best_state)
    return history
