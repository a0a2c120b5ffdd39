"""Issue 23's bars, measured: a generated folder of small images (10 classes) and the same images
as WebDataset shards through ``train_baseline`` and ``distill`` (1 epoch each, each stage its own
process as DVC runs it), printing peak resident memory, ``train_images_per_s`` and
``data_wait_share`` of every run, then one line per bar:

1. streamed over IMAGES images: peak RSS < 3 GiB, and within 1.3x of the same stages over SMALL;
2. training throughput with ``data.augment`` on (streamed) >= 0.8x the same model trained on the
   same images held in memory without augmentation (runs alternate, ``--rounds`` times each; the
   ratio is taken per round, its median printed with every round's);
3. the teacher trained from shards has the folder teacher's test accuracy within its 95% interval.

    .venv/bin/python bench/data_scale.py --images 200000 --small 20000 --size 32 --work /tmp/data_scale
    .venv/bin/python bench/data_scale.py ... --cache decoded   # streamed runs read a decoded file (docs/data.md)

The folder and shards are generated once under ``--work`` (about 1.5 GB for 200,000 PNGs of 32x32;
some minutes) and reused. Peak RSS is ``wait4``'s: the largest of the stage process and its
DataLoader workers. ``--held small`` trains the held-in-memory reference on the SMALL folder (if
the machine cannot hold IMAGES images: the issue measured 9.2 GiB for 200,000); per-epoch
throughput does not depend on the number of images, but say so when reporting.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipelines.data.synthetic import write_folder, write_shards  # noqa: E402

CLASSES = 10
AUGMENT = [{"random_crop": {"size": 32, "padding": 4}}, "horizontal_flip"]
MODELS = {"teacher": {"arch": "cnn", "channels": [32, 64], "depth": 1},
          "student": {"arch": "cnn", "channels": [16, 32], "depth": 1}}
GIB = 2**30


def make_sets(work: Path, images: int, small: int, size: int, eval_images: int) -> dict[str, Path]:
    large = work / f"folder-{images}"
    if not (large / ".done").exists():
        write_folder(large, {"train": images // CLASSES, "val": eval_images // CLASSES, "test": eval_images // CLASSES},
                     classes=CLASSES, size=size)
        (large / ".done").touch()
    small_dir = work / f"folder-{small}"
    if not (small_dir / ".done").exists():
        for path in sorted(large.rglob("*.png")):
            rel = path.relative_to(large)
            if rel.parts[0] == "train" and int(path.stem) >= small // CLASSES:
                continue
            (small_dir / rel).parent.mkdir(parents=True, exist_ok=True)
            if not (small_dir / rel).exists():
                os.link(path, small_dir / rel)
        (small_dir / ".done").touch()
    shards = work / f"shards-{images}"
    if not (shards / ".done").exists():
        for split in ("train", "val", "test"):
            write_shards(large, split, shards, per_shard=5000)
        (shards / ".done").touch()
    return {"large": large, "small": small_dir, "shards": shards}


def _shards(shards: Path, split: str) -> list[str]:
    return sorted(str(p) for p in shards.glob(f"{split}-*.tar"))


def run(name: str, work: Path, data: dict, stages: tuple[str, ...], threads: int | None = None) -> dict:
    """``stages`` in a fresh project under ``work/runs/<name>``: peak RSS and metrics of each;
    ``threads``: the stage process's intra-op threads (``OMP_NUM_THREADS``; None: torch's default)."""
    project = work / "runs" / name
    project.mkdir(parents=True, exist_ok=True)
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["data"].update({"batch_size": 128, **data})
    for which, cfg in MODELS.items():
        raw[which].update(cfg)
    raw["train"]["epochs"] = 1
    raw["distill"].update(epochs=1, compare_without_kd=False)
    raw["tracking"]["enabled"] = False
    (project / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    env = {**os.environ, "PYTHONPATH": str(ROOT), **({"OMP_NUM_THREADS": str(threads)} if threads else {})}
    out = {}
    for stage in stages:
        started = time.perf_counter()
        log = project / f"{stage}.log"  # a file, not a pipe: nobody reads a pipe before wait4, and
        with log.open("w") as sink:    # the progress bars filled it (the stage blocked on write)
            proc = subprocess.Popen([sys.executable, "-m", f"stages.{stage}"], cwd=project, env=env,
                                    stdout=subprocess.DEVNULL, stderr=sink, text=True)
            _, status, usage = os.wait4(proc.pid, 0)  # ru_maxrss: the process or its largest reaped child
        err = log.read_text()
        if os.waitstatus_to_exitcode(status) != 0:
            raise SystemExit(f"{name}/{stage} failed:\n{err[-3000:]}")
        metrics = json.loads((project / "metrics" / f"{stage}.json").read_text())
        out[stage] = {"peak_rss_gib": usage.ru_maxrss * 1024 / GIB, "wall_s": time.perf_counter() - started,
                      **{k: metrics.get(k) for k in ("train_images_per_s", "data_wait_share", "accuracy",
                                                     "accuracy_ci_low", "accuracy_ci_high", "data_in_memory",
                                                     "train_images", "teacher_logits", "data_cache")}}
        row = out[stage]
        print(f"{name:>22} {stage:<15} peak RSS {row['peak_rss_gib']:.2f} GiB  {row['wall_s']:.0f} s  "
              f"train {row['train_images_per_s'] or 0:.0f} img/s  data wait {row['data_wait_share'] or 0:.2f}  "
              f"accuracy {row['accuracy']}  cache {row['data_cache']}", flush=True)
    return out


def _shards_bar(folder_teacher: dict, shard_teacher: dict) -> tuple[str, bool]:
    low, high = folder_teacher["accuracy_ci_low"], folder_teacher["accuracy_ci_high"]
    return (f"shards teacher accuracy {shard_teacher['accuracy']:.4f} within the folder teacher's "
            f"{folder_teacher['accuracy']:.4f} [{low:.4f}, {high:.4f}]", low <= shard_teacher["accuracy"] <= high)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=200_000)
    parser.add_argument("--small", type=int, default=20_000)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--eval-images", type=int, default=2000, help="val and test images each")
    parser.add_argument("--work", type=Path, default=Path("/tmp/data_scale"))
    parser.add_argument("--workers", type=int, default=None, help="data.num_workers (default: from the cores)")
    parser.add_argument("--rounds", type=int, default=1, help="alternations of the throughput pair")
    parser.add_argument("--held", choices=["large", "small"], default="large")
    parser.add_argument("--stream-threads", type=int, default=None,
                        help="intra-op threads of the augmented streamed run (default: torch's)")
    parser.add_argument("--cache", choices=["none", "decoded"], default="none",
                        help="data.cache of the streamed folder runs (decoded: one file under WORK/decoded, shared)")
    parser.add_argument("--bars", default="memory,throughput,shards",
                        help="which bars to measure (comma-separated): shards alone trains two teachers")
    args = parser.parse_args(argv)
    wanted = set(args.bars.split(","))
    if not wanted or wanted - {"memory", "throughput", "shards"}:
        parser.error(f"--bars: a comma-separated subset of memory,throughput,shards, not {args.bars!r}")
    sets = make_sets(args.work, args.images, args.small, args.size, args.eval_images)
    stream = {"name": "imagefolder", "in_memory": False, "num_workers": args.workers, "stats_sample": 10_000,
              "cache": args.cache, "cache_dir": str(args.work / "decoded")}
    both = ("train_baseline", "distill")

    bars = []
    if wanted & {"memory", "shards"}:  # the large streamed run: its memory, its teacher
        large = run(f"streamed-{args.images}", args.work, {**stream, "root": str(sets["large"])},
                    both if "memory" in wanted else ("train_baseline",))
    if "memory" in wanted:
        small = run(f"streamed-{args.small}", args.work, {**stream, "root": str(sets["small"])}, both)
        peak_large = max(row["peak_rss_gib"] for row in large.values())
        peak_small = max(row["peak_rss_gib"] for row in small.values())
        bars += [(f"peak RSS over {args.images} images {peak_large:.2f} GiB < 3 GiB", peak_large < 3),
                 (f"peak RSS {args.images} / {args.small} = {peak_large / peak_small:.2f}x <= 1.3x",
                  peak_large <= 1.3 * peak_small)]
    ratios = []
    for r in range(args.rounds if "throughput" in wanted else 0):
        held = run(f"held-{args.held}-r{r}", args.work, {"name": "imagefolder", "in_memory": True,
                                                         "root": str(sets[args.held])}, ("train_baseline",))
        aug = run(f"augment-r{r}", args.work, {**stream, "root": str(sets["large"]), "augment": AUGMENT},
                  ("train_baseline",), threads=args.stream_threads)
        ratios.append(aug["train_baseline"]["train_images_per_s"] / held["train_baseline"]["train_images_per_s"])
    if ratios:
        bars.append((f"throughput augment-streamed / held ({args.held}) = {statistics.median(ratios):.2f}x >= 0.8x "
                     f"(rounds: {', '.join(f'{r:.2f}' for r in ratios)})", statistics.median(ratios) >= 0.8))
    if "shards" in wanted:
        from_shards = {"name": "webdataset", "num_workers": args.workers, "stats_sample": 10_000,
                       **{f"{split}_shards": _shards(sets["shards"], split) for split in ("train", "val", "test")}}
        shard_teacher = run("webdataset", args.work, from_shards, ("train_baseline",))["train_baseline"]
        bars.append(_shards_bar(large["train_baseline"], shard_teacher))
    for text, ok in bars:
        print(f"{'PASS' if ok else 'FAIL'}  {text}")
    return 0 if all(ok for _, ok in bars) else 1


if __name__ == "__main__":
    raise SystemExit(main())
