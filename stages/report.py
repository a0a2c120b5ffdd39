"""Stage report: reports/summary.md + reports/pareto.png, the headline metrics/summary.json and
the Pareto plot data plots/pareto.json; registers the final model and fills the MLflow pipeline
run (headline metrics, summary as description). Printed at the end of dvc repro.

Every chain model is evaluated here once more on the test split, per image, so that the report
compares models on the same images (paired); the champion alias is decided by measuring the new
final model and the version holding it side by side."""

import tempfile

from pipelines import report, stage
from pipelines.compression.checkpoint import load_model
from pipelines.core.errors import CheckpointError, error_line
from pipelines.core.io import read_csv, read_json, write_json, write_text
from pipelines.measurement.comparison import CHAIN
from pipelines.measurement.side_by_side import side_by_side
from pipelines.reporting.sensitivity import chain_warnings
from pipelines.tracking import register_final, version_checkpoint

STAGES = ["train_baseline", "distill", "prune", "quantize"]


def champion_judge(ctx, final, runtime):
    """Loads the version holding the alias from the checkpoint it was logged with (weights only,
    int8 included) and measures it beside ``final`` (None if it cannot be loaded)."""
    def judge(holder):
        try:
            with tempfile.TemporaryDirectory() as tmp:
                path = version_checkpoint(holder.name, holder.version, tmp)
                if path is None:
                    raise CheckpointError(f"version {holder.version} was logged without its checkpoint")
                old = load_model(path).model.eval()
            return side_by_side(ctx, final, old, runtime)
        except Exception as exc:  # noqa: BLE001 - an old version that does not load or run: its stored numbers
            print(f"report: version {holder.version} not measured again ({error_line(exc)}): compared on the "
                  "per-image outcomes and speedup interval stored with it")
            return None
    return judge


def body(ctx, run):
    summary = read_json(stage.METRICS / "compile_benchmark.json")
    stages = {name: read_json(stage.METRICS / f"{name}.json") for name in STAGES}
    rows = read_csv(stage.REPORTS / "benchmark.csv")
    front_file = stage.REPORTS / "search" / "pareto.json"
    front = read_json(front_file) if front_file.exists() else None
    models = {name: stage.load(ctx, name, load_model) for name in CHAIN}  # the final model may be int8
    outcomes = {name: tuple(ctx.correct(model, "test").tolist()) for name, model in models.items()}
    warnings = chain_warnings(outcomes, stages["quantize"], ctx.data.num_classes, ctx.params.quantize.max_accuracy_drop)
    for line in warnings:
        print(f"report: {line}")
    text = report.markdown(summary, stages, rows, ctx.params, front, outcomes, warnings)
    headline = report.headline(summary, rows, front, outcomes, warnings)
    write_json(stage.METRICS / "summary.json", headline)
    write_json(stage.PLOTS / "pareto.json", report.pareto_points(summary))
    write_text(stage.REPORTS / "summary.md", text)
    run.log_artifact(report.pareto_plot(summary, stage.REPORTS / "pareto.png", ctx.params.benchmark.batch_size))
    shown = report.for_mlflow(text, run.artifact_url("pareto.png"))
    run.log_text(shown, "summary.md")
    run.log_metrics(headline)
    run.set_tags({k: v for k, v in headline.items() if isinstance(v, str)})  # runtime, deploy runtime/artifact
    final = CHAIN[-1]
    registered = register_final(ctx.params, stage.model_path(final), headline, run.parent_id,
                                test_digest=ctx.digest("test"), test_correct=outcomes[final],
                                side_by_side=champion_judge(ctx, models[final], headline["runtime"]))
    line = (f"Registered `{registered.name}` version {registered.version}: "
            f"{'now' if registered.champion else 'not'} `champion` ({registered.reason})." if registered else "")
    run.pipeline.log_metrics(headline)
    run.pipeline.set_tags({k: v for k, v in headline.items() if isinstance(v, str)})
    run.pipeline.set_description(shown + (f"\n{line}\n" if line else ""))
    print("\n" + text + (f"\n{line}" if line else ""))


if __name__ == "__main__":
    stage.main("report", body, closes_pipeline=True)
