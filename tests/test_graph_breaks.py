"""The worked graph-break example: a Python `if` on a tensor breaks the graph; torch.cond and
torch.where remove the break and compute the same thing."""

from __future__ import annotations

import pytest
import torch

from pipelines.measurement.compile import compile_for
from pipelines.measurement.graph_break_demo import explain_breaks, variants


@pytest.fixture(scope="module")
def models():
    return variants(dim=16, hidden=32)


@pytest.fixture(scope="module")
def inputs():
    pos = torch.rand(4, 16) + 0.1
    return {"positive": pos, "negative": -pos}


def test_branchy_model_breaks_on_the_data_dependent_branch(models, inputs):
    report = explain_breaks(models["branchy"], inputs["positive"])
    assert report.graph_breaks >= 1 and report.graphs >= 2
    assert any("data-dependent branch" in r for r in report.reasons), report.reasons


@pytest.mark.parametrize("fix", ["torch.cond", "torch.where"])
def test_fixes_have_no_graph_break_and_same_outputs(models, inputs, fix):
    report = explain_breaks(models[fix], inputs["positive"])
    assert (report.graphs, report.graph_breaks, report.reasons) == (1, 0, [])
    with torch.inference_mode():
        for x in inputs.values():
            torch.testing.assert_close(models[fix](x), models["branchy"](x))


def test_compiled_fixes_match_the_original_on_both_branches(models, inputs):
    torch._dynamo.reset()
    for fix in ("torch.cond", "torch.where"):
        comp = compile_for(models[fix], "compile-default", inputs["positive"])
        assert comp.error is None and comp.graphs == 1
        with torch.inference_mode():
            for x in inputs.values():
                torch.testing.assert_close(comp.fn(x), models["branchy"](x))
