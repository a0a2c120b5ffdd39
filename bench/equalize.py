"""What the range equalizations (``quantize.equalize``: ``cle``, ``smoothquant``) buy on the
models made sensitive on purpose (``tests/planted.py``): the PT2E all-int8 validation drop against
fp32 with none, with cross-layer equalization and with SmoothQuant at each ``--alpha``, and what
``auto`` keeps (docs/quantization-accuracy.md).

    .venv/bin/python bench/equalize.py                     # ~1 min
    .venv/bin/python bench/equalize.py --alpha 0.5 0.8
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

import pipelines  # noqa: E402,F401  (central warning filters)
from planted import plant_offset, plant_range, planted_context, trained_mlp, trained_once  # noqa: E402
from pipelines.chain.accuracy_control import range_fix  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--alpha", type=float, nargs="+", default=[0.5], help="quantize.smoothquant_alpha values")
    args = ap.parse_args()
    base = planted_context()
    cases = {"CNN [8, 16], one channel x30 between two convs (plant_range)": plant_range(trained_once(base), 30.0),
             **{f"MLP [32, 32], one unit's bias +{offset:g} (plant_offset)": plant_offset(trained_mlp(base), offset)
                for offset in (100.0, 300.0, 1000.0)}}
    print("| model | alpha | none (pp) | cle (pp) | smoothquant (pp) | auto keeps |")
    print("| --- | --- | --- | --- | --- | --- |")
    for name, model in cases.items():
        for alpha in args.alpha:
            _, _, info = range_fix(planted_context(equalize="auto", smoothquant_alpha=alpha), model, "pt2e")
            drop = {k: v["val_drop_pp"] for k, v in info["equalize_val_drop"].items()}
            print(f"| {name} | {alpha:g} | {drop['none']:+.2f} | {drop['cle']:+.2f} | {drop['smoothquant']:+.2f} | "
                  f"{info['equalize_method']} |")


if __name__ == "__main__":
    main()
