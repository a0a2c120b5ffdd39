"""A plain PyTorch training script, standing for "a model you trained elsewhere": a torchvision
classifier on an image folder, saved as ``torch.save(model.state_dict(), path)``.

    python -m examples.train_torchvision images resnet18 resnet18.pt --epochs 3

It reads images the way torchvision's ``ImageFolder`` does (RGB, ``ToTensor``) and normalises with
``--mean``/``--std`` (default 0.5/0.5): give the lab the same numbers (``data.mean``/``data.std``)
or let it compute its own from the train split. ``--eval`` only prints the test accuracy of saved
weights, which is what ``train.epochs: 0`` must reproduce.
"""

from __future__ import annotations

import argparse

import torch
from torch import nn
from torchvision import datasets, models, transforms


def loader(folder: str, split: str, mean: list[float], std: list[float], shuffle: bool) -> torch.utils.data.DataLoader:
    ds = datasets.ImageFolder(f"{folder}/{split}", transform=transforms.Compose(
        [transforms.ToTensor(), transforms.Normalize(mean, std)]))
    return torch.utils.data.DataLoader(ds, batch_size=64, shuffle=shuffle)


@torch.no_grad()
def accuracy(model: nn.Module, data: torch.utils.data.DataLoader) -> float:
    model.eval()
    right = sum(int((model(x).argmax(1) == y).sum()) for x, y in data)
    return right / len(data.dataset)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder")
    parser.add_argument("builder", help="a torchvision classification builder, e.g. resnet18, mobilenet_v3_small")
    parser.add_argument("out")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--mean", type=float, nargs=3, default=[0.5] * 3)
    parser.add_argument("--std", type=float, nargs=3, default=[0.5] * 3)
    parser.add_argument("--eval", action="store_true", help="load OUT and print its test accuracy")
    args = parser.parse_args(argv)
    test = loader(args.folder, "test", args.mean, args.std, shuffle=False)
    model = models.get_model(args.builder, weights=None, num_classes=len(test.dataset.classes))
    if args.eval:
        model.load_state_dict(torch.load(args.out, weights_only=True))
        print(f"{args.builder}: test accuracy {accuracy(model, test):.4f}")
        return
    torch.manual_seed(0)
    train = loader(args.folder, "train", args.mean, args.std, shuffle=True)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr)
    for epoch in range(1, args.epochs + 1):
        model.train()
        for x, y in train:
            opt.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
        print(f"{args.builder} epoch {epoch}: test accuracy {accuracy(model, test):.4f}", flush=True)
    torch.save(model.state_dict(), args.out)


if __name__ == "__main__":
    main()
