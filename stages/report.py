"""Stage report: reports/summary.md + reports/pareto.png, printed at the end of dvc repro."""

from pipelines import report
from pipelines import stage
from pipelines.core.io import read_csv, read_json, write_text

STAGES = ["train_baseline", "distill", "prune", "quantize"]


def body(ctx, run):
    summary = read_json(stage.METRICS / "compile_benchmark.json")
    stages = {name: read_json(stage.METRICS / f"{name}.json") for name in STAGES}
    rows = read_csv(stage.REPORTS / "benchmark.csv")
    front_file = stage.REPORTS / "search" / "pareto.json"
    front = read_json(front_file) if front_file.exists() else None
    text = report.markdown(summary, stages, rows, ctx.params, front)
    run.log_artifact(write_text(stage.REPORTS / "summary.md", text))
    run.log_artifact(report.pareto_plot(summary, stage.REPORTS / "pareto.png", ctx.params.benchmark.batch_size))
    print("\n" + text)


if __name__ == "__main__":
    stage.main("report", body, closes_pipeline=True)
