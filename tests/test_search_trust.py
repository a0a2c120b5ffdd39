"""What makes the search's choice trustworthy: the current configuration is the study's starting
point and the incumbent of the one decision rule (only an improvement within the intervals is
chosen or promoted), trials are pruned through Optuna's pruners, and
the space reaches the student's architecture. Real Optuna studies (in memory or sqlite in a temp
dir); the chain itself runs in tests/test_search.py."""

from __future__ import annotations

import warnings

import optuna
import pytest
import torch
import yaml
from optuna.distributions import CategoricalDistribution, FloatDistribution
from optuna.trial import TrialState

from pipelines import search
from pipelines.core.errors import ParamsError
from pipelines.core.stats import pack_outcomes
from pipelines.promote import DominatedError, promote
from tests.conftest import ROOT, Broken, fast_params

optuna.logging.set_verbosity(optuna.logging.ERROR)

SPACE = {
    "student.channels": {"type": "categorical", "choices": [[4, 8], [8, 16]]},
    "prune.amount": {"type": "float", "low": 0.1, "high": 0.8},
}


def space_params(**search_cfg):
    return fast_params(search={"space": SPACE, "study_name": "trust", **search_cfg}, tracking={"enabled": False})


# --- pruning ------------------------------------------------------------------------------------

def _curve_objective(fidelity, never_prune_first=True):
    def objective(trial):
        x = trial.suggest_float("x", 0.0, 1.0)
        curve = fidelity.curve(trial, may_prune=not (never_prune_first and trial.number == 0))
        try:
            for epoch in range(1, 9):
                curve(epoch, x * (1 - 0.5 ** epoch))
        except optuna.TrialPruned:
            curve.finish(TrialState.PRUNED)
            trial.set_user_attr("pruned_at_step", curve.step)
            raise
        curve.finish(TrialState.COMPLETE, x)
        return x, 1.0 - x
    return objective


def test_hyperband_prunes_trials_of_a_multi_objective_study():
    study = optuna.create_study(directions=["maximize", "minimize"], sampler=optuna.samplers.RandomSampler(seed=0))
    fidelity = search.Fidelity(study.study_name, "ctx", "hyperband")
    study.optimize(_curve_objective(fidelity), n_trials=12)
    pruned = [t for t in study.trials if t.state == TrialState.PRUNED]
    assert pruned and all(1 <= t.user_attrs["pruned_at_step"] < 8 for t in pruned)
    assert study.trials[0].state == TrialState.COMPLETE
    twins = {t.user_attrs["search_trial"]: t for t in fidelity.study.trials}
    for t in study.trials:  # the companion study mirrors every trial, its curve and its state
        twin = twins[t.user_attrs["fidelity_trial"] if "fidelity_trial" in t.user_attrs else t.number]
        assert twin.state == t.state
        assert len(twin.intermediate_values) == t.user_attrs.get("pruned_at_step", 8)


def test_pruner_none_records_curves_and_prunes_nothing():
    study = optuna.create_study(directions=["maximize", "minimize"], sampler=optuna.samplers.RandomSampler(seed=0))
    fidelity = search.Fidelity(study.study_name, "ctx", "none")
    study.optimize(_curve_objective(fidelity), n_trials=8)
    assert all(t.state == TrialState.COMPLETE for t in study.trials)
    assert all(len(t.intermediate_values) == 8 for t in fidelity.study.trials)


@pytest.mark.parametrize("name", ["none", "median", "successive_halving", "hyperband"])
def test_every_configured_pruner_is_optunas(name):
    assert isinstance(search.make_pruner(name), optuna.pruners.BasePruner)
    assert fast_params(search={"pruner": name}).search.pruner == name


# --- the space ----------------------------------------------------------------------------------

def test_list_choices_sample_as_labels_and_apply_as_lists():
    params = space_params()
    study = optuna.create_study(directions=["maximize", "minimize"], sampler=optuna.samplers.RandomSampler(seed=3))
    seen = set()
    for _ in range(10):
        trial = study.ask()
        values = search.suggest(trial, params.search.space)
        assert values["student.channels"] in ([4, 8], [8, 16])
        assert params.with_overrides(values).student.channels == values["student.channels"]
        assert trial.params["student.channels"] == search.to_optuna(params.search.space["student.channels"],
                                                                    values["student.channels"])
        seen.add(tuple(values["student.channels"]))
        study.tell(trial, [0.5, 1.0])
    assert seen == {(4, 8), (8, 16)}
    assert study.trials[0].distributions["student.channels"] == CategoricalDistribution(["[4, 8]", "[8, 16]"])


