"""The one benchmarking routine.

Latency is only comparable when measured side by side: every variant of a comparison is
warmed up, then timed *interleaved* (one call of each in turn, the order rotating every
round) so that machine drift hits all of them alike. We report the median (p50) and p90 of
per-call wall times at a fixed thread count, and ratios against a reference measured in the
same loop.

Runtimes (``benchmark.runtimes``):

- ``eager``: the module as it is.
- ``compile-<mode>`` (``default``, ``reduce-overhead``, ``max-autotune``): ``torch.compile`` with
  Inductor *freezing* on (weights become constants, so conv/linear weights are pre-packed and
  PT2E int8 patterns are fused into int8 kernels), compiled and timed under
  ``torch.inference_mode``: the inference setting. ``reduce-overhead`` means CUDA graphs; on CPU
  it compiles like ``default``. ``max-autotune`` benchmarks GEMM/conv candidates at compile time,
  which costs tens of seconds per graph on a small CPU (see ``bench/`` and the README).
- ``compile-<mode>-fp16`` / ``-bf16``: added automatically when CUDA is present, for float models
  only: the model on the GPU, compiled the same way, run under ``torch.autocast`` (Tensor Cores).
- ``eager-cpu-bf16`` / ``compile-<mode>-cpu-bf16``: float models on the CPU under
  ``torch.autocast("cpu", bfloat16)`` (oneDNN bf16 kernels, AMX where present); skipped with the
  reason on a CPU without native bf16 (:mod:`pipelines.measurement.deploy.cpu`).
- deploy targets ``ort-fp32``, ``ort-int8``, ``ov-fp32``, ``ov-bf16``, ``ov-int8``, ``aoti``
  (ONNX Runtime, OpenVINO, AOTInductor): built by :mod:`pipelines.measurement.deploy` and timed in
  the same interleaved loop, every runtime on ``num_threads`` threads and none spinning while idle.

Wrapper (``benchmark.cpp_wrapper``): Inductor's compiled graph is a list of kernel calls held
together by wrapper code, Python by default. A PT2E int8 graph on CPU calls oneDNN ops whose
Python dispatch (argument parsing, runtime asserts) costs ~20-40 us each, which on a small model
is most of what separates it from eager int8; ``auto`` compiles those graphs with the C++ wrapper
(~6 s more compile time per graph) and float graphs with the Python one. Rows say which.
``benchmark.inductor`` sets any other ``torch._inductor.config`` settings, process-wide
(:func:`apply_inductor_settings`).

Every compiled variant is checked: it must have compiled graphs of its own (dynamo silently
reuses or skips code otherwise, see :func:`benchmark_models`) and agree with the eager output.
"""

from __future__ import annotations

import contextlib
import copy
import os
import statistics
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, get_args

import torch
from torch import nn

from pipelines.config import CppWrapper

RUNTIME_MODES = {
    "compile-default": "default",
    "compile-reduce-overhead": "reduce-overhead",
    "compile-max-autotune": "max-autotune",
}
AMP_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}
CPU_BF16 = "-cpu-bf16"  # eager-cpu-bf16, compile-<mode>-cpu-bf16

EAGER_INT8_NOTE = ("dynamo captured no graph: torch.ao eager int8 kernels have no fake-tensor implementation "
                   "('quantized nyi in meta tensors'), so torch.compile falls back to eager; this row times "
                   "the eager int8 kernels behind dynamo's frame check")
NO_GRAPH_NOTE = "dynamo captured no graph, so torch.compile runs this model in eager"
REDUCE_OVERHEAD_CPU_NOTE = "reduce-overhead means CUDA graphs; on CPU it compiles like compile-default"
DEPLOY_ONLY_NOTE = "a deploy target: benchmark_models builds it (with a Deployer), compile_for does not"
PT2E_REFERENCE_NOTE = ("PT2E reference graph (quantize/dequantize around fp32 ops): its int8 kernels only exist "
                       "once compiled, see the compile-* rows")

# A frame may hold many compiled entries at once (every model of one class x every mode);
# dynamo's default limit (8) would silently send the rest to eager.
_RECOMPILE_LIMIT = 256


