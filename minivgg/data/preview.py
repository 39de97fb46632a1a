"""Save a figure of augmented samples, to see that an augmentation looks right.

    python -m minivgg.data.preview --dataset mnist --out augment_mnist.png
    python -m minivgg.data.preview --dataset cifar10 --out augment_cifar10.png

Each row applies one augmentation to the same training images (first row: the
originals); the data directory is resolved as for load_dataset (--data-dir, else
$MINIVGG_DATA, else the per-user cache).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from ..fsutil import atomic_write_path
from .errors import DataError
from .sources import load_dataset
from .registry import DATASETS, get_dataset_info
from .transforms import (Compose, Cutout, RandomAffine, RandomCrop, RandomErasing,
                         RandomHorizontalFlip, RandomRotation)


def preview_rows(name: str) -> list[tuple[str, object]]:
    """(label, transform) per row: the augmentations typical for the dataset."""
    if get_dataset_info(name).shape[0] == 1:
        return [("RandomRotation(15)", RandomRotation(15)),
                ("RandomAffine(10, translate=.1,\nscale=(.9, 1.1), shear=10)",
                 RandomAffine(10, translate=(0.1, 0.1), scale=(0.9, 1.1), shear=10)),
                ("RandomRotation(90)", RandomRotation(90)),
                ("RandomErasing(p=1)", RandomErasing(p=1.0))]
    return [("RandomCrop(32, 4) + flip",
             Compose([RandomCrop(32, padding=4), RandomHorizontalFlip()])),
            ("Cutout(16)", Cutout(16)),
            ("RandomAffine(15, translate=.1)", RandomAffine(15, translate=(0.1, 0.1))),
            ("RandomErasing(p=1)", RandomErasing(p=1.0))]


def render(images: np.ndarray, rows, seed: int, title: str):
    """Figure with the originals (float [0, 1] (N, C, H, W)) and one row per transform."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    grid = [("original", images)]
    for i, (label, transform) in enumerate(rows):
        grid.append((label, transform(images, np.random.default_rng([seed, i]))))
    n = len(images)
    fig, axes = plt.subplots(len(grid), n, figsize=(1.2 * n + 2.2, 1.25 * len(grid)),
                             squeeze=False)
    for r, (label, batch) in enumerate(grid):
        for c in range(n):
            ax = axes[r, c]
            picture = np.clip(batch[c].transpose(1, 2, 0), 0, 1)
            if picture.shape[2] == 1:
                ax.imshow(picture[:, :, 0], cmap="gray", vmin=0, vmax=1, interpolation="nearest")
            else:
                ax.imshow(picture, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
        axes[r, 0].set_ylabel(label, rotation=0, ha="right", va="center", fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def save_figure(fig, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write_path(out) as temp:  # a failed save never leaves a broken file
        fig.savefig(temp, dpi=110)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m minivgg.data.preview",
                                     description="Save a figure of augmented training images.")
    parser.add_argument("--dataset", default="mnist", choices=sorted(DATASETS))
    parser.add_argument("--out", default=None, help="PNG path (default: augment_<dataset>.png)")
    parser.add_argument("--data-dir", default=None, help="data directory (default: $MINIVGG_DATA, "
                                                         "else the per-user cache)")
    parser.add_argument("--download", action="store_true", help="fetch missing files")
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    out = Path(args.out or f"augment_{args.dataset}.png")
    try:
        images, labels = load_dataset(args.dataset, "train", args.data_dir, download=args.download)
    except DataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    pick = np.random.default_rng(args.seed).choice(len(images), size=min(args.samples, len(images)),
                                                   replace=False)
    batch = images[pick].astype(np.float32) / 255
    classes = get_dataset_info(args.dataset).classes
    title = f"{args.dataset} augmentations (seed {args.seed}): " + \
            ", ".join(classes[label] for label in labels[pick])
    fig = render(batch, preview_rows(args.dataset), args.seed, title)
    save_figure(fig, out)
    print(f"saved {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
