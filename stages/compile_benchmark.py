"""Stage compile_benchmark: every model x runtime x batch size, measured side by side.

Runtimes come from ``benchmark.runtimes`` (default ``[eager, compile-default]``; add
``compile-max-autotune`` / ``compile-reduce-overhead`` when you can afford their compile time,
see pipelines/benchmark.py); with CUDA present, autocast ``-fp16``/``-bf16`` rows are added."""

from pipelines import stage
from pipelines.measurement.comparison import CHAIN, compare, summary_metrics
from pipelines.core.io import write_csv


def body(ctx, run):
    cfg = ctx.params.benchmark
    models = {name: stage.load(name) for name in CHAIN}
    accuracy = {name: ctx.accuracy(model) for name, model in models.items()}
    sizes = [1, cfg.batch_size] if cfg.include_batch_one and cfg.batch_size != 1 else [cfg.batch_size]
    rows = compare(models, accuracy, {bs: ctx.example(bs) for bs in sizes}, cfg)
    csv_path = write_csv(stage.REPORTS / "benchmark.csv", rows)
    stage.write_outputs(ctx, run, "compile_benchmark", summary_metrics(rows, cfg.batch_size), artifacts=[csv_path])
    for row in rows:  # flat copies so the MLflow charts can compare runs
        if "latency_ms_p50" in row:
            key = f"{row['model']}.{row['runtime']}.bs{row['batch_size']}"
            flat = {f"{key}.latency_ms_p50": row["latency_ms_p50"],
                    f"{key}.speedup_vs_teacher": row.get("speedup_vs_teacher", 0.0)}
            if row["runtime"] != "eager":
                flat.update({f"{key}.compile_time_s": row["compile_time_s"], f"{key}.graphs": row["graphs"],
                             f"{key}.graph_breaks": row["graph_breaks"]})
            run.log_metrics(flat)


if __name__ == "__main__":
    stage.main("compile_benchmark", body)
