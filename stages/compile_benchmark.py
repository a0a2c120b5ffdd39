"""Stage compile_benchmark: every model x runtime x batch size, measured side by side.

Runtimes come from ``benchmark.runtimes`` (default ``[eager, compile-default, ort-int8, ov-int8]``;
add ``compile-max-autotune`` / ``compile-reduce-overhead``, the CPU bf16 rows, the other deploy
targets or ``aoti`` when you can afford their build time, see pipelines/measurement/runtimes.py
and pipelines/measurement/deploy); with CUDA present, autocast ``-fp16``/``-bf16`` rows are added.
Deploy targets time the model that ships (the final int8 model; its fp32 source is what ONNX Runtime
and OpenVINO quantize), the other chain models run on the PyTorch runtimes. When
``benchmark.runtimes`` names a deploy target, the final model is exported to ONNX
(``models/deploy/``), checked against PyTorch and logged; without one, nothing is exported (the
exports serve the deploy targets, and cost minutes on a large model).
The full table goes to MLflow as a table artifact; each model keeps a few flat metrics, linked to
its logged model."""

import shutil

from pipelines import stage
from pipelines.compression.checkpoint import load_model
from pipelines.compression.quantize import fp32_layers
from pipelines.compression.quantize.range_fixes import reapplied
from pipelines.core.kinds import is_quantized
from pipelines.core.io import read_json, write_csv
from pipelines.measurement.benchmark import DeployInputs, machine_metrics
from pipelines.measurement.comparison import CHAIN, MODEL_METRICS, RUN_METRICS, compare, pick, shipped, summary_metrics
from pipelines.measurement.deploy import DeployBudget, Deployer, DeploySettings, export_chain
from pipelines.measurement.runtimes import parse_runtime
from pipelines.tracking import link_model_metrics

DEPLOY_DIR = stage.MODELS / "deploy"
SOURCES = {"quantized": "pruned"}  # int8 model -> the fp32 model the quantize stage started from


def deploy_budget(ctx, final) -> DeployBudget | None:
    """``quantize.max_accuracy_drop`` for the int8 deploy targets of an int8 final model: the
    layers the quantize stage kept out of int8 (read from the model itself), the validation
    images NNCF's and torch.ao's accuracy control validate on, and how many layers torch.ao's may keep."""
    limit = ctx.params.quantize.max_accuracy_drop
    if limit is None or not is_quantized(final):
        return None
    return DeployBudget(limit, ctx.split_tensors("val"), tuple(fp32_layers(final)),
                        ctx.params.quantize.max_fallback_layers)


def body(ctx, run):
    cfg = ctx.params.benchmark
    models = {name: stage.load(ctx, name, load_model) for name in CHAIN}  # quantized: int8
    accuracy = {name: ctx.accuracy(model) for name, model in models.items()}
    sizes = [1, cfg.batch_size] if cfg.include_batch_one and cfg.batch_size != 1 else [cfg.batch_size]
    shutil.rmtree(DEPLOY_DIR, ignore_errors=True)
    DEPLOY_DIR.mkdir(parents=True)  # a declared output (dvc.yaml): empty without a deploy target
    batches = ctx.calibration_batches()
    deployer = Deployer(DeploySettings(cfg.num_threads, batches, DEPLOY_DIR,
                                       deploy_budget(ctx, models[shipped(models)])))
    test = ctx.split_tensors("test")
    fixed = {}  # the deploy targets quantize the float model the quantize stage did: range fixes included
    if SOURCES["quantized"] in models and (qm := stage.METRICS / "quantize.json").exists():
        source, how = reapplied(models[SOURCES["quantized"]], read_json(qm), ctx.params.quantize, batches)
        if how:
            fixed[SOURCES["quantized"]] = (source, how)
    rows = compare(models, accuracy, {bs: ctx.example(bs) for bs in sizes}, cfg,
                   DeployInputs(deployer, SOURCES, test, fixed), {name: stage.model_path(name) for name in CHAIN})
    for line in dict.fromkeys(f"{r['runtime']}: skipped: {r['skipped']}" for r in rows if r.get("skipped")):
        print(f"compile_benchmark: {line}")
    deploying = any(parse_runtime(runtime).deploy for runtime in cfg.runtimes)
    exports = export_chain(deployer, {**models, **{n: m for n, (m, _) in fixed.items()}}, SOURCES,
                           ctx.example(cfg.batch_size), only=[shipped(models)]) \
        if deploying else {}
    csv_path = write_csv(stage.REPORTS / "benchmark.csv", rows)
    summary = summary_metrics(rows, cfg.batch_size, cfg.deploy_runtime, accuracy_slack=1 / len(test[1]))
    for name, done in exports.items():  # onnx_file, onnx_max_abs_diff, onnx_error ... per model
        summary.setdefault(name, {}).update({f"onnx_{k}": v for k, v in done.items() if k != "files"})
    stage.write_outputs(ctx, run, "compile_benchmark", summary, artifacts=[csv_path],
                        logged_metrics=pick(summary, RUN_METRICS))
    run.log_table(rows, "benchmark_table.json")
    run.log_metrics(machine_metrics(rows))  # the machine's speed on a fixed workload: runs told apart
    for done in exports.values():
        for path in done.get("files", []):
            run.log_artifact(path, "onnx")
    for name, measured in pick(summary, MODEL_METRICS).items():  # onto each stage's logged model
        link_model_metrics(ctx.params, stage.model_path(name), measured)


if __name__ == "__main__":
    stage.main("compile_benchmark", body)
