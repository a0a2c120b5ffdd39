"""Top-1 accuracy of any callable runtime (PyTorch, compiled, ONNX Runtime, OpenVINO, AOTInductor), and
the 95% interval that goes with every accuracy a metrics file, a benchmark row or MLflow shows."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from pipelines.core.stats import Accuracy


def runtime_accuracy(fn: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor, labels: torch.Tensor,
                     batch_size: int, device: str = "cpu") -> float:
    """Fraction of ``images`` that ``fn`` classifies as ``labels``, fed in batches of exactly
    ``batch_size`` (the last one padded by repeating its last image, padding ignored), so that a
    runtime compiled for one batch shape is measured as it was built."""
    correct = 0
    with torch.inference_mode():
        for start in range(0, len(images), batch_size):
            x = images[start:start + batch_size]
            n = len(x)
            if n < batch_size:
                x = torch.cat([x, x[-1:].expand(batch_size - n, *x.shape[1:])])
            out = fn(x.contiguous().to(device))
            correct += int((out[:n].float().cpu().argmax(1) == labels[start:start + n]).sum())
    return correct / len(images)


_NOT_AN_ACCURACY = ("drop", "diff", "gain", "_ci_", "curve", "delta", "ratio")


def is_accuracy(key: str) -> bool:
    """A metric name that holds one top-1 accuracy (``accuracy``, ``val_accuracy``,
    ``best_accuracy_bs1``, ``accuracy_no_kd`` ...), not a difference or an interval's end."""
    return "accuracy" in key and not key.endswith("_n") and not any(part in key for part in _NOT_AN_ACCURACY)


def with_intervals(metrics: Any, n_test: int, n_val: int | None = None) -> Any:
    """``metrics`` (nested dicts and lists) with every accuracy followed by its 95% Wilson interval
    and its image count (``<name>_ci_low``, ``<name>_ci_high``, ``<name>_n``): names starting with
    ``val_`` are on the validation split (``n_val`` images), the others on the test split."""
    if isinstance(metrics, list):
        return [with_intervals(m, n_test, n_val) for m in metrics]
    if not isinstance(metrics, dict):
        return metrics
    out: dict[str, Any] = {}
    for key, value in metrics.items():
        out[key] = with_intervals(value, n_test, n_val)
        n = n_val if str(key).startswith("val_") else n_test
        if is_accuracy(str(key)) and isinstance(value, (int, float)) and not isinstance(value, bool) and n \
                and f"{key}_ci_low" not in metrics and 0.0 <= value <= 1.0:
            out.update(Accuracy(round(value * n), n).metrics(str(key)))
    return out