@dataclass(frozen=True)
class Latency:
    p50_ms: float
    p90_ms: float
    mean_ms: float
    iters: int

    def throughput(self, batch_size: int) -> float:
        return batch_size / (self.p50_ms / 1e3)


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def _sync() -> None:
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


def time_interleaved(fns: dict[Any, Callable[[], Any]], warmup: int = 10, iters: int = 50,
                     rewarm: int = 1) -> dict[Any, Latency]:
    """Time each zero-argument callable ``iters`` times, interleaved, after ``warmup`` calls each.

    Round ``i`` starts at the ``i % len(fns)``-th callable, so no variant always runs first, and
    drift (thermal, other load) hits every variant alike. Before each timed call the variant runs
    ``rewarm`` untimed calls: the previous variant has just evicted its weights from the caches,
    and a deployed model serving one request after another runs with warm caches, which is what a
    latency figure should describe (without it a small model timed right after a large one pays
    for the large one's cache traffic)."""
    names = list(fns)
    with torch.inference_mode():
        for name in names:
            for _ in range(warmup):
                fns[name]()
        _sync()
        samples: dict[Any, list[float]] = {n: [] for n in names}
        for i in range(iters):
            shift = i % len(names)
            for name in names[shift:] + names[:shift]:
                for _ in range(rewarm):
                    fns[name]()
                _sync()
                start = time.perf_counter()
                fns[name]()
                _sync()
                samples[name].append((time.perf_counter() - start) * 1e3)
    return {n: Latency(statistics.median(s), _percentile(s, 0.9), statistics.fmean(s), len(s))
            for n, s in samples.items()}


def set_threads(n: int) -> None:
    torch.set_num_threads(n)


# --- runtimes -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Runtime:
    name: str
    mode: str | None = None            # torch.compile mode; None = eager
    amp: torch.dtype | None = None     # autocast dtype
    amp_device: str = "cuda"           # where autocast rows run: CUDA, or the CPU's bf16 rows
    deploy: bool = False               # a deploy target (pipelines.measurement.deploy), not PyTorch

    @property
    def device(self) -> str:
        return self.amp_device if self.amp is not None else "cpu"


def parse_runtime(name: str) -> Runtime:
    """``eager``, ``compile-<mode>``, ``compile-<mode>-fp16|bf16`` (CUDA), ``eager-cpu-bf16``,
    ``compile-<mode>-cpu-bf16`` or a deploy target (``ort-int8``, ...)."""
    from pipelines.measurement.deploy import DEPLOY_RUNTIMES

    if name == "eager":
        return Runtime(name)
    if name in DEPLOY_RUNTIMES:
        return Runtime(name, deploy=True)
    if name.endswith(CPU_BF16) and (base := name.removesuffix(CPU_BF16)) in ("eager", *RUNTIME_MODES):
        return Runtime(name, RUNTIME_MODES.get(base), torch.bfloat16, "cpu")
    base, _, suffix = name.rpartition("-")
    if suffix in AMP_DTYPES and base in RUNTIME_MODES:
        return Runtime(name, RUNTIME_MODES[base], AMP_DTYPES[suffix])
    if name in RUNTIME_MODES:
        return Runtime(name, RUNTIME_MODES[name])
    allowed = ["eager", *RUNTIME_MODES, *(f"{m}-{s}" for m in RUNTIME_MODES for s in AMP_DTYPES),
               *(f"{m}{CPU_BF16}" for m in ("eager", *RUNTIME_MODES)), *DEPLOY_RUNTIMES]
    raise ValueError(f"unknown runtime {name!r}; allowed: {', '.join(allowed)}")


def cuda_amp_dtypes() -> list[str]:
    """Autocast dtypes this machine's GPU runs on Tensor Cores ([] without CUDA)."""
    if not torch.cuda.is_available():
        return []
    return ["fp16", "bf16"] if torch.cuda.is_bf16_supported() else ["fp16"]


def expand_runtimes(runtimes: list[str], amp: list[str] | None = None) -> list[str]:
    """The configured runtimes plus, for each ``compile-*`` one, its autocast variants
    (``amp`` defaults to :func:`cuda_amp_dtypes`, i.e. none on a CPU-only machine)."""
    amp = cuda_amp_dtypes() if amp is None else amp
    out = list(dict.fromkeys(runtimes))
    for runtime in list(out):
        if runtime in RUNTIME_MODES:
            out += [f"{runtime}-{suffix}" for suffix in amp if f"{runtime}-{suffix}" not in out]
    return out


