"""Top-1 accuracy of any callable runtime (PyTorch, compiled, ONNX Runtime, OpenVINO, AOTInductor)."""

from __future__ import annotations

from collections.abc import Callable

import torch


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
