"""Stage distill: student trained against the frozen teacher -> models/student.pt."""

from pipelines import stage
from pipelines.chain.distill import distill_student


def body(ctx, run):
    outcome = distill_student(ctx, stage.load(ctx, "teacher"))
    stage.write_outputs(ctx, run, "distill", outcome.metrics, model=outcome.student, model_name="student",
                        spec=ctx.spec("student"), history=outcome.history.rows)


if __name__ == "__main__":
    stage.main("distill", body)
