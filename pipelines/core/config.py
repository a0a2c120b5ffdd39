"""Typed, strict schema for ``params.yaml``.

Every stage validates the whole file before any compute; a user error becomes one line that
names the dotted key, the bad value and what is allowed (:class:`ParamsError`).
"""

from __future__ import annotations

import re
from pathlib import Path
from types import UnionType
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from pipelines.core.errors import ParamsError
from pipelines.core.inductor import FIXED_INDUCTOR_SETTINGS, CppWrapper

__all__ = ["PARAMS_FILE", "Params", "ParamsError", "load_params", "read_yaml", "validate"]

PARAMS_FILE = "params.yaml"


class Section(BaseModel):
    # allow_inf_nan=False: `lr: .inf` is out of range, not a learning rate
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    @field_validator("*", mode="before")
    @classmethod
    def _no_bool_for_numbers(cls, value: Any, info: ValidationInfo) -> Any:
        """YAML turns `yes`/`on`/`true` into booleans, which pydantic would quietly read as 1 for
        an int or float field; a boolean is only accepted where the field is a bool."""
        if isinstance(value, bool) and _numeric(cls.model_fields[info.field_name].annotation):
            raise ValueError("expected a number, not a boolean")
        return value


def _numeric(annotation: Any) -> bool:
    """int/float, possibly Annotated or Optional (not bool, not inside a list)."""
    if annotation in (int, float):
        return True
    if get_origin(annotation) is Literal:  # Literal[1, 3]: numbers, so `true` is not 1 either
        return all(type(arg) in (int, float) for arg in get_args(annotation))
    if get_origin(annotation) in (Annotated, Union, UnionType):
        return any(_numeric(arg) for arg in get_args(annotation))
    return False


PositiveInt = Annotated[int, Field(gt=0)]
NonNegInt = Annotated[int, Field(ge=0)]
PositiveFloat = Annotated[float, Field(gt=0)]
Fraction = Annotated[float, Field(ge=0.0, le=1.0)]


class DataConfig(Section):
    name: Literal["digits", "mnist", "fashion_mnist", "cifar10", "imagefolder"] = "digits"
    root: str = "data"
    download: bool = False
    val_fraction: Annotated[float, Field(gt=0.0, lt=0.5)] = 0.15
    test_fraction: Annotated[float, Field(gt=0.0, lt=0.5)] = 0.2
    batch_size: PositiveInt = 64
    max_train_samples: PositiveInt | None = None
    # imagefolder only (see pipelines/imagefolder.py): images resized to image_size x image_size
    # (null: the size every train image already has), loaded as RGB (3, torchvision's ImageFolder
    # default) or grayscale (1), normalised with mean/std per channel (null: computed on the train
    # split and recorded in metrics/train_baseline.json).
    image_size: PositiveInt | None = None
    channels: Literal[1, 3] = 3
    mean: Annotated[list[float], Field(min_length=1, max_length=3)] | None = None
    std: Annotated[list[PositiveFloat], Field(min_length=1, max_length=3)] | None = None


BUILTIN_ARCHS = ("cnn", "mlp", "resnet18", "mobilenet_v2")
_ARCH_FORMS = f"{' | '.join(BUILTIN_ARCHS)} | torchvision:<builder> | <module>:<callable>"
_IDENTIFIER = r"[A-Za-z_][A-Za-z0-9_]*"
_ARCH_PATTERN = re.compile(rf"{_IDENTIFIER}(\.{_IDENTIFIER})*:{_IDENTIFIER}")


class ModelConfig(Section):
    # cnn (channels/depth), mlp (hidden), torchvision's quantizable resnet18 / mobilenet_v2,
    # torchvision:<builder> (any classification builder), <module>:<callable> (your factory)
    arch: str = "cnn"
    channels: Annotated[list[PositiveInt], Field(min_length=1, max_length=6)] = [32, 64, 128]
    depth: Annotated[int, Field(ge=1, le=4)] = 1
    dropout: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.0
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


