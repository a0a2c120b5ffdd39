"""The Optuna search: real studies on temp sqlite/journal storages, real MLflow store in tmp,
real (tiny) training through the same workflow functions the stages call."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import optuna
import pytest
import yaml
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState

from pipelines import search
from pipelines.compression.checkpoint import save_model
from pipelines.core.errors import ParamsError
from pipelines.core.config import load_params, validate
from pipelines.promote import promote
from pipelines.search.attrs import curve_of, metrics_of, named_constraints, overrides_of
from pipelines.core.decision import Interval, Limits, Result, replaces
from pipelines.core.stats import unpack_outcomes
from pipelines.training.context import Context
from pipelines.workflow import train_teacher
from tests.conftest import ROOT, fast_params, venv_env

optuna.logging.set_verbosity(optuna.logging.ERROR)

SPACE = {
    "distill.temperature": {"type": "float", "low": 1.0, "high": 8.0, "log": True},
    # 1e30: the loss becomes NaN; 1e-7: learns nothing (a trial for the pruner to stop)
    "distill.lr": {"type": "categorical", "choices": [0.003, 1e30, 1e-7]},
    "prune.amount": {"type": "float", "low": 0.1, "high": 0.6, "step": 0.1},
    "prune.steps": {"type": "int", "low": 1, "high": 2},
    "quantize.method": {"type": "categorical", "choices": ["none", "static"]},
    "quantize.per_channel": {"type": "categorical", "choices": [True, False]},
}
# The interruption tests quantize with the eager engine: `auto` times a PT2E compile beside it in
# every new process, and what a trial quantizes with is not what they check (`searched` keeps auto:
# test_promoted_params_rebuild_the_chosen_trial checks that trials choose as the stage does).
EAGER_INT8 = {"quantize.engine": "eager"}


def search_params(**search_overrides):
    cfg = {"study_name": "t", "space": SPACE, "n_trials": 2, "max_accuracy_drop": 100.0, "max_latency_ms": 1000.0,
           **search_overrides}
    # trials train with the pipeline's own epochs: 1 distillation epoch, no fine-tuning
    return fast_params(train={"epochs": 2}, distill={"epochs": 1}, prune={"finetune_epochs": 0},
                       data={"max_train_samples": 400}, search=cfg,
                       tracking={"experiment": "search-test"},
                       benchmark={"warmup": 1, "iters": 3, "runtimes": ["eager"]})


@pytest.fixture(scope="module")
def teacher():
    ctx = Context(search_params().with_overrides({"tracking.enabled": False}))
    model, _ = train_teacher(ctx)
    return model


# --- space, constraints, storage ----------------------------------------------------------------

def test_space_sampling_covers_declared_types():
    params = search_params()
    study = optuna.create_study(directions=["maximize", "minimize"], sampler=optuna.samplers.RandomSampler(seed=1))
    seen = {key: set() for key in SPACE}
    for _ in range(12):
        trial = study.ask()
        values = search.suggest(trial, params.search.space)
        assert set(values) == set(SPACE)
        for key, value in values.items():
            seen[key].add(value)
        params.with_overrides(values)  # every sample passes the schema
        study.tell(trial, [0.5, 1.0])
    dists = study.trials[0].distributions
    assert dists["distill.temperature"] == FloatDistribution(1.0, 8.0, log=True)
    assert dists["prune.amount"] == FloatDistribution(0.1, 0.6, step=0.1)
    assert dists["prune.steps"] == IntDistribution(1, 2)
    assert dists["quantize.method"] == CategoricalDistribution(["none", "static"])
    assert all(1.0 <= v <= 8.0 for v in seen["distill.temperature"])
    assert seen["quantize.per_channel"] == {True, False} and seen["prune.steps"] == {1, 2}
    assert all(round(v * 10) == pytest.approx(v * 10) for v in seen["prune.amount"])


def test_search_space_keys_are_schema_checked():
    with pytest.raises(ParamsError, match=r"search\.space\.prune\.amunt"):
        fast_params(search={"space": {"prune.amunt": {"type": "float", "low": 0.1, "high": 0.5}}})
    with pytest.raises(ParamsError, match=r"quantize\.method"):
        fast_params(search={"space": {"quantize.method": {"type": "categorical", "choices": ["int3"]}}})


def test_constraint_values_and_feasibility():
    """Infeasible only where the 95% interval shows the limit broken (the rule of pipelines/core/decision.py)."""
    limits = Limits(max_accuracy_drop_pp=1.0, min_speedup=3.0, max_latency_ms=2.0)
    teacher = Result("teacher", 1.0, (True,) * 270)

    def trial(wrong, speedup=(4.0, 3.5, 4.5), latency=(1.5, 1.4, 1.6)):
        correct = (False,) * wrong + (True,) * (270 - wrong)
        return Result(1, sum(correct) / 270, correct, Interval(*speedup), Interval(*latency))

    c = search.constraint_values(trial(3), teacher, limits)  # 1.11 pp below: not shown beyond 1 pp
    assert set(c) == {"accuracy", "latency_ms", "speedup"} and search.is_feasible(c)
    assert c["latency_ms"] == pytest.approx(1.4 - 2.0) and c["speedup"] == pytest.approx(3.0 - 4.5)
    assert not search.is_feasible(search.constraint_values(trial(12), teacher, limits))  # 4.4 pp: shown
    assert not search.is_feasible(search.constraint_values(trial(0, latency=(2.5, 2.1, 2.9)), teacher, limits))
    assert search.is_feasible(search.constraint_values(trial(0, latency=(2.5, 1.9, 2.9)), teacher, limits))
    assert not search.is_feasible(search.constraint_values(trial(0, speedup=(2.5, 2.4, 2.9)), teacher, limits))
    assert search.is_feasible({"accuracy": 0.0, "speedup": 0.0})  # on the boundary counts as feasible
    assert set(search.constraint_values(trial(0), teacher, Limits(1.0))) == {"accuracy"}


def _trial(number, values, constraints, accuracy=None, latency=None):
    trial = optuna.trial.create_trial(
        values=values,
        distributions={"prune.amount": FloatDistribution(0.0, 0.9)}, params={"prune.amount": 0.1 * number},
        system_attrs={f"constraints:{k}": v for k, v in constraints.items()},
        user_attrs={"context": "c", "overrides": {"prune.amount": 0.1 * number},
                    "metrics": {"val_accuracy": values[0] if accuracy is None else accuracy,
                                "latency_ms_p50": values[1] if latency is None else latency}})
    return trial


def test_front_only_feasible_and_selection_rule(tmp_path):
    study = optuna.create_study(directions=["maximize", "minimize"])
    study.add_trials([
        _trial(0, [0.99, 5.0], {"accuracy": 0.0, "speedup": -1.0}),   # feasible, slow
        _trial(1, [0.99, 1.0], {"accuracy": -0.5, "speedup": 0.5}),  # infeasible (speedup), dominates 0
        _trial(2, [0.97, 2.0], {"accuracy": -0.1, "speedup": -0.1}),  # feasible, faster
        _trial(3, [0.99, 3.0], {"accuracy": -0.2, "speedup": -2.0}),  # feasible, dominates 0
        _trial(4, [0.80, 0.5], {"accuracy": 3.0, "speedup": -5.0}),   # infeasible (accuracy)
    ])
    outcome = search.summarize(study, "c")
    assert [t.number for t in outcome.front] == [2, 3]
    assert outcome.best.number == 3  # highest feasible accuracy; tie with 0 goes to lower latency
    assert outcome.counts == {"trials": 5, "complete": 5, "pruned": 0, "failed": 0, "feasible": 3, "front": 2}
    assert search.first_feasible(outcome.trials) == 1
    files = search.write_outputs(outcome, tmp_path, ["val_accuracy", "latency_ms_p50"])
    pareto = json.loads((tmp_path / "pareto.json").read_text())
    assert [t["number"] for t in pareto["trials"]] == [2, 3] and pareto["best_trial"] == 3
    assert all(v <= 0 for t in pareto["trials"] for v in t["constraints"].values())
    assert yaml.safe_load((tmp_path / "best_params.yaml").read_text()) == {"prune.amount": pytest.approx(0.3)}
    names = {p.name for p in files}
    assert {"pareto_front.png", "pareto_front.html", "param_importances.png", "param_importances.html"} <= names
    # hypervolume: only feasible front points, in objective units, maximized axes negated
    hv = search.hypervolume(outcome.front, ["maximize", "minimize"], [0.9, 6.0])
    assert hv == pytest.approx((0.99 - 0.9) * (6.0 - 3.0) + (0.97 - 0.9) * (3.0 - 2.0))


def test_storage_resolution(monkeypatch, in_tmp):
    cfg = fast_params().search
    monkeypatch.delenv(search.STORAGE_ENV, raising=False)
    assert search.storage_url(cfg) == f"sqlite:///{in_tmp / 'optuna.db'}"
    cfg2 = fast_params(search={"storage": "journal:studies/s.journal"}).search
    assert search.storage_url(cfg2) == "journal:studies/s.journal"
    monkeypatch.setenv(search.STORAGE_ENV, "sqlite:///elsewhere.db")
    assert search.storage_url(cfg2) == "sqlite:///elsewhere.db"
    monkeypatch.delenv(search.STORAGE_ENV)
    params = fast_params(search={"storage": "journal:studies/s.journal", "study_name": "j"})
    study = search.open_study(params)
    study.optimize(lambda t: (t.suggest_float("x", 0, 1), 1.0), n_trials=2)
    assert (in_tmp / "studies" / "s.journal").exists()
    assert len(search.open_study(params).trials) == 2  # resumed from the journal file
    with pytest.raises(ParamsError, match="objectives"):
        search.open_study(params.with_overrides({"search.objectives": ["val_accuracy", "latency_ms_p50", "size_mb"]}))
    with pytest.raises(ParamsError, match="not an Optuna storage URL"):
        search.make_storage("no-scheme.db")


# --- the real thing -----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def searched(teacher, tmp_path_factory):
    """One real search, resumed, on a real sqlite study and a real MLflow store. First context
    (pruner successive_halving): the current configuration (enqueued by the search itself), then
    three enqueued trials: one that raises (NaN loss), a normal one, and one that learns nothing
    (for the pruner to stop). The resume changes the space (a new context) and adds two trials."""
    from types import SimpleNamespace

    from pipelines.tracking import stage_run

    root = tmp_path_factory.mktemp("searched")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    storage = f"sqlite:///{root / 'optuna.db'}"
    out = root / "reports" / "search"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", uri)
        mp.delenv("DVC_EXP_NAME", raising=False)
        mp.delenv("DVC_ROOT", raising=False)
        mp.chdir(root)
        params = search_params(pruner="successive_halving")
        with stage_run(params, "search", ["search"]) as run:
            search.run_search(params, teacher, run, out, n_trials=1, storage=storage)
            study = search.open_study(params, storage=storage)
            for lr, temperature in ((1e30, 4.0), (0.003, 2.0), (1e-7, 4.0)):
                study.enqueue_trial({"distill.lr": lr, "distill.temperature": temperature, "quantize.method": "static"})
            first = search.run_search(params, teacher, run, out, n_trials=3, storage=storage)
        first_trials = first.study.get_trials()
        first_pareto = json.loads((out / "pareto.json").read_text())
        params2 = params.with_overrides({"search.space": {k: v for k, v in SPACE.items() if k != "distill.lr"}})
        with stage_run(params2, "search", ["search"]) as run2:
            second = search.run_search(params2, teacher, run2, out, n_trials=2, storage=storage)
    return SimpleNamespace(first=first, first_trials=first_trials, first_pareto=first_pareto, second=second,
                           out=out, uri=uri, run_id=run.run_id, run2_id=run2.run_id, params=params, params2=params2,
                           decisions=os.environ["COMPRESSION_CACHE_DIR"])  # the machine record its trials used


def test_a_new_context_starts_with_the_current_configuration(searched):
    for trial, params in ((searched.first_trials[0], searched.params), (searched.second.trials[0], searched.params2)):
        assert trial.user_attrs["origin"] == "params.yaml"
        expected = {key: getattr(getattr(params, key.partition(".")[0]), key.partition(".")[2])
                    for key in params.search.space}
        assert overrides_of(trial) == expected and trial.state == TrialState.COMPLETE
    assert searched.second.trials[0].number == len(searched.first_trials)  # first of its context
    assert searched.first.current.number == 0 and searched.first_pareto["current_trial"]["number"] == 0


def test_a_failing_trial_is_recorded_and_the_study_goes_on(searched):
    assert [t.state for t in searched.first_trials] == [TrialState.COMPLETE, TrialState.FAIL, TrialState.COMPLETE,
                                                       TrialState.PRUNED]
    reason = searched.first_trials[1].user_attrs["fail_reason"]
    assert "TrainingError" in reason and "nan" in reason


def test_a_hopeless_trial_is_pruned_in_optuna_mlflow_and_the_outputs(searched):
    pruned = searched.first_trials[3]
    assert pruned.user_attrs["pruned_at_step"] == 1 and len(curve_of(pruned)) == 1
    assert searched.first_pareto["counts"]["pruned"] == 1
    assert [p["number"] for p in searched.first_pareto["pruned"]] == [3]
    assert searched.first_pareto["pruned"][0]["pruned_at_step"] == 1
    client = mlflow.MlflowClient(searched.uri)
    experiment = client.get_run(searched.run_id).info.experiment_id
    run = client.search_runs([experiment], filter_string="tags.`optuna.trial` = '3'")[0]
    assert run.info.status == "KILLED"
    assert run.data.tags["state"] == "PRUNED" and run.data.tags["pruned_at_step"] == "1"
    # the companion study that drove the pruner holds the same curve, as Optuna intermediate values
    twin = optuna.load_study(study_name=f"t:val_accuracy:{pruned.user_attrs['context']}",
                             storage=f"sqlite:///{searched.out.parents[1] / 'optuna.db'}")
    mirror = next(t for t in twin.trials if t.user_attrs["search_trial"] == 3)
    assert mirror.state == TrialState.PRUNED and list(mirror.intermediate_values) == [1]


def test_objective_is_validation_accuracy_and_test_accuracy_is_apart(searched):
    teacher_val = searched.first_pareto["teacher_val_accuracy"]
    for t in [*searched.first.trials, *searched.second.trials]:
        assert t.values[0] == t.user_attrs["val_accuracy"] == metrics_of(t)["val_accuracy"]
        assert t.user_attrs["test_accuracy"] == metrics_of(t)["accuracy"]
        m = metrics_of(t)
        correct = unpack_outcomes(m["val_correct"])  # per validation image, paired with the teacher's
        assert sum(correct) / len(correct) == pytest.approx(t.values[0])
        assert m["val_accuracy_drop_vs_teacher_ci_low"] <= 100 * (teacher_val - t.values[0]) \
            <= m["val_accuracy_drop_vs_teacher_ci_high"]
        assert t.constraints["accuracy"] == pytest.approx(m["val_accuracy_drop_vs_teacher_ci_low"] - 100.0)
        assert m["val_accuracy_ci_low"] <= t.values[0] <= m["val_accuracy_ci_high"]
    assert 0 < searched.first_pareto["teacher_accuracy"] <= 1  # the teacher's test accuracy: reported apart


def test_resume_keeps_finished_trials_and_offers_only_this_context(searched):
    trials = searched.second.study.get_trials()
    assert len(trials) == 6
    done = {t.number: t.values for t in searched.first_trials if t.state == TrialState.COMPLETE}
    for number, values in done.items():
        assert trials[number].state == TrialState.COMPLETE and trials[number].values == values
    # the space changed, so the first run's trials belong to another context and are not offered
    assert searched.second.counts["trials"] == 2 and all(t.number >= 4 for t in searched.second.trials)


def test_completed_trials_carry_constraints_and_pareto_holds_feasible_only(searched):
    for t in searched.second.trials:
        assert set(named_constraints(t)) == {"accuracy", "latency_ms"}
        assert metrics_of(t)["latency_ms_p50"] > 0 and 0 <= t.values[0] <= 1
    pareto = json.loads((searched.out / "pareto.json").read_text())
    assert pareto["trials"] and all(v <= 0 for t in pareto["trials"] for v in t["constraints"].values())


def test_search_writes_its_plots(searched):
    for name in ("pareto_front", "param_importances"):
        assert (searched.out / f"{name}.png").stat().st_size > 0
        assert (searched.out / f"{name}.html").stat().st_size > 0


def test_each_trial_is_a_nested_mlflow_run_with_its_state(searched):
    client = mlflow.MlflowClient(searched.uri)
    experiment = client.get_run(searched.run_id).info.experiment_id
    children = client.search_runs([experiment], filter_string=f"tags.mlflow.parentRunId = '{searched.run_id}'")
    by_trial = {int(r.data.tags["optuna.trial"]): r for r in children}
    assert set(by_trial) == {0, 1, 2, 3}
    assert by_trial[1].info.status == "FAILED" and "TrainingError" in by_trial[1].data.tags["fail_reason"]
    assert by_trial[2].info.status == "FINISHED" and by_trial[2].data.tags["state"] == "COMPLETE"
    assert by_trial[2].data.params["distill.lr"] == "0.003"
    assert {"val_accuracy", "accuracy", "latency_ms_p50", "constraint.accuracy", "feasible"} <= set(
        by_trial[2].data.metrics)
    artifacts = {a.path for a in client.list_artifacts(searched.run2_id, "search")}
    assert {"search/pareto.json", "search/best_params.yaml", "search/pareto_front.png"} <= artifacts


def _chosen(searched):
    pareto = json.loads((searched.out / "pareto.json").read_text())
    return next(t for t in searched.second.trials if t.number == pareto["best_trial"])


def test_best_params_are_the_chosen_trials_overrides(searched):
    best = yaml.safe_load((searched.out / "best_params.yaml").read_text())
    chosen = _chosen(searched)
    assert best == overrides_of(chosen)
    # the starting point, or a trial that improves on it within the intervals
    current = searched.second.current
    objectives = list(searched.params2.search.objectives)
    assert chosen.number == current.number or replaces(search.from_trial(chosen), search.from_trial(current),
                                                       objectives)
    searched.params.with_overrides(best)  # valid params keys and values


def test_promote_writes_the_best_params_keeping_comments(searched, in_tmp):
    best_file = searched.out / "best_params.yaml"
    best = yaml.safe_load(best_file.read_text())
    target = in_tmp / "params.yaml"
    original = (ROOT / "params.yaml").read_text()
    assert "temperature: 4.0\n" in original
    target.write_text(original.replace("temperature: 4.0\n", "temperature: 9.5\n"))  # differ from the best
    changes = promote(best_file, target)
    assert changes and set(changes) <= set(best)
    promoted = load_params(target)
    for key, value in best.items():
        section, _, name = key.partition(".")
        assert getattr(getattr(promoted, section), name) == value
    text = target.read_text()
    assert "# percentage points below the teacher" in text and "# Declarative space" in text
    assert promote(best_file, target) == {}  # idempotent


def test_promoted_params_rebuild_the_chosen_trial(searched, teacher, in_tmp, monkeypatch):
    """promote + the stages (as dvc repro runs them) rebuild the chosen trial's model, on the same
    machine: the quantize stage takes the engine the trial's decision recorded (measured again, a
    close call between the engines can go the other way, 2 images apart on these barely trained models)."""
    monkeypatch.setenv("COMPRESSION_CACHE_DIR", searched.decisions)
    import stages.compile_benchmark
    import stages.distill
    import stages.prune
    import stages.quantize
    from pipelines.core.io import read_json
    from pipelines.tracking import Run

    exp = in_tmp / "exp" / "params.yaml"
    exp.parent.mkdir()
    exp.write_text(yaml.safe_dump(searched.params2.with_overrides({"tracking.enabled": False}).model_dump(),
                                  sort_keys=False))
    promote(searched.out / "best_params.yaml", exp)
    save_model(in_tmp / "models" / "teacher.pt", teacher, Context(searched.params).spec("teacher"))
    ctx = Context(load_params(exp))
    for module in (stages.distill, stages.prune, stages.quantize, stages.compile_benchmark):
        module.body(Context(ctx.params), Run(None))
    final = read_json(in_tmp / "metrics" / "compile_benchmark.json")["quantized"]
    one_sample = 1.0 / len(ctx.data.test)
    assert abs(final["accuracy"] - metrics_of(_chosen(searched))["accuracy"]) <= one_sample + 1e-9


def test_promote_refuses_invalid_keys_and_leaves_params_untouched(in_tmp):
    target = in_tmp / "params.yaml"
    original = (ROOT / "params.yaml").read_text()
    target.write_text(original)
    bad = in_tmp / "best.yaml"
    bad.write_text("prune.amunt: 0.3\n")
    with pytest.raises(ParamsError, match="amunt"):
        promote(bad, target)
    bad.write_text("quantize.method: int3\n")
    with pytest.raises(ParamsError, match="quantize.method"):
        promote(bad, target)
    assert target.read_text() == original
    validate(yaml.safe_load(original))


# --- interrupting the stage ---------------------------------------------------------------------

def _complete(storage: str, name: str) -> list[optuna.trial.FrozenTrial]:
    try:
        study = optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        return []
    return [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE]


def _run_until(cmd, cwd, env, storage, name, at_least, sig):
    log = Path(cwd) / f"stage-{sig.name}.log"  # a file, not a pipe: progress bars must never block the child
    with open(log, "w") as handle:
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=handle, stderr=subprocess.STDOUT, text=True)
        deadline = time.monotonic() + 300  # a trial on a shared machine
        while time.monotonic() < deadline and proc.poll() is None:
            if len(_complete(storage, name)) >= at_least:
                break
            time.sleep(0.3)
        assert proc.poll() is None, f"search ended early:\n{log.read_text()[-3000:]}"
        proc.send_signal(sig)
        proc.wait(timeout=60)
    return proc.returncode, log.read_text()


def test_ctrl_c_keeps_finished_trials_and_writes_outputs(teacher, tmp_path, in_tmp):
    """SIGINT arrives as KeyboardInterrupt inside a trial: Optuna marks that trial FAIL and
    re-raises; the finished ones stay, the outputs are written from them, the interrupt propagates."""
    from pipelines.tracking import Run

    params = search_params(study_name="ctrl-c", space={k: v for k, v in SPACE.items() if k != "distill.lr"}
                           ).with_overrides(EAGER_INT8)
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    calls = []

    def chain(baseline, trial_params, after_epoch=None):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return search.run_chain(baseline, trial_params, after_epoch)

    with pytest.raises(KeyboardInterrupt):
        search.run_search(params, teacher, Run(None), in_tmp / "out", n_trials=10, storage=storage, chain=chain)
    states = [t.state for t in optuna.load_study(study_name="ctrl-c", storage=storage).trials]
    assert states == [TrialState.COMPLETE, TrialState.COMPLETE, TrialState.FAIL]
    assert json.loads((in_tmp / "out" / "pareto.json").read_text())["counts"]["complete"] == 2
    again = search.run_search(params, teacher, Run(None), in_tmp / "out", n_trials=1, storage=storage)
    assert again.counts["complete"] == 3


def test_stage_killed_mid_search_loses_no_finished_trial(teacher, tmp_path):
    params = search_params(study_name="kill", space={k: v for k, v in SPACE.items() if k != "distill.lr"},
                           n_trials=200).with_overrides({"tracking.enabled": False, **EAGER_INT8})
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params.model_dump(), sort_keys=False))
    ctx = Context(params)
    save_model(tmp_path / "models" / "teacher.pt", teacher, ctx.spec("teacher"))
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"  # the default: <project root>/optuna.db
    env = venv_env()
    env.pop("OPTUNA_STORAGE", None)
    env.pop("DVC_ROOT", None)
    cmd = [sys.executable, "-m", "stages.search"]

    code, _ = _run_until(cmd, tmp_path, env, storage, "kill", 1, signal.SIGKILL)
    assert code == -signal.SIGKILL
    kept = {t.number: t.values for t in _complete(storage, "kill")}
    assert len(kept) >= 1

    proc = subprocess.run([*cmd, "--n-trials", "1"], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    final = {t.number: t.values for t in _complete(storage, "kill")}
    assert len(final) == len(kept) + 1
    assert all(final[n] == v for n, v in kept.items())
    pareto = json.loads((tmp_path / "reports" / "search" / "pareto.json").read_text())
    assert pareto["counts"]["complete"] == len(final)
