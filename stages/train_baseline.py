"""Stage train_baseline: train the teacher (or evaluate teacher.weights with train.epochs 0) ->
models/teacher.pt, metrics/train_baseline.json (with how the images were normalised)."""

from pipelines import stage
from pipelines.chain.metrics import model_metrics
from pipelines.chain.teacher import data_record, train_teacher


def body(ctx, run):
    model, history = train_teacher(ctx)
    metrics = {**model_metrics(ctx, model), "val_accuracy": history.best_val_accuracy,
               "best_epoch": history.best_epoch, **history.feeding_metrics(), **data_record(ctx.data)}
    stage.write_outputs(ctx, run, "train_baseline", metrics, model=model, model_name="teacher",
                        spec=ctx.spec("teacher"), history=history.rows)


if __name__ == "__main__":
    stage.main("train_baseline", body)