class TrainConfig(Section):
    epochs: NonNegInt = 12  # 0: evaluate teacher.weights as given, no training
    lr: PositiveFloat = 3e-3
    weight_decay: Annotated[float, Field(ge=0.0)] = 1e-4
    optimizer: Literal["adamw", "sgd"] = "adamw"
    device: Literal["auto", "cpu", "cuda"] = "auto"


class DistillConfig(Section):
    temperature: PositiveFloat = 4.0
    alpha: Fraction = 0.3
    epochs: PositiveInt = 20
    lr: PositiveFloat = 3e-3
    cache_teacher_logits: bool = True
    compare_without_kd: bool = True


class PruneConfig(Section):
    method: Literal["l1_unstructured", "ln_structured", "channel"] = "channel"
    amount: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.5
    steps: Annotated[int, Field(ge=1, le=20)] = 2
    finetune_epochs: NonNegInt = 3
    lr: PositiveFloat = 1e-3


class QuantizeConfig(Section):
    method: Literal["none", "dynamic", "static", "qat"] = "static"
    # auto: eager for the built-in quantizable archs (cnn, mlp, resnet18, mobilenet_v2), pt2e otherwise
    engine: Literal["auto", "eager", "pt2e"] = "auto"
    observer: Literal["minmax", "histogram"] = "histogram"
    per_channel: bool = True
    calibration_batches: PositiveInt = 8
    qat_epochs: PositiveInt = 2
    qat_lr: PositiveFloat = 1e-4


Runtime = Literal["eager", "compile-default", "compile-reduce-overhead", "compile-max-autotune"]


class BenchmarkConfig(Section):
    batch_size: PositiveInt = 64
    num_threads: PositiveInt = 2
    warmup: NonNegInt = 10
    iters: PositiveInt = 60
    runtimes: Annotated[list[Runtime], Field(min_length=1)] = ["eager", "compile-default"]
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
    # Extra torch._inductor.config settings for every compiled variant, e.g.
    # {layout_optimization: false, cpp.weight_prepack: false} keeps wide fp32 CNNs on tiny feature
    # maps in NCHW, where oneDNN's channels-last kernels are slower (see README).
    # Nested and dotted forms are the same setting: {cpp: {weight_prepack: false}} reads as
    # {cpp.weight_prepack: false} (what `dvc exp run -S '+benchmark.inductor.cpp.weight_prepack=false'` writes).
    inductor: dict[str, bool | int | float | str] = {}

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
    n_trials: PositiveInt = 12
    timeout_s: PositiveFloat | None = None
    max_accuracy_drop: Annotated[float, Field(ge=0.0, le=100.0)] = 1.0
    max_latency_ms: PositiveFloat | None = None
    min_speedup: PositiveFloat | None = None
    distill_epochs: PositiveInt = 6
    finetune_epochs: NonNegInt = 1
    objectives: list[Literal["accuracy", "latency_ms_p50", "size_mb"]] = ["accuracy", "latency_ms_p50"]
    space: dict[str, SearchDimension] = {}


class TrackingConfig(Section):
    enabled: bool = True
    experiment: str = "compression-lab"
    log_models: bool = True


class Params(Section):
    seed: NonNegInt = 0
    data: DataConfig = DataConfig()
    teacher: ModelConfig = ModelConfig(channels=[64, 128, 256], depth=2)
    student: ModelConfig = ModelConfig(channels=[32, 64, 128], depth=1)
    train: TrainConfig = TrainConfig()
    distill: DistillConfig = DistillConfig()
    prune: PruneConfig = PruneConfig()
    quantize: QuantizeConfig = QuantizeConfig()
    benchmark: BenchmarkConfig = BenchmarkConfig()
    search: SearchConfig = SearchConfig()
    tracking: TrackingConfig = TrackingConfig()

    @model_validator(mode="after")
    def _check_search_keys(self) -> "Params":
        _check_data(self.data)
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


