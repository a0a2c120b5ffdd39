"""Never a silent collapse: a chain at chance or over its drop budget is warned about in one line,
and the registered version does not take the champion alias (real MLflow sqlite store)."""

from __future__ import annotations

from conftest import fast_params
from test_tracking import _client, _logged, _outcomes

from pipelines.core.collapse import WARNING_TAG
from pipelines.reporting.sensitivity import chain_warnings, sensitivity_section
from pipelines.tracking import register_final


def test_chain_warnings_name_the_collapsed_model_and_the_stage_over_budget():
    good = _outcomes(2)
    chance = _outcomes(323)  # 36 of 359 right: 10%, chance for 10 classes
    outcomes = {"teacher": good, "student": good, "pruned": good, "quantized": chance}
    lines = chain_warnings(outcomes, {}, 10, None)
    assert len(lines) == 2 and all(line.startswith("WARNING: quantized") for line in lines)
    assert "chance" in lines[0] and "over the 2 pp allowed" in lines[1]
    assert chain_warnings({k: good for k in outcomes}, {}, 10, None) == []
    # quantize's own budget, and the quantize stage's validation warning, are used
    slight = {**outcomes, "quantized": _outcomes(5)}  # 3 images = 0.84 pp below pruned
    assert chain_warnings(slight, {}, 10, None) == []
    assert "over the 0.5 pp allowed" in chain_warnings(slight, {}, 10, 0.5)[0]
    assert chain_warnings({}, {"warning": "WARNING: x"}, 10, None) == ["quantize stage (validation split): WARNING: x"]


def test_a_warned_run_never_moves_the_champion(mlflow_store, tmp_path):
    params = fast_params(tracking={"experiment": "t", "registered_model": "final"})
    _, _, path = _logged(params, "quantized", tmp_path, {"accuracy": 0.9})
    register_final(params, path, {"acc": 0.90, "speedup": 5.0, "mb": 0.4})
    warned = register_final(params, path, {"acc": 0.99, "speedup": 50.0, "mb": 0.1,
                                           WARNING_TAG: "WARNING: student is indistinguishable from chance"})
    assert not warned.champion and "chance" in warned.reason
    assert str(_client(mlflow_store).get_model_version_by_alias("final", "champion").version) == "1"


def test_report_section_lists_five_layers_and_the_budget():
    ranking = [{"layer": f"l{i}", "rank": i + 1, "sqnr_db": 30.0 + i, "val_accuracy_delta": 0.0,
                "sqnr_source": "torch.ao numeric suite"} for i in range(7)]
    drop = {"val_drop_pp": 0.0, "val_drop_ci_low": -1.4, "val_drop_ci_high": 1.4}
    before = {"val_drop_pp": 2.6, "val_drop_ci_low": 0.9, "val_drop_ci_high": 4.1}
    lines = sensitivity_section({"sensitivity": ranking, "val_drop": drop, "val_drop_before": before,
                                 "budget_met": True, "max_accuracy_drop": 0.5, "fallback_layers": ["l0"]})
    assert sum(line.startswith("- ") for line in lines) == 5
    assert any("met; val drop +2.60 pp" in line and "(l0)" in line for line in lines)
    assert sensitivity_section({}) == []
