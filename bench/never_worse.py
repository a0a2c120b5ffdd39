"""The issue-21 bar, "the promoted pipeline's final model is not worse than before", measured side by
side: the earlier final model and the new one evaluated on the same test images (paired: McNemar
and the Newcombe interval of the difference) and timed in one interleaved loop (the per-round
ratio's interval), on the runtime the new model is judged on.

    python bench/never_worse.py BEFORE.pt AFTER.pt [--runtime compile-default] [--params params.yaml]

Prints one line per bar and exits 0 when both hold: test accuracy not lower beyond its paired
interval (the interval's upper end >= 0), and p50(after)/p50(before) <= 1/0.9 (the ratio's point
estimate; its interval is printed beside it). The full scenario, three seeds on fresh clones:

    for seed in 1 2 3; do
      git clone -q "$REPO" /tmp/bar$seed && cd /tmp/bar$seed
      sed -i "s/^seed: .*/seed: $seed/" params.yaml
      make repro && cp models/quantized.pt /tmp/bar$seed.before.pt
      make search N=12
      if make promote; then dvc repro; fi    # refused: one line, exit 2, nothing to compare
      .venv/bin/python bench/never_worse.py /tmp/bar$seed.before.pt models/quantized.pt
      grep -A2 "measured this pipeline's configuration" reports/summary.md   # trial vs pipeline speedup
      cd -
    done
"""

from __future__ import annotations

import argparse
import sys

from pipelines.compression.checkpoint import load_model
from pipelines.core.config import load_params
from pipelines.core.stats import PairedAccuracy
from pipelines.measurement.side_by_side import side_by_side
from pipelines.training.context import Context

LATENCY_BAR = 1 / 0.9


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("before")
    parser.add_argument("after")
    parser.add_argument("--runtime", default="compile-default", help="a PyTorch runtime of benchmark.runtimes")
    parser.add_argument("--params", default="params.yaml")
    args = parser.parse_args(argv)
    ctx = Context(load_params(args.params))
    old, new = load_model(args.before).model.eval(), load_model(args.after).model.eval()
    pair = side_by_side(ctx, new, old, args.runtime)
    acc = PairedAccuracy.of(pair.new_correct, pair.old_correct)
    acc_ok = acc.interval[1] >= 0
    print(f"accuracy: {acc.describe('after', 'before')} -> {'ok' if acc_ok else 'WORSE'}")
    if pair.ratio is None:
        print(f"latency: not timed ({pair.note})")
        return 0 if acc_ok else 1
    lat_ok = pair.ratio.ratio <= LATENCY_BAR
    print(f"latency on {args.runtime}: {pair.ratio.describe('after', 'before')} (bar: ratio <= {LATENCY_BAR:.3f}) "
          f"-> {'ok' if lat_ok else 'WORSE'}" + (f"; {pair.note}" if pair.note else ""))
    return 0 if acc_ok and lat_ok else 1


if __name__ == "__main__":
    sys.exit(main())