# --- the current configuration ------------------------------------------------------------------

def test_a_new_context_starts_with_the_current_configuration():
    params = space_params().with_overrides({"student.channels": [8, 16], "prune.amount": 0.5})
    study = optuna.create_study(directions=["maximize", "minimize"])
    assert search.enqueue_current(study, params, "c1")
    assert not search.enqueue_current(study, params, "c1")  # already waiting in this context
    assert search.enqueue_current(study, params, "c2")      # another context measures it again
    trial = study.ask()
    values = search.suggest(trial, params.search.space)
    assert values == {"student.channels": [8, 16], "prune.amount": 0.5}
    assert trial.user_attrs["origin"] == "params.yaml" and trial.user_attrs["context"] == "c1"


def test_a_current_configuration_outside_the_space_is_one_line():
    params = space_params().with_overrides({"prune.amount": 0.9})
    with pytest.raises(ParamsError, match=r"^search\.space\.prune\.amount: the current prune\.amount 0\.9 is outside"):
        search.enqueue_current(optuna.create_study(directions=["maximize", "minimize"]), params, "c")


N_VAL = 270


def _metrics(wrong: int, speedup: float, spread: float = 0.05) -> dict:
    """A trial's metrics record: ``wrong`` of the 270 validation images missed (the first ones, so
    two trials share their mistakes), its speedup over the teacher with a +-``spread`` interval."""
    correct = [i >= wrong for i in range(N_VAL)]
    return {"val_accuracy": sum(correct) / N_VAL, "val_correct": pack_outcomes(correct),
            "latency_ms_p50": 10.0 / speedup, "speedup_vs_teacher": speedup,
            "speedup_vs_teacher_ci_low": speedup * (1 - spread), "speedup_vs_teacher_ci_high": speedup * (1 + spread)}


def _done(number, wrong, speedup, constraints, amount, context="c"):
    m = _metrics(wrong, speedup)
    return optuna.trial.create_trial(
        values=[m["val_accuracy"], m["latency_ms_p50"]], distributions={"prune.amount": FloatDistribution(0.0, 0.9)},
        params={"prune.amount": amount}, system_attrs={f"constraints:{k}": v for k, v in constraints.items()},
        user_attrs={"context": context, "overrides": {"prune.amount": amount}, "metrics": m})


def _current():
    return fast_params(search={"space": {"prune.amount": {"type": "float", "low": 0.0, "high": 0.9}}},
                       prune={"amount": 0.5})


def test_selection_never_beats_a_feasible_starting_point_on_one_objective_by_losing_the_other():
    study = optuna.create_study(directions=["maximize", "minimize"])
    study.add_trials([
        _done(0, 20, 10.0, {"accuracy": -1.0}, 0.5),  # the current configuration
        _done(1, 2, 3.0, {"accuracy": -1.5}, 0.2),    # shown more accurate, shown 3x slower: a trade
        _done(2, 21, 10.2, {"accuracy": -0.5}, 0.3),  # one image and noise apart: no improvement
        _done(3, 21, 20.0, {"accuracy": -1.0}, 0.7),  # tied in accuracy, shown 2x faster: the one to take
    ])
    outcome = search.summarize(study, "c", _current())
    assert outcome.current.number == 0 and outcome.best.number == 3
    study.add_trial(_done(4, 19, 21.0, {"accuracy": -1.5}, 0.6))  # tied with 3 on both: the higher speedup
    assert search.summarize(study, "c", _current()).best.number == 4


def test_selection_falls_back_to_the_starting_point_when_nothing_improves_on_it():
    study = optuna.create_study(directions=["maximize", "minimize"])
    study.add_trials([_done(0, 3, 10.0, {"accuracy": -1.0}, 0.5), _done(1, 2, 10.3, {"accuracy": -0.5}, 0.3)])
    assert search.summarize(study, "c", _current()).best.number == 0  # one image, overlapping speedups: a tie


