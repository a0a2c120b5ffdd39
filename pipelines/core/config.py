"""Typed, strict schema for ``params.yaml``.

Every stage validates the whole file before any compute; a user error becomes one line that
names the dotted key, the bad value and what is allowed (:class:`ParamsError`).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

from pydantic import BaseModel, Field, ValidationError, ValidationInfo, field_validator, model_validator

from pipelines.core.data_config import DataConfig, check_data
from pipelines.core.errors import ParamsError
from pipelines.core.inductor import FIXED_INDUCTOR_SETTINGS, CompiledCall, CppWrapper
from pipelines.core.params_base import (BATCH_WHY, CORES, INDUCTOR_THREAD_SETTINGS, MAX_SEED, MAX_THREADS, SEED_WHY,
                                        Epochs, Fraction, NonNegEpochs, PositiveFloat, PositiveInt, Section, Width,
                                        number_kind)
from pipelines.core.params_errors import dotted, format_error, non_string_key, one_line
from pipelines.core.yaml_files import parse_yaml, read_yaml

__all__ = ["PARAMS_FILE", "Params", "ParamsError", "load_params", "parse_yaml", "read_yaml", "validate"]

PARAMS_FILE = "params.yaml"


BUILTIN_ARCHS = ("cnn", "mlp", "resnet18", "mobilenet_v2")
_ARCH_FORMS = f"{' | '.join(BUILTIN_ARCHS)} | torchvision:<builder> | <module>:<callable>"
_IDENTIFIER = r"[A-Za-z_][A-Za-z0-9_]*"
_ARCH_PATTERN = re.compile(rf"{_IDENTIFIER}(\.{_IDENTIFIER})*:{_IDENTIFIER}")


Depth = Annotated[int, Field(ge=1, le=4)]
Dropout = Annotated[float, Field(ge=0.0, lt=1.0)]


class ModelConfig(Section):
    # Defaults: the student's of params.yaml (TeacherConfig: the teacher's).
    # cnn (channels/depth), mlp (hidden), torchvision's quantizable resnet18 / mobilenet_v2,
    # torchvision:<builder> (any classification builder), <module>:<callable> (your factory)
    arch: str = "cnn"
    channels: Annotated[list[Width], Field(min_length=1, max_length=6, description=(
        "a 3x3 convolution between two layers 2048 wide already holds 38M weights (150 MB)"))] = [128, 256, 512]
    depth: Depth = 1
    dropout: Dropout = 0.0
    hidden: Annotated[list[PositiveInt], Field(min_length=1, max_length=8)] = [256, 128]  # mlp only
    # extra keyword arguments for a torchvision builder or your factory, e.g. {image_size: 32}
    kwargs: dict[str, bool | int | float | str | list[int] | None] = {}
    # a trained state_dict (or a checkpoint holding one) to start from instead of random weights
    weights: str | None = None

    @field_validator("arch")
    @classmethod
    def _arch_form(cls, value: str) -> str:
        if value in BUILTIN_ARCHS or _ARCH_PATTERN.fullmatch(value):
            return value
        raise ValueError(f"unknown value; allowed: {_ARCH_FORMS}")

    @field_validator("weights")
    @classmethod
    def _weights_path(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise ValueError("an empty path; write null for random initial weights")
        return value


class TeacherConfig(ModelConfig):
    """``teacher``: a model section whose omitted keys take the teacher's defaults (deeper, with
    dropout), so a short ``teacher:`` section means what the same keys in params.yaml mean."""

    depth: Depth = 2
    dropout: Dropout = 0.1


class TrainConfig(Section):
    epochs: NonNegEpochs = 8  # 0: evaluate teacher.weights as given, no training
    lr: PositiveFloat = 3e-3
    weight_decay: Annotated[float, Field(ge=0.0)] = 1e-4
    optimizer: Literal["adamw", "sgd"] = "adamw"
    device: Literal["auto", "cpu", "cuda"] = "auto"


class DistillConfig(Section):
    temperature: PositiveFloat = 4.0
    alpha: Fraction = 0.3
    epochs: Epochs = 10
    lr: PositiveFloat = 3e-3
    cache_teacher_logits: bool = True
    compare_without_kd: bool = True


class PruneConfig(Section):
    method: Literal["l1_unstructured", "ln_structured", "channel"] = "channel"
    amount: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.5
    steps: Annotated[int, Field(ge=1, le=20)] = 2
    finetune_epochs: NonNegEpochs = 3
    lr: PositiveFloat = 1e-3


class QuantizeConfig(Section):
    method: Literal["none", "dynamic", "static", "qat"] = "static"
    # auto: on the built-in archs (cnn, mlp, resnet18, mobilenet_v2) the quantize stage quantizes
    # static/QAT with both engines, times them side by side on this machine and keeps the faster
    # (pt2e only when at least 5% faster; metrics/quantize.json engine_choice, pipelines/engines.py);
    # dynamic, and every search trial, take eager there; any other model takes pt2e
    engine: Literal["auto", "eager", "pt2e"] = "auto"
    observer: Literal["minmax", "histogram"] = "histogram"
    per_channel: bool = True
    calibration_batches: Annotated[int, Field(gt=0, le=10_000, description=BATCH_WHY)] = 8
    # pt2e static: convolutions on feature maps so small that their matrix form is no bigger than
    # their kernel (a padded 3x3 on a 1x1 map) run as linear layers, which oneDNN's int8 GEMM runs
    # at full AMX tile use (see pipelines/compression/quantize/small_spatial.py)
    convs_as_linear: bool = True
    qat_epochs: Epochs = 2
    qat_lr: PositiveFloat = 1e-4
    # accuracy budget, sensitivity and range fixes: docs/quantization-accuracy.md
    max_accuracy_drop: Annotated[float, Field(ge=0.0, le=100.0)] | None = None  # pp on val; null: off
    fallback: Literal["fp32", "bf16"] = "fp32"
    max_fallback_layers: Annotated[int, Field(ge=0, le=1000)] = 3
    sensitivity: bool = True
    # cle: cross-layer equalization (weights only); smoothquant: activation-range migration on the
    # calibration batches (smoothquant_alpha: the share of the range moved to the weights' side); auto:
    # both tried, the one with the lower val drop kept, and neither unless it lowers the drop
    equalize: Literal["none", "cle", "smoothquant", "auto"] = "none"
    smoothquant_alpha: Annotated[float, Field(gt=0.0, le=1.0)] = 0.5
    bias_correction: Literal["none", "on", "auto"] = "none"  # after equalize; auto: kept when it lowers the val drop
    # torch.ao eager static int8 (and ts-int8): activation codes 0..255 (8) or 0..127 (7, torch.ao's
    # x86 default: on CPUs without int8 dot products fbgemm sums u8 x s8 pairs in int16, which 8-bit
    # codes can saturate); auto: 8 on CPUs with VNNI/AMX int8, else 7; 8 elsewhere is refused
    eager_activation_bits: Literal["auto", 7, 8] = "auto"


# PyTorch (eager, torch.compile, CPU bf16 autocast) and deploy targets (ONNX Runtime, OpenVINO,
# AOTInductor): see pipelines/measurement/runtimes.py, pipelines/measurement/deploy and the README.
Runtime = Literal["eager", "compile-default", "compile-reduce-overhead", "compile-max-autotune",
                  "eager-cpu-bf16", "compile-default-cpu-bf16", "compile-reduce-overhead-cpu-bf16",
                  "compile-max-autotune-cpu-bf16",
                  "ort-fp32", "ort-int8", "ov-fp32", "ov-bf16", "ov-int8", "aoti", "ts-int8"]
FASTEST = "fastest"  # benchmark.deploy_runtime: judge a model on whichever measured runtime is fastest
DeployRuntime = Literal[(FASTEST, *get_args(Runtime))]  # type: ignore[valid-type]


class BenchmarkConfig(Section):
    batch_size: Annotated[int, Field(gt=0, le=4096, description=BATCH_WHY)] = 64
    num_threads: Annotated[int, Field(gt=0, le=MAX_THREADS, description=(
        f"more threads than the {CORES} cores this process may use only oversubscribe them and distort every latency"))] = 2
    warmup: Annotated[int, Field(ge=0, le=10_000, description="calls of each variant, one after another")] = 10
    iters: Annotated[int, Field(gt=0, le=100_000, description="timed calls of each variant, one after another")] = 120
    runtimes: Annotated[list[Runtime], Field(min_length=1)] = ["eager", "compile-default", "ort-int8", "ov-int8",
                                                                "ts-int8"]
    # The runtime the final model is judged on (headline latency, speedup, the search's latency
    # objective): `fastest` of the measured ones, or one entry of `runtimes`.
    deploy_runtime: DeployRuntime = FASTEST
    include_batch_one: bool = True
    # A timed loop is disturbed when other processes took more than max_other_cpu of our CPUs' time
    # during it, or some variant's p90/p50 exceeds max_spread; it is then measured again (up to
    # retries times) and, if still disturbed, its rows are flagged noisy (see pipelines/measurement/timing.py).
    max_other_cpu: Annotated[float, Field(gt=0.0, le=1.0)] = 0.2
    max_spread: Annotated[float, Field(gt=1.0)] = 3.0
    retries: Annotated[int, Field(ge=0, le=10)] = 2
    # Inductor's C++ wrapper (the compiled graph's glue code in C++ instead of Python). auto: on
    # for PT2E int8 graphs on CPU, where the Python wrapper's per-op dispatch is what separated
    # them from eager int8 on small models; it costs ~6 s more compile time per graph.
    cpp_wrapper: CppWrapper = "auto"
    # How a compiled CPU variant is called at the shape it was compiled for. direct: Inductor's
    # graph straight away (one graph, one input; every other input still goes through Dynamo);
    # dynamo: every call through torch.compile's guards (~0.1 ms a call here). See
    # pipelines/measurement/direct_call.py.
    compiled_call: CompiledCall = "direct"
    # Extra torch._inductor.config settings for every compiled variant, e.g.
    # {layout_optimization: false, cpp.weight_prepack: false} keeps wide fp32 CNNs on tiny feature
    # maps in NCHW, where oneDNN's channels-last kernels are slower (see README).
    # Nested and dotted forms are the same setting: {cpp: {weight_prepack: false}} reads as
    # {cpp.weight_prepack: false} (what `dvc exp run -S '+benchmark.inductor.cpp.weight_prepack=false'` writes).
    inductor: dict[str, bool | int | float | str] = {}
    # Timing schedule (pipelines/measurement/timing.py): the iters timed calls of each variant run in
    # `blocks` rotating rounds, one block of each variant per round (a block: block_warmup untimed
    # calls, then iters/blocks timed ones, as a server runs one runtime call after call). A fixed
    # reference workload timed between blocks measures the machine's speed; a round with a block
    # timed across a speed change of more than max_speed_change is re-measured, then flagged noisy.
    blocks: Annotated[int, Field(gt=0, le=1000)] = 6
    block_warmup: Annotated[int, Field(ge=0, le=10_000)] = 5
    max_speed_change: Annotated[float, Field(gt=1.0)] = 2.0
    block_warm_ms: Annotated[float, Field(ge=0.0, le=60_000)] = 20.0  # each block's warm-up lasts at least this
    settle_ms: Annotated[float, Field(ge=0.0, le=60_000)] = 200.0  # wait (at most) for the last pool to sleep
    block_ms: Annotated[float, Field(ge=0.0, le=60_000)] = 150.0  # a slow call times only what fits (>= 6 calls); 0: iters for all
    # a fast call times at least this long per block (more calls than iters/blocks): a 0.05 ms call
    # times 20 calls in 1 ms, one moment of a machine whose speed swings from one second to the next
    min_block_ms: Annotated[float, Field(ge=0.0, le=60_000)] = 30.0

    # a measurement whose reference workload ran more than this much slower than the process's usual
    # speed (a slow phase covering all of it) is measured again (retries); its rows say how much
    # slower (phase_slowdown). 0: off
    max_slowdown: Annotated[float, Field(ge=0.0, le=100.0)] = 1.3

    @field_validator("max_slowdown")
    @classmethod
    def _off_or_above_one(cls, value: float) -> float:
        if 0 < value <= 1:
            raise ValueError(f"{value:g}: 0 (off) or a factor above 1 (1.3: 30% slower than usual)")
        return value

    @field_validator("min_block_ms")
    @classmethod
    def _within_block_ms(cls, value: float, info: ValidationInfo) -> float:
        most = info.data.get("block_ms")
        if most and value > most:
            raise ValueError(f"{value:g} exceeds benchmark.block_ms ({most:g}), the most a block of a slow call lasts")
        return value

    @field_validator("deploy_runtime")
    @classmethod
    def _deploy_runtime_is_measured(cls, value: str, info: ValidationInfo) -> str:
        runtimes = info.data.get("runtimes")
        if value != FASTEST and runtimes is not None and value not in runtimes:
            raise ValueError(f"{value!r} is not in benchmark.runtimes {list(runtimes)}; allowed: "
                             f"{', '.join([FASTEST, *runtimes])}")
        return value

    @field_validator("inductor", mode="before")
    @classmethod
    def _flatten_inductor(cls, value: Any) -> Any:
        def flat(tree: dict, prefix: str = "") -> dict:
            out: dict = {}
            for key, setting in tree.items():
                name = f"{prefix}{key}"
                out.update(flat(setting, f"{name}.") if isinstance(setting, dict) else {name: setting})
            return out

        return flat(value) if isinstance(value, dict) else value

    @field_validator("inductor")
    @classmethod
    def _inductor_settings(cls, value: dict[str, Any]) -> dict[str, Any]:
        if not value:
            return value
        import torch._inductor.config as inductor_config

        known = inductor_config.get_config_copy()
        for key, setting in value.items():
            if key == "cpp_wrapper":
                raise ValueError("'cpp_wrapper' is the benchmark's own setting (use benchmark.cpp_wrapper)")
            if key in FIXED_INDUCTOR_SETTINGS:
                raise ValueError(f"{key!r} is the benchmark's own setting (every compiled variant runs with "
                                 f"{key}={FIXED_INDUCTOR_SETTINGS[key]})")
            if key not in known:
                raise ValueError(f"{key!r} is not a torch._inductor.config setting")
            if isinstance(known[key], bool) != isinstance(setting, bool):
                raise ValueError(f"{key!r} takes a {type(known[key]).__name__}, got {setting!r}")
            if key in INDUCTOR_THREAD_SETTINGS and (not isinstance(setting, int) or setting > MAX_THREADS):
                raise ValueError(f"{key!r} takes a whole number of threads up to {MAX_THREADS} (got {setting!r}); "
                                 f"more than the {CORES} cores this process may use only oversubscribe them")
        return value



class SearchDimension(Section):
    type: Literal["float", "int", "categorical"]
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: list[Any] | None = None

    @model_validator(mode="after")
    def _check(self) -> "SearchDimension":
        if self.type == "categorical":
            if not self.choices:
                raise ValueError("categorical needs a non-empty 'choices' list")
        else:
            if self.low is None or self.high is None:
                raise ValueError(f"{self.type} needs 'low' and 'high'")
            if self.low > self.high:
                raise ValueError(f"low ({self.low}) must not exceed high ({self.high})")
            if self.log and self.low <= 0:
                raise ValueError("log scale needs low > 0")
        return self


class SearchConfig(Section):
    study_name: str = "compression"
    storage: str | None = None
    sampler: Literal["tpe", "random", "nsga2"] = "tpe"
    n_trials: Annotated[int, Field(gt=0, le=100_000, description="each trial trains a model")] = 3
    timeout_s: PositiveFloat | None = None
    max_accuracy_drop: Annotated[float, Field(ge=0.0, le=100.0)] = 1.0
    max_latency_ms: PositiveFloat | None = None
    min_speedup: PositiveFloat | None = None
    # Multi-fidelity: each trial reports validation accuracy after every distillation and
    # fine-tuning epoch; the pruner stops trials that are hopeless by then (none: every trial
    # trains its full budget, the pipeline's own epochs).
    pruner: Literal["none", "median", "successive_halving", "hyperband"] = "none"
    # val_accuracy: the validation split's; the test split is evaluated only for the report
    objectives: list[Literal["val_accuracy", "latency_ms_p50", "size_mb"]] = ["val_accuracy", "latency_ms_p50"]
    space: dict[str, SearchDimension] = {}

    @field_validator("objectives", mode="before")
    @classmethod
    def _not_the_test_split(cls, value: Any) -> Any:
        if isinstance(value, list) and "accuracy" in value:
            raise ValueError("'accuracy' is the test split's, which is only reported, never optimized; "
                             "use 'val_accuracy'")
        return value


class TrackingConfig(Section):
    enabled: bool = True
    experiment: str = "compression-lab"
    log_models: bool = True
    # Model Registry name of the final (quantized) model: one version per pipeline run, alias
    # `champion` on the best non-dominated one. None: not registered.
    registered_model: str | None = Field(default="compression-lab", min_length=1)


class Params(Section):
    seed: Annotated[int, Field(ge=0, le=MAX_SEED, description=SEED_WHY)] = 0
    data: DataConfig = DataConfig()
    teacher: TeacherConfig = TeacherConfig()
    student: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig()
    distill: DistillConfig = DistillConfig()
    prune: PruneConfig = PruneConfig()
    quantize: QuantizeConfig = QuantizeConfig()
    benchmark: BenchmarkConfig = BenchmarkConfig()
    search: SearchConfig = SearchConfig()
    tracking: TrackingConfig = TrackingConfig()

    @model_validator(mode="after")
    def _check_search_keys(self) -> "Params":
        check_data(self.data)
        if self.train.epochs == 0 and self.teacher.weights is None:
            raise ValueError("train.epochs: 0 evaluates the teacher without training, so it needs teacher.weights "
                             "(got teacher.weights null)")
        for key, dim in self.search.space.items():
            _check_search_key(self, key, dim)
        return self

    def section(self, name: str) -> dict[str, Any]:
        return getattr(self, name).model_dump()

    def with_overrides(self, overrides: dict[str, Any]) -> "Params":
        """Return a validated copy with dotted-key overrides applied (``{"prune.amount": 0.3}``)."""
        return validate(apply_overrides(self.model_dump(), overrides))


def _check_search_key(params: Params, key: str, dim: SearchDimension) -> None:
    where = dotted(("search", "space", key))
    section, _, field = key.partition(".")
    sub = getattr(params, section, None) if section in Params.model_fields else None
    if not isinstance(sub, BaseModel) or field not in type(sub).model_fields:
        raise ValueError(f"{where}: {key!r} is not a params key (use section.field, e.g. prune.amount)")
    kind = number_kind(type(sub).model_fields[field].annotation)
    fits = {"int": ("int", "categorical"), "float": ("float", "int", "categorical")}.get(kind, ("categorical",))
    if dim.type not in fits:
        takes = {"int": "a whole number", "float": "a number"}.get(kind, "one of a set of values")
        raise ValueError(f"{where}: type {dim.type} does not fit {key}, which takes {takes}; "
                         f"use type: {' or '.join(fits)}")
    if dim.type == "int":
        for name in ("low", "high", "step"):
            value = getattr(dim, name)
            if value is not None and not float(value).is_integer():
                raise ValueError(f"{where}: type int needs a whole {name} (got {value!r})")
    values = dim.choices if dim.type == "categorical" else [dim.low, dim.high]
    base = apply_overrides(params.model_dump(), {"search.space": {}})  # no recursion into the space
    for value in values:
        try:
            validate(apply_overrides(base, {key: value}))
        except ParamsError as exc:
            raise ValueError(f"{where}: value {value!r} is invalid for {key} ({exc})") from None


def apply_overrides(raw: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    out = {k: (dict(v) if isinstance(v, dict) else v) for k, v in raw.items()}
    for key, value in overrides.items():
        section, _, field = key.partition(".")
        if not field:
            out[section] = value
        else:
            out.setdefault(section, {})[field] = value
    return out


def validate(raw: Any) -> Params:
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ParamsError(f"<root>: params must be a mapping of sections (got {type(raw).__name__})")
    bad_key = non_string_key(raw)
    if bad_key:
        raise ParamsError(one_line(bad_key))
    try:
        return Params.model_validate(raw)
    except ValidationError as err:
        raise ParamsError(one_line(format_error(err, Params))) from None


def load_params(path: str | Path = PARAMS_FILE) -> Params:
    raw = read_yaml(path)
    if raw is None or raw == {}:  # an empty file would otherwise train with every default
        raise ParamsError(f"{path}: no sections; an empty file would run everything on defaults: write the "
                          "sections to use (the committed params.yaml has them all)")
    return validate(raw)
