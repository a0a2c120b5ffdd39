"""What empirical bias correction (``quantize.bias_correction``) buys, on the models made
sensitive on purpose (``tests/planted.py``) and on the last run's pruned model: the all-int8
validation drop against fp32 without and with it, for both engines (docs/quantization-accuracy.md).

    .venv/bin/python bench/bias_correction.py        # after make repro (models/pruned.pt); ~1 min
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

import pipelines  # noqa: E402,F401  (central warning filters)
from planted import plant_across_add, plant_range, planted_context, trained_once, trained_residual  # noqa: E402
from pipelines.chain.accuracy_control import range_fix  # noqa: E402
from pipelines.compression.checkpoint import load_model  # noqa: E402
from pipelines.core.config import load_params  # noqa: E402
from pipelines.training.context import Context  # noqa: E402


def line(name: str, engine: str, ctx: Context, model) -> None:
    _, _, info = range_fix(ctx, model, engine)
    drop = info["bias_correction_val_drop"]
    shift = max(info["bias_correction_layers"].values())
    print(f"| {name} | {engine} | {drop['none']['val_drop_pp']:+.2f} | {drop['on']['val_drop_pp']:+.2f} | "
          f"{'yes' if info['bias_correction_applied'] else 'no'} | {shift:.4f} |")


def main() -> None:
    base = planted_context()
    cases = {"CNN [8, 16], planted between two convs (x30)": plant_range(trained_once(base), 30.0),
             "the same CNN unplanted": trained_once(base),
             "residual, planted across the add (x30)": plant_across_add(trained_residual(base), 30.0)}
    print("| model | engine | val drop without (pp) | with (pp) | auto applies it | largest bias shift |")
    print("| --- | --- | --- | --- | --- | --- |")
    for engine in ("pt2e", "eager"):
        for name, model in cases.items():
            if engine == "eager" and name.startswith("residual"):
                continue  # eager torch.ao cannot quantize the float add of a model without FloatFunctional
            line(name, engine, planted_context(bias_correction="auto", engine=engine), model)
    pruned = ROOT / "models" / "pruned.pt"
    if pruned.exists():
        ctx = Context(load_params(ROOT / "params.yaml").with_overrides({"quantize.bias_correction": "auto"}))
        for engine in ("pt2e", "eager"):
            line("the last run's pruned model", engine, ctx, load_model(pruned).model.eval())


if __name__ == "__main__":
    main()