def test_an_infeasible_starting_point_is_replaced_by_a_feasible_trial_it_does_not_improve_on():
    study = optuna.create_study(directions=["maximize", "minimize"])
    study.add_trials([
        _done(0, 3, 3.0, {"accuracy": -1.0, "speedup": 0.5}, 0.5),   # current, shown too slow
        _done(1, 3, 2.5, {"accuracy": -0.5, "speedup": -0.1}, 0.3),  # feasible, but the current one improves on it
        _done(2, 4, 5.0, {"accuracy": -0.5, "speedup": -0.2}, 0.7),  # feasible, faster: takes its place
    ])
    assert search.summarize(study, "c", _current()).best.number == 2


def test_val_accuracies_images_apart_are_a_tie_that_the_faster_trial_wins():
    """Seen in a real `make search N=12` on digits (270 validation images): the rule took a trial one
    image more accurate and 4.8x slower than another. A few images are below what the split can
    tell apart: those trials are tied in accuracy, and the faster one wins."""
    study = optuna.create_study(directions=["maximize", "minimize"])
    study.add_trials([
        _done(0, 4, 12.0, {"accuracy": 0.1}, 0.5),    # current, infeasible
        _done(1, 1, 2.5, {"accuracy": -1.0}, 0.2),    # one image better than 2, 4.8x slower
        _done(2, 2, 12.0, {"accuracy": -0.6}, 0.3),   # the most accurate of those the current one does not beat
        _done(3, 3, 12.5, {"accuracy": -0.3}, 0.4),   # tied with 2 on both
    ])
    assert search.summarize(study, "c", _current()).best.number == 3  # tied everywhere: the higher speedup point
    study.add_trial(_done(4, 2, 12.5, {"accuracy": -0.6}, 0.35))
    assert search.summarize(study, "c", _current()).best.number == 4  # same speed, one image better


# --- make promote -------------------------------------------------------------------------------

