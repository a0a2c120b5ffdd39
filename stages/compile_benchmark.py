"""Stage compile_benchmark: every model x runtime x batch size, measured side by side.

Runtimes come from ``benchmark.runtimes`` (default ``[eager, compile-default]``; add
``compile-max-autotune`` / ``compile-reduce-overhead`` when you can afford their compile time,
see pipelines/benchmark.py); with CUDA present, autocast ``-fp16``/``-bf16`` rows are added."""

from pipelines import stage
from pipelines.core.io import write_csv
from pipelines.measurement.comparison import CHAIN, MODEL_METRICS, RUN_METRICS, compare, pick, summary_metrics
from pipelines.tracking import link_model_metrics


def body(ctx, run):
    cfg = ctx.params.benchmark
    models = {name: stage.load(ctx, name) for name in CHAIN}
    accuracy = {name: ctx.accuracy(model) for name, model in models.items()}
    sizes = [1, cfg.batch_size] if cfg.include_batch_one and cfg.batch_size != 1 else [cfg.batch_size]
    rows = compare(models, accuracy, {bs: ctx.example(bs) for bs in sizes}, cfg)
    csv_path = write_csv(stage.REPORTS / "benchmark.csv", rows)
    summary = summary_metrics(rows, cfg.batch_size, cfg.deploy_runtime)
    stage.write_outputs(ctx, run, "compile_benchmark", summary, artifacts=[csv_path],
                        logged_metrics=pick(summary, RUN_METRICS))
    run.log_table(rows, "benchmark_table.json")
    for name, measured in pick(summary, MODEL_METRICS).items():  # onto each stage's logged model
        link_model_metrics(ctx.params, stage.model_path(name), measured)


if __name__ == "__main__":
    stage.main("compile_benchmark", body)
