"""Stage quantize: int8 of the pruned model (dynamic / static PTQ / QAT) -> models/quantized.pt.
With ``quantize.engine: auto`` (static / QAT on a built-in arch) the engine is the one that
measures faster on this machine: eager int8 against compiled PT2E int8, timed side by side
(``metrics/quantize.json`` ``engine_choice``), once per architecture and machine: the search's
trials take the same answer (``.cache/engine_choice.json``, pipelines/engines.py). Static int8 also ranks its layers by sensitivity
(``plots/quantize_sensitivity.json``, an MLflow artifact too) and, with
``quantize.max_accuracy_drop``, keeps the most sensitive ones out of int8 until within budget."""

from pipelines import stage
from pipelines.chain.quantize import quantize_model
from pipelines.compression.checkpoint import layer_shapes, save_model
from pipelines.compression.quantize import recipe
from pipelines.core.collapse import WARNING_TAG
from pipelines.core.io import write_json
from pipelines.engines import decided_engine


def body(ctx, run):
    pruned = stage.load_checkpoint(ctx, "pruned")
    model, metrics = quantize_model(ctx, pruned.model, choose=decided_engine, stage=True)
    quant = recipe(ctx.params.quantize, metrics["engine"])  # the engine `auto` chose
    metrics = {**metrics, "method": ctx.params.quantize.method}
    plot = write_json(stage.PLOTS / "quantize_sensitivity.json", metrics.get("sensitivity", []))
    if metrics.get("warning"):
        run.set_tags({WARNING_TAG: metrics["warning"]})
    stage.write_outputs(ctx, run, "quantize", metrics, model=model, model_name="quantized", spec=pruned.spec,
                        save_kwargs={"shapes": layer_shapes(pruned.model), "quant": quant}, saver=save_model,
                        artifacts=[plot])


if __name__ == "__main__":
    stage.main("quantize", body)
