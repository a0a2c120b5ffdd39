"""The building blocks of the params schema (:mod:`pipelines.core.config`): the strict section
base class and the bounded number types, each bound with the reason quoted in its error line."""

from __future__ import annotations

import os
from types import UnionType
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator


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
PositiveFloat = Annotated[float, Field(gt=0)]
Fraction = Annotated[float, Field(ge=0.0, le=1.0)]

# Upper bounds for every number that sizes memory, threads or time: a typo such as 10**9 stops at
# validation with the reason (appended to the error line from the field's description), instead of
# a MemoryError, a frozen machine or a run of years.
try:
    CORES = len(os.sched_getaffinity(0))  # the cores this process may use (taskset, cgroups)
except AttributeError:  # not Linux
    CORES = os.cpu_count() or 1
MAX_THREADS = max(2, CORES)  # 2: the committed default must validate on a 1-core machine too
MAX_SEED = 2**32 - 1
MAX_EPOCHS = 1000
SEED_WHY = "numpy's RandomState, which draws the data splits, takes 32-bit seeds"
EPOCHS_WHY = f"{MAX_EPOCHS} full passes are days of CPU time already"
BATCH_WHY = "one batch of images and its activations is held in memory at once"
INDUCTOR_THREAD_SETTINGS = ("cpp.threads", "compile_threads")  # benchmark.inductor keys that size threads
Epochs = Annotated[int, Field(gt=0, le=MAX_EPOCHS, description=EPOCHS_WHY)]
NonNegEpochs = Annotated[int, Field(ge=0, le=MAX_EPOCHS, description=EPOCHS_WHY)]
Width = Annotated[int, Field(gt=0, le=2048)]


def usable_threads(n: int) -> int:
    """``n`` threads, but no more than the cores this process may use: the committed default (2)
    on a 1-core container or a pinned worker only oversubscribes its core (two `dvc repro`s side by
    side, each pinned to one of 2 cores: 72 s at 1 thread, 112 s unpinned at 2 threads each)."""
    return max(1, min(n, CORES))


def number_kind(annotation: Any) -> str | None:
    """``int`` or ``float`` for a (possibly Optional/Annotated) number field, else None."""
    while get_origin(annotation) in (Annotated, Union, UnionType):
        args = [a for a in get_args(annotation) if a is not type(None)]
        if len(args) != 1 and get_origin(annotation) is not Annotated:
            return None
        annotation = args[0]
    return {int: "int", float: "float"}.get(annotation)
