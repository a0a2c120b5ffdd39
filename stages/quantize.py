"""Stage quantize: int8 of the pruned model (dynamic / static PTQ / QAT) -> models/quantized.pt.
With ``quantize.engine: auto`` (static / QAT on a built-in arch) the engine is the one that
measures faster on this machine: eager int8 against compiled PT2E int8, timed side by side
(``metrics/quantize.json`` ``engine_choice``)."""

from pipelines import stage
from pipelines.chain.quantize import quantize_model
from pipelines.compression.checkpoint import layer_shapes, save_model
from pipelines.compression.quantize import recipe
from pipelines.engines import measure_engines


def body(ctx, run):
    pruned = stage.load_checkpoint(ctx, "pruned")
    model, metrics = quantize_model(ctx, pruned.model, choose=measure_engines)
    quant = recipe(ctx.params.quantize, metrics["engine"])  # the engine `auto` chose
    metrics = {**metrics, "method": ctx.params.quantize.method}
    stage.write_outputs(ctx, run, "quantize", metrics, model=model, model_name="quantized", spec=pruned.spec,
                        save_kwargs={"shapes": layer_shapes(pruned.model), "quant": quant}, saver=save_model)


if __name__ == "__main__":
    stage.main("quantize", body)
