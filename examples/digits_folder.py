"""Write scikit-learn's bundled handwritten digits as an image folder, to try ``data.name:
imagefolder`` without a download:

    python -m examples.digits_folder images --size 28   # images/train/<0..9>/*.png, images/test/<0..9>/*.png

The 1797 8x8 digits are upscaled (bilinear) to ``--size`` and split 80/20 per class, seeded.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--size", type=int, default=28)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    digits = load_digits()
    pixels = (digits.images * (255 / 16)).round().astype(np.uint8)
    index = np.arange(len(pixels))
    train, test = train_test_split(index, test_size=0.2, random_state=args.seed, stratify=digits.target)
    for split, rows in (("train", train), ("test", test)):
        for i in rows:
            folder = args.out / split / str(digits.target[i])
            folder.mkdir(parents=True, exist_ok=True)
            image = Image.fromarray(pixels[i], "L").resize((args.size, args.size), Image.BILINEAR)
            image.save(folder / f"{i:04d}.png")
    print(f"{len(train)} train and {len(test)} test images under {args.out}")


if __name__ == "__main__":
    main()
