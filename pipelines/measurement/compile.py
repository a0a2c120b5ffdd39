"""torch.compile variants of a model, built the way the benchmark times them.

``compile-<mode>`` (``default``, ``reduce-overhead``, ``max-autotune``): ``torch.compile`` with
Inductor *freezing* on (weights become constants, so conv/linear weights are pre-packed and PT2E
int8 patterns are fused into int8 kernels), compiled and timed under ``torch.inference_mode``:
the inference setting. ``reduce-overhead`` means CUDA graphs; on CPU it compiles like
``default``. ``max-autotune`` benchmarks GEMM/conv candidates at compile time, which costs tens of
seconds per graph on a small CPU (see ``bench/`` and the README). ``compile_time_s`` is the cold
cost: every variant compiles into a private, empty Inductor cache.

Wrapper (``benchmark.cpp_wrapper``): Inductor's compiled graph is a list of kernel calls held
together by wrapper code, Python by default. A PT2E int8 graph on CPU calls oneDNN ops whose
Python dispatch (argument parsing, runtime asserts) costs ~20-40 us each, which on a small model
is most of what separates it from eager int8; ``auto`` compiles those graphs with the C++ wrapper
(~6 s more compile time per graph) and float graphs with the Python one. Rows say which.
``benchmark.inductor`` sets any other ``torch._inductor.config`` settings, process-wide
(:func:`apply_inductor_settings`); the settings in
:data:`pipelines.core.inductor.FIXED_INDUCTOR_SETTINGS` are the benchmark's own.
"""
from __future__ import annotations

import contextlib
import copy
import os
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, get_args

import torch
from torch import nn

from pipelines.core.cpu import bf16_missing
from pipelines.core.errors import error_line
from pipelines.core.inductor import FIXED_INDUCTOR_SETTINGS, CompiledCall, CppWrapper
from pipelines.core.kinds import is_pt2e_int8
from pipelines.measurement.direct_call import capturing_backend, direct_call
from pipelines.measurement.graphs import GraphReport
from pipelines.measurement.runtimes import Runtime, parse_runtime
from pipelines.measurement.timing import sync

REDUCE_OVERHEAD_CPU_NOTE = "reduce-overhead means CUDA graphs; on CPU it compiles like compile-default"
DEPLOY_ONLY_NOTE = "a deploy target: benchmark_models builds it (with a Deployer), compile_for does not"
PT2E_REFERENCE_NOTE = ("PT2E reference graph (quantize/dequantize around fp32 ops): its int8 kernels only exist "
                       "once compiled, see the compile-* rows")

# A frame may hold many compiled entries at once (every model of one class x every mode);
# dynamo's default limit (8) would silently send the rest to eager.
_RECOMPILE_LIMIT = 256


@dataclass
class Compiled:
    fn: Callable[[torch.Tensor], Any]
    compile_time_s: float
    graph_breaks: int | None = None
    break_reasons: list[str] = field(default_factory=list)
    error: str | None = None
    graphs: int | None = None          # graphs inductor compiled for this variant
    device: str = "cpu"
    note: str = ""
    wrapper: str = ""                  # "cpp" or "python" for compiled variants
    call: str = ""                     # compiled variants: "direct" (no Dynamo at the compiled shape) or "dynamo"
    skipped: str = ""                  # why this machine cannot run the variant (not an error)
    artifact: str = ""                 # deploy targets: the file a user ships
    artifact_mb: float | str = ""


def _autocast(rt: Runtime) -> contextlib.AbstractContextManager:
    return torch.autocast(rt.amp_device, dtype=rt.amp) if rt.amp is not None else contextlib.nullcontext()


def _with_autocast(fn: Callable[[torch.Tensor], Any], rt: Runtime) -> Callable[[torch.Tensor], Any]:
    def run(x: torch.Tensor) -> Any:
        with _autocast(rt):
            return fn(x)

    return run


_CACHE_ROOT: list[str] = []  # set by benchmark_models: per-variant cold caches live under it


def _cache_root() -> str:
    """Where per-variant Inductor cache dirs go: benchmark_models' temp dir, else one per process
    (removed at exit), so a failed compile never leaves a stray dir behind."""
    if not _CACHE_ROOT:
        import atexit
        import shutil

        root = tempfile.mkdtemp(prefix="compile_benchmark_")
        atexit.register(shutil.rmtree, root, ignore_errors=True)
        _CACHE_ROOT.append(root)
    return _CACHE_ROOT[-1]


