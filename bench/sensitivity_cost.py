"""What per-layer sensitivity adds to the quantize stage of a finished run: the stage's int8
quantization timed alone, then the sensitivity pass (fake-quant simulation + the engine's SQNR
debugger + the val passes), on the run's ``models/pruned.pt`` with the run's params.

    .venv/bin/python bench/sensitivity_cost.py                 # this checkout's run (after make repro)
    .venv/bin/python bench/sensitivity_cost.py --run /work/main # another checkout's models
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

import pipelines  # noqa: E402,F401
from pipelines.chain.accuracy_control import control  # noqa: E402
from pipelines.compression.checkpoint import load_model  # noqa: E402
from pipelines.compression.quantize import quantize, resolve_engine  # noqa: E402
from pipelines.core.config import load_params  # noqa: E402
from pipelines.training.context import Context  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--run", type=Path, default=ROOT)
    ap.add_argument("--engine", choices=["eager", "pt2e"], default=None)
    args = ap.parse_args()
    torch.set_num_threads(2)
    ctx = Context(load_params(ROOT / "params.yaml"))
    _ = ctx.data
    model = load_model(args.run / "models" / "pruned.pt").model.eval()
    engine = args.engine or resolve_engine(ctx.params.quantize, model)
    start = time.perf_counter()
    int8 = quantize(model, ctx.params.quantize, ctx, engine=engine)
    quantized = time.perf_counter() - start
    start = time.perf_counter()
    _, _, metrics = control(ctx, model, int8, engine, timed=False)
    sens = time.perf_counter() - start
    print(f"engine {engine}: int8 quantization {quantized:.2f} s, sensitivity {sens:.2f} s "
          f"({len(metrics.get('sensitivity', []))} layers; {sens / quantized:.2f}x the quantization)")
    for r in metrics.get("sensitivity", [])[:5]:
        print(f"  {r['rank']}. {r['layer']}: sqnr {r['sqnr_db']:.1f} dB ({r['sqnr_source']}), "
              f"val {r['val_accuracy_delta']:+.2f} pp")


if __name__ == "__main__":
    main()