def is_quantized(model: nn.Module) -> bool:
    """Integer models: torch.ao eager int8 modules, or a PT2E graph with quantize/dequantize ops."""
    from pipelines.models import is_eager_int8

    if is_eager_int8(model):
        return True
    if isinstance(model, torch.fx.GraphModule):
        return any(n.op == "call_function" and "quantize" in str(n.target) for n in model.graph.nodes)
    return False


def is_pt2e_int8(model: nn.Module) -> bool:
    """A converted PT2E graph: runs as reference ops in eager, as int8 kernels once compiled."""
    return isinstance(model, torch.fx.GraphModule) and is_quantized(model)


def runtimes_for(model: nn.Module, runtimes: list[str]) -> list[str]:
    """Autocast and fp32/bf16 deploy rows make sense for float models only; int8 models keep the rest."""
    from pipelines.measurement.deploy import applies

    if not is_quantized(model):
        return list(runtimes)
    return [r for r in runtimes if parse_runtime(r).amp is None and applies(r, int8_model=True)]


# --- graph breaks -------------------------------------------------------------------------------


@dataclass
class GraphReport:
    """Dynamo's own account of a model: how many graphs it captured, where it split, and why."""

    graphs: int
    graph_breaks: int
    reasons: list[str] = field(default_factory=list)
    note: str = ""


# explain() gives some reasons in dynamo's internal words; say what they mean.
_REASON_GLOSSARY = {
    "generic_jump TensorVariable": "data-dependent branching: a Python `if` on a tensor value "
                                   "(e.g. `if x.sum() > 0:`) needs a real bool, so the graph stops there",
}


def _short_reason(reason: str, stack: list[Any] | None = None) -> str:
    lines = [ln.strip() for ln in str(reason).strip().splitlines() if ln.strip()]
    text = lines[0] if lines else "unknown"
    for key, meaning in _REASON_GLOSSARY.items():
        if text.startswith(key):
            text = f"{meaning} [{text}]"
    # dynamo's structured messages put the useful part on an "Explanation:" line
    explanation = next((ln.removeprefix("Explanation:").strip() for ln in lines if ln.startswith("Explanation:")),
                       None)
    if explanation and explanation not in text:
        text = f"{text}: {explanation}"
    if stack:
        frame = stack[-1]
        text += f" (at {str(getattr(frame, 'filename', '?')).rsplit('/', 1)[-1]}:{getattr(frame, 'lineno', '?')})"
    return text[:300]


def explain_graphs(model: nn.Module, example: torch.Tensor) -> GraphReport:
    """``torch._dynamo.explain`` on one call. Note: explain resets dynamo's caches, so call it
    before compiling anything that is to be timed."""
    import torch._dynamo
    from torch._dynamo.utils import counters

    from pipelines.models import is_eager_int8

    before = dict(counters["graph_break"])
    with torch.inference_mode():
        explained = torch._dynamo.explain(model)(example)
    new = {k: v - before.get(k, 0) for k, v in counters["graph_break"].items() if v > before.get(k, 0)}
    reasons = [_short_reason(r.reason, getattr(r, "user_stack", None)) for r in explained.break_reasons]
    if explained.graph_count > 0:
        return GraphReport(explained.graph_count, explained.graph_break_count, list(dict.fromkeys(reasons)))
    # No graph at all: explain() says -1 breaks; count what dynamo actually gave up on instead.
    reasons = list(dict.fromkeys(reasons + [_short_reason(k) for k in new]))
    note = EAGER_INT8_NOTE if is_eager_int8(model) else NO_GRAPH_NOTE
    return GraphReport(0, sum(new.values()) or len(reasons), reasons, note)


def graph_breaks(model: nn.Module, example: torch.Tensor) -> tuple[int, list[str]]:
    """(break count, reasons): the short form of :func:`explain_graphs`."""
    report = explain_graphs(model, example)
    return report.graph_breaks, report.reasons


