"""Stage prune: iterative prune + fine-tune of the student -> models/pruned.pt."""

from pipelines import stage
from pipelines.chain.prune import prune_student
from pipelines.core.io import write_json


def body(ctx, run):
    student = stage.load_checkpoint(ctx, "student")
    outcome = prune_student(ctx, student.model)
    table = write_json(stage.REPORTS / "prune_layers.json", outcome.table)
    steps = write_json(stage.PLOTS / "prune_steps.json", outcome.steps)
    metrics = {**outcome.metrics, "method": ctx.params.prune.method}
    stage.write_outputs(ctx, run, "prune", metrics, model=outcome.model, model_name="pruned",
                        spec=student.spec, artifacts=[table, steps])


if __name__ == "__main__":
    stage.main("prune", body)
