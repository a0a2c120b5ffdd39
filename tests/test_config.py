from pathlib import Path

import pytest
import yaml

from pipelines.core.errors import ParamsError
from pipelines.core.config import load_params, validate
from tests.conftest import ROOT, fast_params, one_error_line, run_stage, venv_env


def default_raw() -> dict:
    return yaml.safe_load((ROOT / "params.yaml").read_text())


def test_committed_params_validate_and_spell_out_every_section():
    from pipelines.core.config import Params

    load_params(ROOT / "params.yaml")  # raises on any invalid key or value
    assert list(default_raw()) == list(Params.model_fields)  # every section, in the schema's order


# The search tests (tests/test_search*.py, test_dashboard.py ...) build their params on these two
# schema values (no latency floor, an empty space each test fills); they follow params.yaml once
# those tests set them explicitly. (search.pruner agrees since its default became `none`.)
NOT_YET_PARAMS_YAML = {"search.min_speedup", "search.space"}


def _leaves(tree: dict, prefix: str = "") -> dict:
    """Dotted key -> value; ``search.space``, ``*.kwargs`` and ``benchmark.inductor`` are values."""
    out = {}
    for key, value in tree.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict) and dotted != "search.space" and key not in ("kwargs", "inductor"):
            out.update(_leaves(value, dotted + "."))
        else:
            out[dotted] = value
    return out


def test_the_schema_defaults_are_params_yaml():
    """One set of defaults: what the pipeline runs (params.yaml) is what a key left out means."""
    from pipelines.core.config import Params

    schema = _leaves(Params().model_dump(mode="json"))
    committed = _leaves(load_params(ROOT / "params.yaml").model_dump(mode="json"))
    assert set(schema) == set(committed)
    differ = {k: (schema[k], committed[k]) for k in schema if schema[k] != committed[k]}
    assert set(differ) == NOT_YET_PARAMS_YAML, differ


@pytest.mark.parametrize("section", ["teacher", "student", "train", "distill", "benchmark"])
def test_a_section_left_out_or_written_short_means_params_yaml(section):
    """`teacher: {arch: cnn}` is the committed teacher (depth 2, dropout 0.1), not the student's defaults."""
    committed = getattr(load_params(ROOT / "params.yaml"), section)
    first_key = next(iter(type(committed).model_fields))
    short = validate({section: {first_key: getattr(committed, first_key)}, "tracking": {"enabled": False}})
    assert getattr(short, section) == committed
    assert getattr(validate({}), section) == committed