# --- compiling ----------------------------------------------------------------------------------


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
    skipped: str = ""                  # why this machine cannot run the variant (not an error)
    artifact: str = ""                 # deploy targets: the file a user ships
    artifact_mb: float | str = ""


def _error_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:200]}" if text else type(exc).__name__


def _autocast(rt: Runtime) -> contextlib.AbstractContextManager:
    return torch.autocast(rt.amp_device, dtype=rt.amp) if rt.amp is not None else contextlib.nullcontext()


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

# What every compiled variant is built with (benchmark.inductor may not change these; cpp_wrapper
# comes from benchmark.cpp_wrapper).
FIXED_INDUCTOR_SETTINGS = {
    # weights become constants: conv/linear weights prepacked, PT2E dq -> conv -> q fused into int8 kernels
    "freezing": True,
    # compile_time_s is the cold cost a user pays: no on-disk graph/autotune cache hits
    "fx_graph_cache": False, "autotune_local_cache": False,
    # max-autotune's per-kernel tables go to stderr; the rows keep what matters
    "autotune_num_choices_displayed": 0, "max_autotune_report_choices_stats": False,
}


@dataclass(frozen=True)
class CompileSettings:
    """How compiled variants are built beyond their runtime's mode: the ``benchmark.cpp_wrapper``
    policy and extra ``torch._inductor.config`` settings (``benchmark.inductor``)."""

    cpp_wrapper: str = "auto"
    inductor: tuple[tuple[str, Any], ...] = ()

    @classmethod
    def of(cls, cfg: Any) -> "CompileSettings":
        """From a ``BenchmarkConfig``."""
        return cls(cfg.cpp_wrapper, tuple(sorted(cfg.inductor.items())))


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


def _compile_context(rt: Runtime, cold: bool = True, cpp_wrapper: bool = False) -> contextlib.ExitStack:
    import torch._dynamo
    import torch._inductor.config as inductor_config

    stack = contextlib.ExitStack()
    if cold:
        stack.enter_context(_cold_cache())
    stack.enter_context(inductor_config.patch({**FIXED_INDUCTOR_SETTINGS, "cpp_wrapper": cpp_wrapper}))
    stack.enter_context(torch._dynamo.config.patch(recompile_limit=_RECOMPILE_LIMIT,
                                                   accumulated_recompile_limit=4 * _RECOMPILE_LIMIT))
    stack.enter_context(torch.inference_mode())
    stack.enter_context(_autocast(rt))
    return stack


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
        from pipelines.measurement.deploy.cpu import bf16_missing

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
        with _compile_context(rt, cpp_wrapper=cpp):
            compiled = torch.compile(model, mode=rt.mode, dynamic=False)
            compiled(example)
            compiled(example)
        _sync()
        elapsed = time.perf_counter() - start
    except Exception as exc:  # noqa: BLE001 - a model the compiler refuses is a result, not a crash
        return Compiled(model, float("nan"), error=_error_line(exc), device=rt.device,
                        wrapper="cpp" if cpp else "python")

    run = _with_autocast(compiled, rt)
    notes = []
    if breaks is not None and breaks.note:
        notes.append(breaks.note)
    if rt.mode == "reduce-overhead" and rt.device == "cpu":
        notes.append(REDUCE_OVERHEAD_CPU_NOTE)
    return Compiled(run, elapsed, breaks.graph_breaks if breaks else None, list(breaks.reasons) if breaks else [],
                    graphs=counters["stats"]["unique_graphs"] - graphs_before, device=rt.device,
                    note="; ".join(notes), wrapper="cpp" if cpp else "python")


def _with_autocast(fn: Callable[[torch.Tensor], Any], rt: Runtime) -> Callable[[torch.Tensor], Any]:
    def run(x: torch.Tensor) -> Any:
        with _autocast(rt):
            return fn(x)

    return run


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


def _tolerance(rt: Runtime, quantized: bool, scale: float) -> float:
    rel = 5e-2 if (rt.amp is not None or quantized) else 1e-3
    return rel * (1.0 + scale)


