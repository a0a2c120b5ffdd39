"""Bad input, property-based: hypothesis mutates the committed params.yaml one way at a time
(wrong type, out-of-range number, unknown key, unknown method, empty section, invalid search
space). Every mutation must be refused with a one-line ParamsError that starts with the dotted key
of what was mutated; a smaller sample goes through a real stage process (exit 2, one stderr line,
nothing written).

The strategies read the bounds and types from the pydantic schema, so a new field is fuzzed too.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from types import UnionType
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import annotated_types as at
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from pipelines.core.config import Params, dotted, validate
from pipelines.core.errors import ParamsError
from tests.conftest import ROOT, one_error_line, run_stage

BASE = yaml.safe_load((ROOT / "params.yaml").read_text())
SECTIONS = [name for name, f in Params.model_fields.items() if isinstance(f.default, BaseModel)]
SCALARS = [name for name in Params.model_fields if name not in SECTIONS]  # seed


@dataclass(frozen=True)
class Leaf:
    """One field of the schema, flattened: its base type, bounds, choices."""

    path: tuple[str, ...]
    kind: str  # bool | int | float | str | literal | list | dict
    optional: bool
    lower: tuple[float, bool] | None = None  # (bound, inclusive)
    upper: tuple[float, bool] | None = None
    choices: tuple[Any, ...] = ()
    min_len: int | None = None
    max_len: int | None = None
    item: "Leaf | None" = None


def _leaf(path: tuple[str, ...], annotation: Any, metadata: list[Any]) -> Leaf:
    optional = False
    metadata = list(metadata)
    while True:
        origin = get_origin(annotation)
        if origin is Annotated:
            annotation, *extra = get_args(annotation)
            for item in extra:
                metadata += list(getattr(item, "metadata", [item]))
        elif origin in (Union, UnionType):
            args = [a for a in get_args(annotation) if a is not type(None)]
            optional = optional or len(args) < len(get_args(annotation))
            annotation = args[0]
        else:
            break
    bounds: dict[str, Any] = {}
    for m in metadata:
        if isinstance(m, at.Gt):
            bounds["lower"] = (m.gt, False)
        elif isinstance(m, at.Ge):
            bounds["lower"] = (m.ge, True)
        elif isinstance(m, at.Lt):
            bounds["upper"] = (m.lt, False)
        elif isinstance(m, at.Le):
            bounds["upper"] = (m.le, True)
        elif isinstance(m, at.MinLen):
            bounds["min_len"] = m.min_length
        elif isinstance(m, at.MaxLen):
            bounds["max_len"] = m.max_length
    if get_origin(annotation) is Literal:
        return Leaf(path, "literal", optional, choices=get_args(annotation))
    if get_origin(annotation) is dict:  # benchmark.inductor: settings by name, checked by the schema
        return Leaf(path, "dict", optional)
    if get_origin(annotation) is list:
        return Leaf(path, "list", optional, item=_leaf(path + ("0",), get_args(annotation)[0], []), **bounds)
    if annotation is Any:  # data.augment's entries: a transform's name or a one-key mapping, fuzzed as names
        return Leaf(path, "str", optional)
    kind = {bool: "bool", int: "int", float: "float", str: "str"}.get(annotation)
    assert kind, f"fuzzer does not know {path}: {annotation}"
    return Leaf(path, kind, optional, **bounds)


def schema_leaves() -> list[Leaf]:
    leaves = [_leaf((name,), Params.model_fields[name].annotation, Params.model_fields[name].metadata)
              for name in SCALARS]
    for section in SECTIONS:
        model = Params.model_fields[section].annotation
        for name, info in model.model_fields.items():
            if (section, name) == ("search", "space"):
                continue  # fuzzed separately, it has its own grammar
            leaves.append(_leaf((section, name), info.annotation, info.metadata))
    return leaves


LEAVES = schema_leaves()
BOOLISH = {"0", "1", "t", "f", "y", "n", "yes", "no", "on", "off", "true", "false"}
text = st.text(max_size=30)
words = st.text(alphabet=st.characters(categories=["L"]), min_size=1, max_size=12).filter(
    lambda s: s.lower() not in BOOLISH | {"inf", "infinity", "nan"})
containers = st.one_of(st.lists(st.integers(), max_size=3), st.dictionaries(words, st.integers(), max_size=2))


def wrong_type(leaf: Leaf) -> st.SearchStrategy[Any]:
    """A value of a type the field never accepts (not even by pydantic's lax coercion)."""
    if leaf.kind in ("int", "float"):
        return st.one_of(words, st.booleans(), containers)
    if leaf.kind == "bool":
        return st.one_of(words, containers, st.integers(min_value=2), st.floats(min_value=2, allow_nan=False))
    if leaf.kind == "str":
        return st.one_of(st.integers(), st.floats(allow_nan=False), st.booleans(), containers)
    if leaf.kind == "literal":
        return st.one_of(st.integers(), st.booleans(), containers)
    if leaf.kind == "dict":
        return st.one_of(words, st.integers(), st.booleans(), st.lists(st.integers(), max_size=3))
    return st.one_of(words, st.integers(), st.dictionaries(words, st.integers(), max_size=2))  # list


def _beyond(bound: tuple[float, bool], below: bool, integer: bool) -> st.SearchStrategy[Any]:
    value, inclusive = bound
    if integer:
        edge = math.ceil(value) - 1 if below else math.floor(value) + 1
        if not inclusive:
            edge = math.ceil(value) if below and value == int(value) else edge
            edge = math.floor(value) if not below and value == int(value) else edge
        return st.integers(max_value=edge, min_value=edge - 10**6) if below else \
            st.integers(min_value=edge, max_value=edge + 10**6)
    if below:
        return st.floats(max_value=value, exclude_max=inclusive, min_value=value - 1e6)
    return st.floats(min_value=value, exclude_min=inclusive, max_value=value + 1e6)


def out_of_range(leaf: Leaf) -> st.SearchStrategy[Any] | None:
    """A value of the right type but outside the field's bounds (or a non-finite float)."""
    options = []
    integer = leaf.kind == "int"
    if leaf.lower is not None:
        options.append(_beyond(leaf.lower, True, integer))
    if leaf.upper is not None:
        options.append(_beyond(leaf.upper, False, integer))
    if leaf.kind == "float":
        options.append(st.sampled_from([math.inf, -math.inf, math.nan]))
    if leaf.kind == "list":
        if leaf.min_len:
            options.append(st.just([]))
        if leaf.max_len is not None:
            options.append(st.just([1] * (leaf.max_len + 1)))
        bad_item = out_of_range(leaf.item)
        bad_item = bad_item if bad_item is not None else unknown_method(leaf.item)
        if bad_item is not None:
            ok = [BASE[leaf.path[0]][leaf.path[1]][0]] if BASE.get(leaf.path[0], {}).get(leaf.path[1]) else []
            options.append(bad_item.map(lambda bad: [*ok, bad]))
    return st.one_of(options) if options else None


def unknown_method(leaf: Leaf) -> st.SearchStrategy[Any] | None:
    if leaf.kind != "literal":
        return None
    return st.one_of(text, words).filter(lambda s: s not in leaf.choices)


@dataclass
class Case:
    kind: str
    raw: dict[str, Any]
    key: tuple[Any, ...]  # the dotted key the message must start with


def _with(path: tuple[Any, ...], value: Any) -> dict[str, Any]:
    raw = copy.deepcopy(BASE)
    target = raw
    for part in path[:-1]:
        target = target[part]
    target[path[-1]] = value
    return raw


@st.composite
def leaf_mutation(draw) -> Case:
    kind = draw(st.sampled_from(["wrong_type", "out_of_range", "unknown_method"]))
    makers = {"wrong_type": wrong_type, "out_of_range": out_of_range, "unknown_method": unknown_method}
    candidates = [leaf for leaf in LEAVES if makers[kind](leaf) is not None]
    leaf = draw(st.sampled_from(candidates))
    value = draw(makers[kind](leaf))
    return Case(kind, _with(leaf.path, value), leaf.path)


@st.composite
def unknown_key(draw) -> Case:
    where = draw(st.sampled_from([None, *SECTIONS]))
    known = Params.model_fields if where is None else Params.model_fields[where].annotation.model_fields
    key = draw(text.filter(lambda k: k not in known))
    value = draw(st.one_of(st.integers(), text, st.booleans(), st.none(), containers))
    path = (key,) if where is None else (where, key)
    return Case("unknown_key", _with(path, value), path)


@st.composite
def empty_section(draw) -> Case:
    section = draw(st.sampled_from(SECTIONS))
    value = draw(st.one_of(st.none(), st.just([]), st.just(""), st.integers(), words))
    return Case("empty_section", _with((section,), value), (section,))


DIM_KEYS = ["distill.temperature", "distill.alpha", "prune.amount", "prune.steps", "prune.method",
            "quantize.method"]


@st.composite
def bad_search_space(draw) -> Case:
    how = draw(st.sampled_from(["not_a_key", "low_gt_high", "missing_bounds", "no_choices", "bad_type",
                                "log_nonpositive", "out_of_range_value", "not_a_mapping"]))
    key = draw(st.sampled_from(DIM_KEYS))
    low = draw(st.floats(min_value=0.01, max_value=0.4))
    if how == "not_a_key":
        key = draw(text.filter(lambda k: k not in DIM_KEYS and not _is_params_key(k)))
        dim = {"type": "float", "low": 0.1, "high": 0.2}
    elif how == "low_gt_high":
        dim = {"type": "float", "low": low + draw(st.floats(min_value=0.01, max_value=10)), "high": low}
    elif how == "missing_bounds":
        dim = {"type": draw(st.sampled_from(["float", "int"]))}
        dim.update(draw(st.sampled_from([{}, {"low": low}, {"high": low}])))
    elif how == "no_choices":
        dim = {"type": "categorical", **draw(st.sampled_from([{}, {"choices": []}, {"choices": None}]))}
    elif how == "bad_type":
        dim = {"type": draw(words.filter(lambda w: w not in {"float", "int", "categorical"})), "low": 0.1,
               "high": 0.2}
    elif how == "log_nonpositive":
        dim = {"type": "float", "low": draw(st.floats(max_value=0, min_value=-10)), "high": 1.0, "log": True}
    elif how == "out_of_range_value":
        key = draw(st.sampled_from(["distill.alpha", "prune.amount", "prune.method", "quantize.method"]))
        if key.endswith("method"):
            dim = {"type": "categorical", "choices": [draw(words.filter(lambda w: w not in _allowed(key)))]}
        else:
            dim = {"type": "float", "low": 0.1, "high": draw(st.floats(min_value=1.01, max_value=100))}
    else:
        dim = draw(st.one_of(st.none(), st.integers(), words, st.lists(st.integers(), max_size=2)))
    return Case(f"search_space.{how}", _with(("search", "space"), {key: dim}), ("search", "space", key))


def _is_params_key(key: str) -> bool:
    section, _, field = key.partition(".")
    model = Params.model_fields.get(section)
    return model is not None and section in SECTIONS and field in model.annotation.model_fields


def _allowed(key: str) -> tuple[Any, ...]:
    section, _, field = key.partition(".")
    return get_args(Params.model_fields[section].annotation.model_fields[field].annotation)


mutations = st.one_of(leaf_mutation(), leaf_mutation(), unknown_key(), empty_section(), bad_search_space())


def check_refused(case: Case) -> str:
    try:
        validate(case.raw)
    except ParamsError as exc:
        message = str(exc)
    else:
        raise AssertionError(f"{case.kind}: accepted a bad params file at {dotted(case.key)}")
    assert "\n" not in message and "\r" not in message, message
    key = dotted(case.key)
    assert message == key or message.startswith(f"{key}:") or message.startswith(f"{key}."), \
        f"{case.kind}: expected the message to start with {key!r}, got {message!r}"
    assert len(message) < 600, message
    return message


def test_committed_params_are_the_valid_starting_point():
    validate(copy.deepcopy(BASE))
    assert {leaf.kind for leaf in LEAVES} == {"bool", "int", "float", "str", "literal", "list", "dict"}


def test_every_mutation_is_refused_with_one_line_naming_the_key():
    seen: list[str] = []

    @settings(max_examples=300, deadline=None, database=None, derandomize=True,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
    @given(mutations)
    def check(case: Case) -> None:
        check_refused(case)
        seen.append(case.kind)

    check()
    kinds = {k.split(".")[0] for k in seen}
    print(f"\n{len(seen)} mutated params files refused; by kind: "
          + ", ".join(f"{k}={sum(1 for s in seen if s.split('.')[0] == k)}" for k in sorted(kinds)))
    assert len(seen) >= 200
    assert kinds == {"wrong_type", "out_of_range", "unknown_method", "unknown_key", "empty_section",
                     "search_space"}


def test_null_section_is_an_error_naming_the_section():
    message = check_refused(Case("empty_section", _with(("prune",), None), ("prune",)))
    assert "section is empty" in message and "prune: {}" in message
    assert validate(_with(("prune",), {})).prune == Params().prune  # an empty mapping means defaults


STAGE_SAMPLE = 5


@settings(max_examples=STAGE_SAMPLE, deadline=None, database=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much,
                                 HealthCheck.function_scoped_fixture])
@given(mutations)
def test_stage_process_exits_2_with_one_line_and_touches_nothing(tmp_path_factory, case):
    root = tmp_path_factory.mktemp("fuzz")
    (root / "params.yaml").write_text(yaml.safe_dump(case.raw, allow_unicode=True))
    for rel, content in {"models/quantized.pt": b"previous model", "models/pruned.pt": b"previous input",
                         "metrics/quantize.json": b'{"accuracy": 0.5}\n'}.items():
        (root / rel).parent.mkdir(exist_ok=True)
        (root / rel).write_bytes(content)
    before = {p: p.read_bytes() for p in root.rglob("*") if p.is_file()}
    line = one_error_line(run_stage("quantize", root, timeout=180))
    assert line.startswith("quantize: error: " + dotted(case.key)), (case.kind, line)
    assert {p: p.read_bytes() for p in root.rglob("*") if p.is_file()} == before