@pytest.mark.parametrize(
    ("mutate", "key", "hint"),
    [
        (lambda r: r["distill"].update(temperature=-1.0), "distill.temperature", "greater than 0"),
        (lambda r: r["distill"].update(alpha=1.5), "distill.alpha", "less than or equal to 1"),
        (lambda r: r["prune"].update(amount=1.0), "prune.amount", "less than 1"),
        (lambda r: r["prune"].update(method="random"), "prune.method", "channel"),
        (lambda r: r["quantize"].update(method="int4"), "quantize.method", "static"),
        (lambda r: r["quantize"].update(engine="tensorrt"), "quantize.engine", "pt2e"),
        (lambda r: r["benchmark"].update(cpp_wrapper=True), "benchmark.cpp_wrapper", "auto"),
        (lambda r: r["benchmark"].update(compiled_call="guardless"), "benchmark.compiled_call", "direct"),
        (lambda r: r["benchmark"].update(inductor={"no_such_knob": True}), "benchmark.inductor",
         "not a torch._inductor.config setting"),
        (lambda r: r["benchmark"].update(inductor={"freezing": False}), "benchmark.inductor", "own setting"),
        (lambda r: r["benchmark"].update(inductor={"cpp.threads": 10**12}), "benchmark.inductor",
         "threads up to"),
        (lambda r: r["benchmark"].update(inductor={"autotune_local_cache": True}), "benchmark.inductor",
         "own setting"),
        (lambda r: r["benchmark"].update(inductor={"cpp_wrapper": True}), "benchmark.inductor",
         "use benchmark.cpp_wrapper"),
        (lambda r: r["benchmark"].update(inductor={"layout_optimization": 0}), "benchmark.inductor", "takes a bool"),
        (lambda r: r["train"].update(epochs="ten"), "train.epochs", "integer"),
        (lambda r: r["data"].update(colour=True), "data.colour", "unknown key"),
        (lambda r: r.update(extra_section={}), "extra_section", "unknown key"),
        (lambda r: r["data"].update(name="imagenet"), "data.name", "digits"),
        (lambda r: r["search"].update(space={"prune.amount": {"type": "float", "low": 0.2, "high": 1.5}}),
         "search.space.prune.amount", "1.5"),
        (lambda r: r["search"].update(space={"prune.nope": {"type": "float", "low": 0.1, "high": 0.2}}),
         "search.space.prune.nope", "not a params key"),
        (lambda r: r["search"].update(space={"distill.temperature": {"type": "float", "low": 0, "high": 8,
                                                                     "log": True}}),
         "search.space.distill.temperature", "log scale"),
        (lambda r: r["search"].update(pruner="asha"), "search.pruner", "hyperband"),
        (lambda r: r["search"].update(objectives=["accuracy", "latency_ms_p50"]), "search.objectives",
         "use 'val_accuracy'"),
        (lambda r: r["search"].update(distill_epochs=3), "search.distill_epochs", "pipeline's own distill.epochs"),
        (lambda r: r["benchmark"].update(max_slowdown=1.0), "benchmark.max_slowdown", "0 (off)"),
        (lambda r: r["benchmark"].update(block_ms=20.0, min_block_ms=30.0), "benchmark.min_block_ms",
         "exceeds benchmark.block_ms"),
        (lambda r: r["benchmark"].update(runtimes=["eager"], deploy_runtime="compile-default"),
         "benchmark.deploy_runtime", "not in benchmark.runtimes"),
        (lambda r: r["search"].update(space={"benchmark.deploy_runtime": {"type": "categorical",
                                                                          "choices": ["fastest", "onnx"]}}),
         "search.space.benchmark.deploy_runtime", "'onnx'"),
    ],
)
def test_bad_values_name_the_dotted_key(mutate, key, hint):
    raw = default_raw()
    mutate(raw)
    with pytest.raises(ParamsError) as err:
        validate(raw)
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith(key), message
    assert hint in message


def test_overrides_are_validated():
    params = validate(default_raw())
    assert params.with_overrides({"prune.amount": 0.3}).prune.amount == 0.3
    with pytest.raises(ParamsError, match="prune.amount"):
        params.with_overrides({"prune.amount": 2})


def test_yaml_syntax_error_is_one_line(tmp_path):
    bad = tmp_path / "params.yaml"
    bad.write_text("data: [unclosed\n")
    with pytest.raises(ParamsError, match="not valid YAML"):
        load_params(bad)


def test_stage_exits_nonzero_with_one_line_and_writes_nothing(tmp_path):
    raw = default_raw()
    raw["distill"]["alpha"] = 2
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    (tmp_path / "models").mkdir()
    sentinel = tmp_path / "models" / "student.pt"
    sentinel.write_bytes(b"previous output")
    line = one_error_line(run_stage("distill", tmp_path, venv_env(), timeout=120))
    assert line.startswith("distill: error: distill.alpha")
    assert sentinel.read_bytes() == b"previous output"
    assert not (tmp_path / "mlflow.db").exists()
    assert sorted(p.name for p in Path(tmp_path).iterdir()) == ["models", "params.yaml"]


def test_inductor_settings_nested_or_dotted_are_one_setting():
    nested = fast_params(benchmark={"inductor": {"cpp": {"weight_prepack": False}, "layout_optimization": False}})
    dotted = fast_params(benchmark={"inductor": {"cpp.weight_prepack": False, "layout_optimization": False}})
    assert nested.benchmark.inductor == dotted.benchmark.inductor == {"cpp.weight_prepack": False,
                                                                       "layout_optimization": False}