@contextlib.contextmanager
def cold_cache_root() -> Iterator[str]:
    """Put the per-variant cold caches of one benchmark under one temporary dir, removed afterwards."""
    with tempfile.TemporaryDirectory(prefix="compile_benchmark_") as root:
        _CACHE_ROOT.append(root)
        try:
            yield root
        finally:
            _CACHE_ROOT.remove(root)


@contextlib.contextmanager
def _cold_cache() -> Iterator[None]:
    """A private, empty Inductor cache dir (what ``torch._inductor.utils.fresh_cache`` does, minus
    its warning on every refused compile): compile_time_s is the cold cost, C++ kernel builds and
    autotuning included, not a hit on kernels that an earlier run left on disk."""
    from torch._inductor.utils import clear_caches

    path = tempfile.mkdtemp(dir=_cache_root())
    env = {"TORCHINDUCTOR_CACHE_DIR": path, "TRITON_CACHE_DIR": os.path.join(path, "triton")}
    saved = {key: os.environ.get(key) for key in env}
    clear_caches()
    os.environ.update(env)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        clear_caches()


CPP_WRAPPER_POLICIES = get_args(CppWrapper)

@dataclass(frozen=True)
class CompileSettings:
    """How compiled variants are built beyond their runtime's mode: the ``benchmark.cpp_wrapper``
    policy and extra ``torch._inductor.config`` settings (``benchmark.inductor``)."""

    cpp_wrapper: str = "auto"
    inductor: tuple[tuple[str, Any], ...] = ()
    call: CompiledCall = "direct"  # benchmark.compiled_call, see pipelines.measurement.direct_call

    @classmethod
    def of(cls, cfg: Any) -> "CompileSettings":
        """From a ``BenchmarkConfig``."""
        return cls(cfg.cpp_wrapper, tuple(sorted(cfg.inductor.items())), cfg.compiled_call)


def apply_inductor_settings(settings: CompileSettings) -> None:
    """Set ``settings.inductor`` on ``torch._inductor.config`` for the whole process.

    Process-wide on purpose: Inductor reads some settings only once, when the process's first
    compile registers its freezing patterns (``cpp.weight_prepack`` decides there whether convs
    become prepacked channels-last oneDNN kernels), so a per-compile patch would silently not
    apply. :func:`compile_for` and :func:`warm_compiler` call this before compiling; a process
    should keep one setting throughout, as every stage does."""
    import torch._inductor.config as inductor_config

    for key, value in settings.inductor:
        *path, leaf = key.split(".")
        owner: Any = inductor_config
        for part in path:
            owner = getattr(owner, part)
        setattr(owner, leaf, value)


def use_cpp_wrapper(model: nn.Module, rt: Runtime, policy: str = "auto") -> bool:
    """Whether ``model`` compiles with Inductor's C++ wrapper under ``policy`` (see the module
    docstring): ``auto`` means PT2E int8 graphs on CPU."""
    if policy not in CPP_WRAPPER_POLICIES:
        raise ValueError(f"cpp_wrapper: {policy!r} is not one of {', '.join(CPP_WRAPPER_POLICIES)}")
    if rt.mode is None or policy == "never":
        return False
    if policy == "always":
        return True
    return rt.device == "cpu" and is_pt2e_int8(model)


def _inductor_settings(cpp_wrapper: bool):
    """The Inductor settings every compile (and every recompile) of a runtime runs under."""
    import torch._inductor.config as inductor_config

    return inductor_config.patch({**FIXED_INDUCTOR_SETTINGS, "cpp_wrapper": cpp_wrapper})


def _compile_context(rt: Runtime, cold: bool = True, cpp_wrapper: bool = False) -> contextlib.ExitStack:
    import torch._dynamo

    stack = contextlib.ExitStack()
    if cold:
        stack.enter_context(_cold_cache())
    stack.enter_context(_inductor_settings(cpp_wrapper))
    stack.enter_context(torch._dynamo.config.patch(recompile_limit=_RECOMPILE_LIMIT,
                                                   accumulated_recompile_limit=4 * _RECOMPILE_LIMIT))
    stack.enter_context(torch.inference_mode())
    stack.enter_context(_autocast(rt))
    return stack


def _recompiles_alike(compiled: Callable[[torch.Tensor], Any], cpp_wrapper: bool,
                      shape: torch.Size) -> Callable[[torch.Tensor], Any]:
    """``compiled`` as is for inputs of ``shape`` (the compiled one); any other shape runs under the
    compile's own Inductor settings, so the graph Dynamo recompiles for it is built like the first
    (freezing, the wrapper). Outside them a PT2E int8 graph compiled at batch 64 and called at batch
    1 recompiled without freezing: fp32 convolutions around dequantize, 0.387 ms against 0.152 ms
    for the same model compiled at batch 1 (and 2.22 ms against 0.55 ms the other way round)."""

    def call(x: torch.Tensor) -> Any:
        if x.shape == shape:
            return compiled(x)
        with _inductor_settings(cpp_wrapper):
            return compiled(x)

    return call


