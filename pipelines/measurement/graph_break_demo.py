"""A worked graph-break example: data-dependent Python control flow, and the two ways out.

``Branchy.forward`` does ``if x.sum() > 0:``. To run that ``if``, Python needs a real bool, but
while tracing ``x.sum() > 0`` is only a symbolic tensor: dynamo has to stop the graph there
(a *graph break*), run the comparison eagerly, and start a new graph for whichever branch was
taken - two or more graphs, a Python round trip per call, and no fusion across the split.

The fixes keep the decision inside the graph:

- :class:`CondFixed` uses ``torch.cond(pred, true_fn, false_fn, operands)``: both branches are
  traced as subgraphs and the choice is made at run time by the graph itself. Use it when the
  branches are expensive or differ in what they compute.
- :class:`WhereFixed` moves the branch out of Python: compute both results and select with
  ``torch.where(pred, a, b)``. Cheapest when both branches are cheap elementwise work.

All three share one set of weights (:func:`variants`), so their outputs must be identical.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn


def _positive(h: torch.Tensor) -> torch.Tensor:
    return torch.relu(h)


def _negative(h: torch.Tensor) -> torch.Tensor:
    return torch.tanh(h) * 0.5


class Branchy(nn.Module):
    """Linear -> (relu if the input sums positive, else 0.5 * tanh) -> Linear."""

    def __init__(self, dim: int = 32, hidden: int = 64) -> None:
        super().__init__()
        self.proj = nn.Linear(dim, hidden)
        self.head = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.proj(x)
        if x.sum() > 0:  # data-dependent Python control flow: dynamo must break the graph here
            h = _positive(h)
        else:
            h = _negative(h)
        return self.head(h)


class CondFixed(Branchy):
    """Fix 1: the branch becomes a graph op, ``torch.cond``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.proj(x)
        h = torch.cond(x.sum() > 0, _positive, _negative, (h,))
        return self.head(h)


class WhereFixed(Branchy):
    """Fix 2: compute both branches, select with ``torch.where`` (no Python ``if`` at all)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.proj(x)
        h = torch.where(x.sum() > 0, _positive(h), _negative(h))
        return self.head(h)


def variants(dim: int = 32, hidden: int = 64, seed: int = 0) -> dict[str, nn.Module]:
    """The original and both fixes, with identical weights, in eval mode."""
    torch.manual_seed(seed)
    original = Branchy(dim, hidden).eval()
    out: dict[str, nn.Module] = {"branchy": original}
    for name, cls in (("torch.cond", CondFixed), ("torch.where", WhereFixed)):
        model = cls(dim, hidden).eval()
        model.load_state_dict(original.state_dict())
        out[name] = model
    return out


@dataclass
class BreakReport:
    graphs: int
    graph_breaks: int
    reasons: list[str] = field(default_factory=list)


def explain_breaks(model: nn.Module, example: torch.Tensor) -> BreakReport:
    """``torch._dynamo.explain`` on one call: graph count, break count, one line per reason.
    (explain resets dynamo's caches: don't call it between compiling and timing.)"""
    from pipelines.measurement.graphs import explain_graphs

    report = explain_graphs(model, example)
    return BreakReport(report.graphs, report.graph_breaks, report.reasons)
