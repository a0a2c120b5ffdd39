"""Graph capture and graph breaks: dynamo's own account of a model (``torch._dynamo.explain``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from pipelines.core.kinds import is_eager_int8

EAGER_INT8_NOTE = ("dynamo captured no graph: torch.ao eager int8 kernels have no fake-tensor implementation "
                   "('quantized nyi in meta tensors'), so torch.compile falls back to eager; this row times "
                   "the eager int8 kernels behind dynamo's frame check")
NO_GRAPH_NOTE = "dynamo captured no graph, so torch.compile runs this model in eager"


@dataclass
class GraphReport:
    """Dynamo's own account of a model: how many graphs it captured, where it split, and why."""

    graphs: int
    graph_breaks: int
    reasons: list[str] = field(default_factory=list)
    note: str = ""


# explain() gives some reasons in dynamo's internal words; say what they mean.
_REASON_GLOSSARY = {
    "generic_jump TensorVariable": "data-dependent branching: a Python `if` on a tensor value "
                                   "(e.g. `if x.sum() > 0:`) needs a real bool, so the graph stops there",
}


def _short_reason(reason: str, stack: list[Any] | None = None) -> str:
    lines = [ln.strip() for ln in str(reason).strip().splitlines() if ln.strip()]
    text = lines[0] if lines else "unknown"
    for key, meaning in _REASON_GLOSSARY.items():
        if text.startswith(key):
            text = f"{meaning} [{text}]"
    # dynamo's structured messages put the useful part on an "Explanation:" line
    explanation = next((ln.removeprefix("Explanation:").strip() for ln in lines if ln.startswith("Explanation:")),
                       None)
    if explanation and explanation not in text:
        text = f"{text}: {explanation}"
    if stack:
        frame = stack[-1]
        text += f" (at {str(getattr(frame, 'filename', '?')).rsplit('/', 1)[-1]}:{getattr(frame, 'lineno', '?')})"
    return text[:300]


def explain_graphs(model: nn.Module, example: torch.Tensor) -> GraphReport:
    """``torch._dynamo.explain`` on one call. Note: explain resets dynamo's caches, so call it
    before compiling anything that is to be timed."""
    import torch._dynamo
    from torch._dynamo.utils import counters

    before = dict(counters["graph_break"])
    with torch.inference_mode():
        explained = torch._dynamo.explain(model)(example)
    new = {k: v - before.get(k, 0) for k, v in counters["graph_break"].items() if v > before.get(k, 0)}
    reasons = [_short_reason(r.reason, getattr(r, "user_stack", None)) for r in explained.break_reasons]
    if explained.graph_count > 0:
        return GraphReport(explained.graph_count, explained.graph_break_count, list(dict.fromkeys(reasons)))
    # No graph at all: explain() says -1 breaks; count what dynamo actually gave up on instead.
    reasons = list(dict.fromkeys(reasons + [_short_reason(k) for k in new]))
    note = EAGER_INT8_NOTE if is_eager_int8(model) else NO_GRAPH_NOTE
    return GraphReport(0, sum(new.values()) or len(reasons), reasons, note)


def graph_breaks(model: nn.Module, example: torch.Tensor) -> tuple[int, list[str]]:
    """(break count, reasons): the short form of :func:`explain_graphs`."""
    report = explain_graphs(model, example)
    return report.graph_breaks, report.reasons