def compile_for(model: nn.Module, runtime: str, example: torch.Tensor,
                breaks: GraphReport | None = None, settings: CompileSettings = CompileSettings()) -> Compiled:
    """Build ``runtime`` for ``model``. The compile is forced (and timed, ``compile_time_s``) by
    two calls on ``example`` under Inductor freezing and inference mode, so later timed calls hit
    the cached code. ``fn`` takes an input on ``device`` (autocast rows: the GPU copy of the model).
    ``settings``: wrapper policy and extra Inductor settings. A model the compiler refuses comes
    back with ``error`` set, never as an exception."""
    rt = parse_runtime(runtime)
    if rt.deploy:
        return Compiled(None, float("nan"), skipped=DEPLOY_ONLY_NOTE)
    if rt.amp is not None and rt.device == "cpu":
        if reason := bf16_missing():
            return Compiled(model, float("nan"), skipped=reason)
    if rt.mode is None:
        fn = model if rt.amp is None else _with_autocast(model, rt)
        return Compiled(fn, 0.0, 0, [], note=PT2E_REFERENCE_NOTE if is_pt2e_int8(model) else "")
    cpp = use_cpp_wrapper(model, rt, settings.cpp_wrapper)
    apply_inductor_settings(settings)
    from torch._dynamo.utils import counters

    try:
        if rt.device != "cpu":
            model = copy.deepcopy(model).to(rt.device)
            example = example.to(rt.device)
        graphs_before = counters["stats"]["unique_graphs"]
        start = time.perf_counter()
        backend = capturing_backend(rt.mode) if settings.call == "direct" and rt.device == "cpu" else None
        with _compile_context(rt, cpp_wrapper=cpp):
            compiled = (torch.compile(model, mode=rt.mode, dynamic=False) if backend is None
                        else torch._dynamo.optimize(backend=backend, dynamic=False)(model))
            compiled(example)
            compiled(example)
        sync()
        elapsed = time.perf_counter() - start
        compiled = _recompiles_alike(compiled, cpp, example.shape)
        with torch.inference_mode(), _autocast(rt):
            direct = direct_call(backend, model, compiled, example)
    except Exception as exc:  # noqa: BLE001 - a model the compiler refuses is a result, not a crash
        return Compiled(model, float("nan"), error=error_line(exc), device=rt.device,
                        wrapper="cpp" if cpp else "python")

    run = _with_autocast(direct or compiled, rt)
    notes = []
    if breaks is not None and breaks.note:
        notes.append(breaks.note)
    if rt.mode == "reduce-overhead" and rt.device == "cpu":
        notes.append(REDUCE_OVERHEAD_CPU_NOTE)
    return Compiled(run, elapsed, breaks.graph_breaks if breaks else None, list(breaks.reasons) if breaks else [],
                    graphs=counters["stats"]["unique_graphs"] - graphs_before, device=rt.device,
                    note="; ".join(notes), wrapper="cpp" if cpp else "python", call="direct" if direct else "dynamo")


_WARMED: set[str] = set()


def warm_compiler(device: str = "cpu", settings: CompileSettings = CompileSettings()) -> None:
    """Pay Inductor's one-time process costs (imports, C++ toolchain probe, worker pool) on a
    throwaway model, so the first real variant's compile_time_s is not inflated by them.

    This one compile uses the user's normal Inductor cache, not a cold one: the toolchain probe
    (a dozen test builds, one per vector ISA, ~13 s on a 2-core machine) leaves its results there
    and is remembered for the rest of the process, so on a machine that has compiled before it
    costs nothing. The variants that are timed still compile into cold caches.
    ``settings.inductor`` is applied first, so this first compile registers Inductor's passes
    under it."""
    apply_inductor_settings(settings)
    if device in _WARMED:
        return
    _WARMED.add(device)
    import torch._dynamo

    tiny = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8, 2)).eval().to(device)
    with contextlib.suppress(Exception), _compile_context(Runtime("warm-up", "default"), cold=False):
        torch.compile(tiny, dynamic=False)(torch.randn(1, 1, 4, 4, device=device))
    torch._dynamo.reset()


def warm_compilers(runtimes: Iterable[str], settings: CompileSettings = CompileSettings()) -> None:
    """:func:`warm_compiler` for every device that one of ``runtimes`` compiles on."""
    for device in {rt.device for rt in map(parse_runtime, runtimes) if rt.mode}:
        warm_compiler(device, settings)
