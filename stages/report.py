"""Stage report: reports/summary.md + reports/pareto.png, the headline metrics/summary.json and
the Pareto plot data plots/pareto.json; registers the final model and fills the MLflow pipeline
run (headline metrics, summary as description). Printed at the end of dvc repro."""

from pipelines import report, stage
from pipelines.core.io import read_csv, read_json, write_json, write_text
from pipelines.tracking import register_final

STAGES = ["train_baseline", "distill", "prune", "quantize"]


def body(ctx, run):
    summary = read_json(stage.METRICS / "compile_benchmark.json")
    stages = {name: read_json(stage.METRICS / f"{name}.json") for name in STAGES}
    rows = read_csv(stage.REPORTS / "benchmark.csv")
    front_file = stage.REPORTS / "search" / "pareto.json"
    front = read_json(front_file) if front_file.exists() else None
    text = report.markdown(summary, stages, rows, ctx.params, front)
    headline = report.headline(summary, rows, front)
    write_json(stage.METRICS / "summary.json", headline)
    write_json(stage.PLOTS / "pareto.json", report.pareto_points(summary))
    write_text(stage.REPORTS / "summary.md", text)
    run.log_artifact(report.pareto_plot(summary, stage.REPORTS / "pareto.png", ctx.params.benchmark.batch_size))
    shown = report.for_mlflow(text, run.artifact_url("pareto.png"))
    run.log_text(shown, "summary.md")
    run.log_metrics(headline)
    run.set_tags({k: v for k, v in headline.items() if isinstance(v, str)})  # runtime, deploy runtime/artifact
    registered = register_final(ctx.params, stage.model_path("quantized"), headline, run.parent_id)
    line = (f"Registered `{registered.name}` version {registered.version}: "
            f"{'now' if registered.champion else 'not'} `champion` ({registered.reason})." if registered else "")
    run.pipeline.log_metrics(headline)
    run.pipeline.set_description(shown + (f"\n{line}\n" if line else ""))
    print("\n" + text + (f"\n{line}" if line else ""))


if __name__ == "__main__":
    stage.main("report", body, closes_pipeline=True)