def _check_data(data: DataConfig) -> None:
    """The imagefolder-only keys, and one mean/std value per channel."""
    if data.name != "imagefolder":
        for key in ("image_size", "mean", "std"):
            if getattr(data, key) is not None:
                raise ValueError(f"data.{key}: only for data.name imagefolder (got data.name {data.name!r})")
    for key in ("mean", "std"):
        value = getattr(data, key)
        if value is not None and len(value) != data.channels:
            raise ValueError(f"data.{key}: needs one value per channel, data.channels is {data.channels} "
                             f"(got {value!r})")


def _check_search_key(params: Params, key: str, dim: SearchDimension) -> None:
    where = dotted(("search", "space", key))
    section, _, field = key.partition(".")
    sub = getattr(params, section, None) if section in Params.model_fields else None
    if not isinstance(sub, BaseModel) or field not in type(sub).model_fields:
        raise ValueError(f"{where}: {key!r} is not a params key (use section.field, e.g. prune.amount)")
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


SHOWN_MAX = 120  # characters of a bad value quoted in the message


def _plain(part: Any) -> bool:
    return isinstance(part, str) and part != "" and part.isprintable() and not any(c.isspace() for c in part)


def dotted(loc: tuple[Any, ...] | list[Any]) -> str:
    """``("search", "space", "prune.amount")`` -> ``search.space.prune.amount``; a key that is not a
    plain printable word (newline, space, empty) is quoted with repr() so the message stays one
    line and says exactly which key."""
    return ".".join(str(p) if _plain(p) or isinstance(p, int) else repr(p) for p in loc)


def _shown(value: Any) -> str:
    text = repr("{...}" if isinstance(value, dict) else value)
    return text if len(text) <= SHOWN_MAX else text[:SHOWN_MAX - 3] + "..."


def _format_error(err: ValidationError) -> str:
    first = err.errors()[0]
    loc = dotted(first["loc"]) or "<root>"
    value = first.get("input")
    msg = first["msg"]
    if first["type"] == "extra_forbidden":
        msg = "unknown key"
    elif value is None and len(first["loc"]) == 1 and first["loc"][0] in Params.model_fields \
            and first["type"] == "model_type":
        msg = f"section is empty; write its keys, or `{first['loc'][0]}: {{}}` (or no section) for the defaults"
    elif first["type"] == "literal_error":
        msg = f"unknown value; allowed: {first['ctx']['expected']}"
    elif msg.startswith("Value error, "):
        msg = msg[len("Value error, "):]
    if not first["loc"]:  # model-level check: the message already names its dotted key
        return msg
    more = f" (+{len(err.errors()) - 1} more)" if len(err.errors()) > 1 else ""
    return f"{loc}: {msg} (got {_shown(value)}){more}"


def _non_string_key(raw: dict[Any, Any], where: tuple[Any, ...] = ()) -> str | None:
    """YAML keys such as ``1:`` or ``yes:`` load as int/bool; name them as written."""
    for key, value in raw.items():
        if not isinstance(key, str):
            return f"{dotted(where + (repr(key),))}: keys must be strings (got {key!r} of type {type(key).__name__})"
        if isinstance(value, dict):
            found = _non_string_key(value, where + (key,))
            if found:
                return found
    return None


def _one_line(message: str) -> str:
    return message.replace("\r", "\\r").replace("\n", "\\n")


def validate(raw: Any) -> Params:
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ParamsError(f"<root>: params must be a mapping of sections (got {type(raw).__name__})")
    bad_key = _non_string_key(raw)
    if bad_key:
        raise ParamsError(_one_line(bad_key))
    try:
        return Params.model_validate(raw)
    except ValidationError as err:
        raise ParamsError(_one_line(_format_error(err))) from None


def read_yaml(path: str | Path, missing: str = "file not found") -> Any:
    """A YAML file's content, or a one-line :class:`ParamsError` naming the file (and line)."""
    path = Path(path)
    if not path.exists():
        raise ParamsError(f"{path}: {missing}")
    try:
        return yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise ParamsError(f"{path}:{where} is not valid YAML ({getattr(exc, 'problem', exc)})") from None


def load_params(path: str | Path = PARAMS_FILE) -> Params:
    return validate(read_yaml(path))