def _check(comp: Compiled, rt: Runtime, report: GraphReport | None, reference: torch.Tensor,
           example: torch.Tensor, quantized: bool, enforce: bool = True) -> float | None:
    """Sets ``comp.error`` when the compiled variant did not really compile its own code, or
    disagrees with eager (only when ``enforce``: deploy rows that quantize or run bf16 are judged
    by their measured accuracy); returns the max abs difference to the eager output."""
    if report is not None and report.graphs > 0 and comp.graphs == 0:
        comp.error = ("no graph compiled for this variant: dynamo reused another variant's code or "
                      "fell back to eager (recompile limit?)")
        return None
    try:
        with torch.inference_mode():
            out = comp.fn(example)
        diff = float((out.float().cpu() - reference.float()).abs().max())
    except Exception as exc:  # noqa: BLE001
        comp.error = f"compiled model fails on its input: {_error_line(exc)}"
        return None
    tol = _tolerance(rt, quantized, float(reference.float().abs().max()))
    if enforce and not diff <= tol:
        comp.error = f"compiled output differs from eager: max abs diff {diff:.3g} > {tol:.3g}"
    return diff


@dataclass
class DeployInputs:
    """What the deploy targets and per-runtime accuracy need beyond the models: a
    :class:`~pipelines.measurement.deploy.Deployer`, each int8 model's fp32 source
    (``{"quantized": "pruned"}``) and the test split (images, labels) every row's accuracy is
    measured on, in that row's runtime."""

    deployer: Any = None
    sources: dict[str, str] = field(default_factory=dict)
    test: tuple[torch.Tensor, torch.Tensor] | None = None


def benchmark_models(models: dict[str, nn.Module], examples: dict[int, torch.Tensor], runtimes: list[str],
                     warmup: int, iters: int, reference: str | None = None,
                     amp: list[str] | None = None,
                     settings: CompileSettings = CompileSettings(),
                     deploy: DeployInputs | None = None) -> list[dict[str, Any]]:
    """One row per (model, runtime, batch_size). All variants at one batch size are timed
    together, interleaved; ``speedup_vs_teacher`` is the ``reference`` model's eager p50 over the
    row's. ``amp`` (default: what the GPU supports, none on CPU) adds autocast rows for float models.
    ``deploy``: builds the deploy targets (once per model, reused at every batch size) and
    measures each row's accuracy in its own runtime.

    Dynamo keeps one code cache per Python function, shared by every instance of a class and by
    every ``torch.compile`` of it, and ``explain()`` wipes it. So: explain every model first;
    then, per batch size, reset dynamo and compile a fresh set, and check that each compiled
    variant produced graphs of its own and matches eager before it is timed."""
    import torch._dynamo

    deploy = deploy or DeployInputs()
    wanted = expand_runtimes(runtimes, amp)
    per_model = {name: runtimes_for(model, wanted) for name, model in models.items()}
    quantized = {name: is_quantized(model) for name, model in models.items()}
    reports: dict[str, GraphReport | None] = {}
    explain_notes: dict[str, str] = {}
    if any(parse_runtime(r).mode for r in wanted):
        first = examples[min(examples)]
        for name, model in models.items():
            try:
                reports[name] = explain_graphs(model, first)
            except Exception as exc:  # noqa: BLE001 - recorded with the rows below
                reports[name] = None
                explain_notes[name] = f"graph breaks unknown, explain failed: {_error_line(exc)}"
    with tempfile.TemporaryDirectory(prefix="compile_benchmark_") as cache_root:
        _CACHE_ROOT.append(cache_root)
        try:
            warm_compilers((r for rs in per_model.values() for r in rs), settings)
            from pipelines.measurement.deploy import import_libraries

            import_libraries(wanted)
            return _measure(models, examples, per_model, quantized, reports, explain_notes, warmup, iters, reference,
                            settings, deploy)
        finally:
            _CACHE_ROOT.remove(cache_root)
            torch._dynamo.reset()


def _deployed(deploy: DeployInputs, models: dict[str, nn.Module], name: str, runtime: str,
              example: torch.Tensor, quantized: bool) -> Compiled:
    """A deploy target as a :class:`Compiled` variant (built by ``deploy.deployer``)."""
    from pipelines.measurement.deploy import skip_reason

    if reason := skip_reason(runtime):
        return Compiled(None, float("nan"), skipped=reason)
    if deploy.deployer is None:
        return Compiled(None, float("nan"), error="deploy targets need a Deployer (benchmark_models(deploy=...))")
    source = deploy.sources.get(name)
    built = deploy.deployer.build(runtime, name, models[name], example, int8_model=quantized,
                                  source=(source, models[source]) if source in models else None)
    return Compiled(built.fn, built.convert_s, note=built.note, error=built.error or None, skipped=built.skipped,
                    artifact=built.artifact, artifact_mb=built.artifact_mb)


