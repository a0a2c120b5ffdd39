"""Stage quantize: int8 of the pruned model (dynamic / static PTQ / QAT) -> models/quantized.pt."""

from pipelines import stage
from pipelines.checkpoint import layer_shapes, load_model
from pipelines.quantize import recipe
from pipelines.workflow import quantize_model


def body(ctx, run):
    pruned = load_model(stage.model_path("pruned"))
    model, metrics = quantize_model(ctx, pruned.model)
    quant = None if ctx.params.quantize.method == "none" else recipe(ctx.params.quantize, metrics["engine"])
    metrics = {**metrics, "method": ctx.params.quantize.method}
    stage.write_outputs(ctx, run, "quantize", metrics, model=model, model_name="quantized", spec=pruned.spec,
                        save_kwargs={"shapes": layer_shapes(pruned.model), "quant": quant})


if __name__ == "__main__":
    stage.main("quantize", ["data", "train", "quantize"], body)
