"""Are the dips in an EMA recipe's test curve the averaged weights being scored with the live
model's BatchNorm statistics?

WeightEMA averages the parameters but copies the buffers (BatchNorm running statistics) from
the live model, so during training the averaged weights are scored with statistics measured on
other weights. This trains a recipe as `minivgg train` does and, after each epoch, scores on the
test set (with the recipe's TTA):
  live         the live weights and their own statistics;
  ema_live_bn  the averaged weights with the live statistics (what training reports);
  ema_own_bn   the averaged weights with statistics re-measured on --bn-images training images.
The probe restores every dropout RNG and buffer it touches, so the training is the recipe's own
run: `ema_live_bn` equals the test accuracy of `benchmarks/accuracy.py run RECIPE` on the same
machine, epoch by epoch.

    MINIVGG_DATA=../shared/datasets python benchmarks/ema_bn_probe.py fashion_plus2 --epochs 6
"""
from __future__ import annotations

import argparse
import json
import sys

import numpy as np

from minivgg import Tensor
from minivgg.autograd import no_grad
from minivgg.data import get_dataset_info, load_dataset
from minivgg.experiment import make_trainer, validate_recipe
from minivgg.models import get_recipe
from minivgg.train import (Callback, _load_module_rng_states, _module_rng_states, _norm_arrays,
                           evaluate)


def remeasure_batch_norm(model, images: np.ndarray) -> None:
    """Replace every BatchNorm's running statistics by those of one forward pass over `images`
    (already normalised float32 NCHW), in train mode as during training. Dropout RNGs are
    restored afterwards; the caller restores the statistics."""
    norms = [m for m in model.modules() if getattr(m, "running_mean", None) is not None]
    momenta = [m.momentum for m in norms]
    rng_states = _module_rng_states(model)
    was_training = model.training
    try:
        for m in norms:
            m.momentum = 1.0
        model.train()
        with no_grad():
            model(Tensor(images))
    finally:
        for m, momentum in zip(norms, momenta):
            m.momentum = momentum
        _load_module_rng_states(model, rng_states)
        model.train(was_training)


class Probe(Callback):
    def __init__(self, test_data, normalize, bn_images, tta, stop_after, out=sys.stdout):
        self.test_data, self.normalize, self.bn_images = test_data, normalize, bn_images
        self.tta, self.stop_after, self.out, self.rows = tta, stop_after, out, []

    def on_epoch_end(self, trainer, record):
        images, labels = self.test_data
        model = trainer.model
        live = evaluate(model, images, labels, self.normalize, **self.tta)["acc"]
        with trainer.ema.swapped_in():  # restores the live weights and buffers on exit
            ema_live_bn = evaluate(model, images, labels, self.normalize, **self.tta)["acc"]
            remeasure_batch_norm(model, self.bn_images)
            ema_own_bn = evaluate(model, images, labels, self.normalize, **self.tta)["acc"]
        model.train()
        row = {"epoch": record["epoch"], "lr": record["lr"], "train_loss": record["train_loss"],
               "reported": record["test_acc"],
               "live": live, "ema_live_bn": ema_live_bn, "ema_own_bn": ema_own_bn}
        self.rows.append(row)
        print(json.dumps(row), file=self.out, flush=True)
        if record["epoch"] >= self.stop_after:
            trainer.state.stopped_early = True  # ends the loop after this epoch


def run_probe(recipe_name: str, epochs: int, bn_images: int = 2000, limit: int | None = None,
              data_dir=None, seed: int | None = None, out=sys.stdout) -> list[dict]:
    recipe = get_recipe(recipe_name)
    if seed is not None:
        recipe = recipe.override(seed=seed)
    validate_recipe(recipe)
    if not recipe.ema:
        raise ValueError(f"recipe {recipe_name!r} has no EMA (ema=0); pick one that has, "
                         f"e.g. fashion_plus2 or cifar10_plus2")
    info = get_dataset_info(recipe.dataset)
    train_images, train_labels = load_dataset(recipe.dataset, "train", data_dir=data_dir)
    test_data = load_dataset(recipe.dataset, "test", data_dir=data_dir)
    if limit:
        train_images, train_labels = train_images[:limit], train_labels[:limit]
        test_data = (test_data[0][:limit], test_data[1][:limit])
    mean, std = _norm_arrays((info.mean, info.std), info.shape[0])
    bn_batch = (train_images[:bn_images].astype(np.float32) / 255.0 - mean) / std
    tta = dict(tta_flip=recipe.tta_flip, tta_shift=recipe.tta_shift)
    probe = Probe(test_data, (info.mean, info.std), bn_batch, tta, stop_after=epochs, out=out)
    trainer = make_trainer(recipe, (train_images, train_labels), test_data, progress=False,
                           log=lambda line: None, callbacks=[probe])
    trainer.fit()
    return probe.rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("recipe", help="a recipe with EMA, e.g. fashion_plus2")
    p.add_argument("--epochs", type=int, default=6, help="stop after this many epochs of the "
                   "recipe's schedule (the schedule keeps its full length)")
    p.add_argument("--bn-images", type=int, default=2000,
                   help="training images the statistics are re-measured on")
    p.add_argument("--limit", type=int, help="use only the first N training and test images "
                   "(a smoke test, not a measurement)")
    p.add_argument("--seed", type=int, help="the recipe's seed (default: its own, 0)")
    p.add_argument("--data-dir", help="dataset root (default: $MINIVGG_DATA)")
    args = p.parse_args(argv)
    if args.epochs < 1 or args.bn_images < 1:
        p.error("--epochs and --bn-images must be at least 1")
    try:
        run_probe(args.recipe, args.epochs, args.bn_images, args.limit, args.data_dir, args.seed)
    except (KeyError, ValueError, OSError) as e:  # unknown recipe, missing or bad dataset files
        message = e.args[0] if isinstance(e, KeyError) and e.args else str(e)
        print(f"ema_bn_probe.py: error: {message}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