def _measure(models, examples, per_model, quantized, reports, explain_notes, warmup, iters,
             reference, settings, deploy) -> list[dict[str, Any]]:
    import torch._dynamo

    from pipelines.measurement.accuracy import runtime_accuracy
    from pipelines.measurement.deploy import exact

    rows: list[dict[str, Any]] = []
    built: dict[tuple[str, str], Compiled] = {}  # deploy targets serve every batch size
    for batch_size, example in examples.items():
        torch._dynamo.reset()
        variants: dict[tuple[str, str], Compiled] = {}
        diffs: dict[tuple[str, str], float | None] = {}
        accuracy: dict[tuple[str, str], float] = {}
        for name, model in models.items():
            try:
                with torch.inference_mode():
                    eager_out = model(example)
            except Exception as exc:  # noqa: BLE001 - a model that cannot run is a row, not a crash
                for runtime in per_model[name]:
                    variants[(name, runtime)] = Compiled(model, float("nan"), error=_error_line(exc))
                continue
            for runtime in per_model[name]:
                rt = parse_runtime(runtime)
                if rt.deploy:
                    if (name, runtime) not in built:
                        built[(name, runtime)] = _deployed(deploy, models, name, runtime, example, quantized[name])
                    comp = built[(name, runtime)]
                else:
                    comp = compile_for(model, runtime, example, reports.get(name), settings)
                if (rt.mode is not None or rt.amp is not None or rt.deploy) and comp.error is None \
                        and not comp.skipped:
                    device_example = example.to(comp.device)
                    diffs[(name, runtime)] = _check(comp, rt, None if rt.deploy else reports.get(name), eager_out,
                                                    device_example, quantized[name],
                                                    enforce=not rt.deploy or exact(runtime, quantized[name]))
                if deploy.test is not None and comp.error is None and not comp.skipped:
                    accuracy[(name, runtime)] = runtime_accuracy(comp.fn, *deploy.test, batch_size, comp.device)
                variants[(name, runtime)] = comp
        inputs = {dev: example.to(dev) for dev in {c.device for c in variants.values()}}
        runnable = {key: (lambda c=c, x=inputs[c.device]: c.fn(x)) for key, c in variants.items()
                    if c.error is None and not c.skipped}
        timings = time_interleaved(runnable, warmup, iters) if runnable else {}
        ref = timings.get((reference, "eager")) if reference else None
        for (name, runtime), comp in variants.items():
            rt = parse_runtime(runtime)
            report = reports.get(name) if not rt.deploy else None
            row: dict[str, Any] = {
                "model": name, "runtime": runtime, "batch_size": batch_size, "device": comp.device,
                "compile_time_s": comp.compile_time_s, "wrapper": comp.wrapper,
                "graphs": comp.graphs if rt.mode else "",
                "graph_breaks": (report.graph_breaks if report else "") if rt.mode else 0,
                "break_reasons": " | ".join(report.reasons) if (report and rt.mode) else "",
                "max_abs_diff_vs_eager": diffs.get((name, runtime), ""),
                "note": "; ".join(n for n in (comp.note, explain_notes.get(name, "") if rt.mode else "") if n),
                "error": comp.error or "",
                "skipped": comp.skipped,
                "artifact": comp.artifact, "artifact_mb": comp.artifact_mb,
            }
            if (name, runtime) in accuracy:
                row["accuracy"] = accuracy[(name, runtime)]
            lat = timings.get((name, runtime))
            if lat is not None:
                row.update(latency_ms_p50=lat.p50_ms, latency_ms_p90=lat.p90_ms,
                           throughput_sps=lat.throughput(batch_size))
                if ref is not None:
                    row["speedup_vs_teacher"] = ref.p50_ms / lat.p50_ms
            rows.append(row)
    return rows