@pytest.fixture
def project(in_tmp):
    """A project dir whose params.yaml is the committed one, with a real sqlite study next to it."""
    (in_tmp / "params.yaml").write_text((ROOT / "params.yaml").read_text())
    raw = yaml.safe_load((in_tmp / "params.yaml").read_text())
    cfg = raw["search"]
    study = optuna.create_study(study_name=cfg["study_name"], storage=f"sqlite:///{in_tmp / 'optuna.db'}",
                                directions=["maximize", "minimize"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.set_metric_names(cfg["objectives"])
    current = {key: raw[key.partition(".")[0]][key.partition(".")[2]] for key in cfg["space"]}

    def trial(wrong, speedup, **changes):
        m = _metrics(wrong, speedup)
        return optuna.trial.create_trial(values=[m["val_accuracy"], m["latency_ms_p50"]],
                                         user_attrs={"context": "c", "overrides": {**current, **changes}, "metrics": m})

    study.add_trials([trial(3, 10.0),                           # 0: the current configuration
                      trial(4, 5.0, **{"prune.amount": 0.3}),   # 1: tied in accuracy, shown 2x slower
                      trial(3, 20.0, **{"prune.amount": 0.2}),  # 2: same images right, shown 2x faster
                      trial(2, 10.2, **{"prune.amount": 0.4})])  # 3: one image and noise apart: a tie
    return in_tmp, current


def _best_file(path, overrides):
    path.write_text(yaml.safe_dump(overrides))
    return path


def test_promote_refuses_a_trial_that_does_not_improve_on_the_current_configuration(project):
    root, current = project
    before = (root / "params.yaml").read_text()
    for amount, number in ((0.3, 1), (0.4, 3)):  # shown worse; tied within the intervals
        best = _best_file(root / "best.yaml", {**current, "prune.amount": amount})
        with pytest.raises(DominatedError, match=rf"trial {number} does not improve on trial 0, the current "
                                                 r"configuration, within the 95% intervals"):
            promote(best, root / "params.yaml")
    assert (root / "params.yaml").read_text() == before


def test_promote_force_says_what_is_lost(project):
    root, current = project
    said = []
    best = _best_file(root / "best.yaml", {**current, "prune.amount": 0.3})
    changes = promote(best, root / "params.yaml", force=True, say=said.append)
    assert changes == {"prune.amount": (current["prune.amount"], 0.3)}
    assert len(said) == 1 and "does not improve on trial 0" in said[0] and "speedup 5.00x" in said[0]
    assert ": worse" in said[0] and "tied" in said[0]  # latency shown worse, accuracy tied


def test_promote_takes_an_improvement_and_says_why(project):
    root, current = project
    said = []
    best = _best_file(root / "best.yaml", {**current, "prune.amount": 0.2})
    assert promote(best, root / "params.yaml", say=said.append) == {"prune.amount": (current["prune.amount"], 0.2)}
    assert len(said) == 1 and "trial 2 improves on the current configuration" in said[0] and ": better" in said[0]


def test_promote_stage_refusal_is_one_line_exit_2(project, capsys):
    import stages.promote

    root, current = project
    best = _best_file(root / "best.yaml", {**current, "prune.amount": 0.3})
    with pytest.raises(SystemExit) as exit_:
        stages.promote.main(["--best", str(best), "--params", str(root / "params.yaml")])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and err.count("\n") == 1 and "--force" in err


# --- one latency routine ------------------------------------------------------------------------

def test_a_trial_is_timed_by_the_benchmark_with_its_output_check():
    """A compiled variant that fails the benchmark's check never wins a trial; judged on the
    deploy runtime when one is set."""
    import torch

    from pipelines.models import CNN
    from pipelines.training.context import Context

    params = fast_params(benchmark={"runtimes": ["eager", "compile-default"], "warmup": 1, "iters": 3})
    ctx = Context(params)
    torch.manual_seed(0)
    teacher = CNN(1, 10, [4, 8], 1).eval()
    out = search.measure_latency(ctx, teacher, Broken().eval())
    assert out["best_runtime"] == "eager" and "compile-default" in out["runtime_errors"]
    # the speedup is the per-round ratio's median: the point of its own interval
    assert out["speedup_vs_teacher_ci_low"] <= out["speedup_vs_teacher"] <= out["speedup_vs_teacher_ci_high"]
    deployed = Context(params.with_overrides({"benchmark.deploy_runtime": "compile-default"}))
    with pytest.raises(RuntimeError, match="no runtime could run the model"):
        search.measure_latency(deployed, teacher, Broken().eval())


def test_the_quantize_stage_and_the_trials_share_one_engine_decision_per_architecture_and_machine(tmp_path):
    """A close call of `quantize.engine: auto` decided once in the quantize stage (pt2e) and again in
    the search (tie -> eager) made the current configuration's trial time another engine than the
    pipeline ships (29.8x vs 48.7x). The decision is measured once per architecture signature and
    machine and recorded; whoever decides next (the stage, a trial) takes it; another architecture
    is measured; a disturbed measurement is not recorded."""
    from pipelines.chain.quantize import INT8_MODELS
    from pipelines.engines import ENGINE_CACHE, architecture_signature, decided_engine, measure_engines
    from pipelines.search.trial import Baseline
    from pipelines.training.context import Context

    params = fast_params(tracking={"enabled": False}, quantize={"calibration_batches": 1},
                         benchmark={"warmup": 2, "iters": 10, "batch_size": 16})
    ctx = Context(params)
    cache = tmp_path / ENGINE_CACHE
    measured = decided_engine(ctx, ctx.new_model("student").eval(), cache)  # real engines, timed side by side
    assert measured["engine"] in ("eager", "pt2e") and "cached" not in measured
    assert cache.exists() != bool(measured["noisy"])
    if measured["noisy"]:  # a busy machine: nothing recorded; the next call measures again
        return
    again = decided_engine(ctx, model=None, cache=cache)  # taken, not measured (model None would fail)
    assert again["engine"] == measured["engine"] and again["why"] == measured["why"] and again["cached"] == str(cache)
    assert measured["engine"] in measured[INT8_MODELS] and INT8_MODELS not in again  # models: never recorded
    # a search trial of the same architecture (with the default cache here) takes it too
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("COMPRESSION_CACHE_DIR", str(tmp_path))
        baseline = Baseline(ctx, teacher=None, teacher_val_accuracy=1.0, teacher_test_accuracy=1.0,
                            cached_logits=None, teacher_hash="h")
        assert baseline.choose_engine(ctx, model=None)["engine"] == measured["engine"]
        wider = fast_params(student={"channels": [p * 2 for p in params.student.channels]})
        assert architecture_signature(wider) != architecture_signature(params)
        with pytest.raises(Exception):  # another architecture is measured (here: no model to measure)
            baseline.choose_engine(Context(wider), model=None)
    noisy = {"engine": "eager", "why": "the machine was busy", "noisy": True}
    other = Context(params.with_overrides({"benchmark.batch_size": 8}))
    assert decided_engine(other, None, cache, measure=lambda c, m: noisy) is noisy
    assert decided_engine(other, None, cache, measure=lambda c, m: {**noisy, "noisy": False})["why"] == noisy["why"]
    assert "cached" in decided_engine(other, None, cache, measure=measure_engines)  # recorded after a quiet one


def test_the_quantize_step_takes_the_int8_model_the_engine_decision_measured():
    """A fresh engine decision quantized both engines on the calibration batches to time them; the
    quantize step (stage and trials) takes the chosen one instead of quantizing it a second time
    (~2-3 s for PT2E on the default model), only where it is what it would build: static PTQ of the
    model as given, no range fix in between."""
    from pipelines.chain.quantize import INT8_MODELS, quantize_model
    from pipelines.compression.quantize import quantize
    from pipelines.training.context import Context

    ctx = Context(fast_params(tracking={"enabled": False}, quantize={"method": "static", "calibration_batches": 1}))
    model = ctx.new_model("student").eval()
    timed = quantize(model, ctx.params.quantize, ctx, engine="eager")

    def choose(c: Context, m: torch.nn.Module) -> dict:
        return {"engine": "eager", "why": "measured", INT8_MODELS: {"eager": timed}}

    out, metrics = quantize_model(ctx, model, choose=choose)
    assert out is timed and metrics["engine"] == "eager" and INT8_MODELS not in metrics["engine_choice"]
    x = ctx.example(8)
    with torch.inference_mode():  # what it would have built: the same calibration, the same int8 outputs
        assert torch.equal(out(x), quantize(model, ctx.params.quantize, ctx, engine="eager")(x))
    fixed = Context(ctx.params.with_overrides({"quantize.equalize": "cle"}))  # a range fix quantizes its own model
    assert quantize_model(fixed, model, choose=choose)[0] is not timed


def test_machine_decisions_live_per_machine_not_per_checkout(tmp_path, monkeypatch):
    """The engine record is this machine's: $COMPRESSION_CACHE_DIR, else the user's XDG cache, the
    same for every clone (a fresh clone measured again, ~25 s of make repro, and could ship another
    engine on a close call); a cache it cannot write costs a measurement next time, not the run."""
    from pipelines.core.io import cache_dir
    from pipelines.engines import ENGINE_CACHE, decided_engine
    from pipelines.training.context import Context

    monkeypatch.delenv("COMPRESSION_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    for checkout in ("a", "b"):
        (tmp_path / checkout).mkdir()
        monkeypatch.chdir(tmp_path / checkout)
        assert cache_dir() == tmp_path / "xdg" / "compression-lab"
    monkeypatch.setenv("COMPRESSION_CACHE_DIR", str(tmp_path / "mine"))
    assert cache_dir() == tmp_path / "mine"
    blocked = tmp_path / "file"
    blocked.write_text("")  # a directory path through a file: not writable
    quiet = {"engine": "eager", "why": "measured", "noisy": False}
    assert decided_engine(Context(fast_params()), None, blocked / ENGINE_CACHE, measure=lambda c, m: quiet) is quiet


def test_an_unreadable_engine_record_is_measured_again_and_rewritten(tmp_path):
    """A truncated engine_choice.json is neither trusted nor fatal: decided again, and the file
    rewritten with the new decision (it crashed on the second read before)."""
    from pipelines.engines import ENGINE_CACHE, decided_engine
    from pipelines.training.context import Context

    cache = tmp_path / ENGINE_CACHE
    cache.write_text('{"truncated": ')
    quiet = {"engine": "eager", "why": "measured", "noisy": False}
    assert decided_engine(Context(fast_params()), None, cache, measure=lambda c, m: quiet) is quiet
    assert decided_engine(Context(fast_params()), None, cache, measure=lambda c, m: 1 / 0)["why"] == "measured"
