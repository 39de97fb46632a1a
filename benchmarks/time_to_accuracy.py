"""Time to a test accuracy: a recipe trained by minivgg's Trainer and by a plain PyTorch loop.

Both sides start from the same weights (minivgg.interop.to_torch) and train on the same batches
(one minivgg DataLoader) with the same optimizer, schedule, label smoothing, clipping and EMA;
the method is stated in the table this renders into BENCHMARKS.md's speed section. Usage:

    MINIVGG_DATA=../shared/datasets python benchmarks/time_to_accuracy.py --recipe mnist_5k_plus
    python benchmarks/time_to_accuracy.py --recipe mnist_5k --set batch_size=128 --set max_lr=0.1
    python benchmarks/time_to_accuracy.py --limit-train 2048 --limit-test 500 --max-epochs 1   # smoke
    python benchmarks/time_to_accuracy.py --plot-only   # redraw the figure from the JSON

Writes benchmarks/results/speed/time_to_accuracy.json, the figure beside it, and the speed section.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import math
import os
import shlex
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))   # its sibling modules, also when a test loads it by path

if __name__ == "__main__":
    from common import pin_threads  # before NumPy loads OpenBLAS
    pin_threads(sys.argv[1:])

import common  # noqa: E402
import numpy as np  # noqa: E402

from minivgg.data import get_dataset_info, load_dataset  # noqa: E402
from minivgg.experiment import make_optimizer, make_scheduler, make_train_loader  # noqa: E402
from minivgg.models import build, get_recipe  # noqa: E402
from minivgg.run_record import git_state, machine  # noqa: E402
from minivgg.train import Callback, Trainer  # noqa: E402

DEFAULT_JSON = HERE / "results" / "speed" / "time_to_accuracy.json"
PARAMETER_LIMIT = 8000
TARGET_S = 90.0  # minivgg to 99.4% MNIST test accuracy with < 8k parameters


class Setup:
    """The recipe's data, initial model and loader, built identically for both frameworks."""

    def __init__(self, recipe, data_dir=None, limit_train=None, limit_test=None):
        self.recipe = recipe
        self.info = get_dataset_info(recipe.dataset)
        start = time.perf_counter()
        train_x, train_y = load_dataset(recipe.dataset, "train", data_dir=data_dir)
        test_x, test_y = load_dataset(recipe.dataset, "test", data_dir=data_dir)
        self.load_s = time.perf_counter() - start
        self.train = (train_x[:limit_train], train_y[:limit_train])
        self.test = (test_x[:limit_test], test_y[:limit_test])
        self.normalize = (self.info.mean, self.info.std)

    def model(self):
        c, h, _ = self.info.shape
        return build(self.recipe.model, in_channels=c, num_classes=len(self.info.classes),
                     image_size=h, seed=self.recipe.seed)

    def loader(self):
        return make_train_loader(self.recipe, *self.train, self.normalize)


# ---- minivgg: the Trainer that `minivgg train` runs ---------------------------------------------

class StopAtTarget(Callback):
    def __init__(self, target: float, start: float):
        self.target, self.start, self.reached = target, start, None
        self.epochs = []

    def on_epoch_end(self, trainer, record):
        elapsed = time.perf_counter() - self.start
        self.epochs.append({"epoch": record["epoch"], "test_acc": record["test_acc"],
                            "elapsed_s": elapsed})
        if self.reached is None and record["test_acc"] >= self.target:
            self.reached = {"epoch": record["epoch"], "elapsed_s": elapsed,
                            "test_acc": record["test_acc"]}
            trainer.state.stopped_early = True


def run_minivgg(setup: Setup, target: float, epochs: int, log) -> dict:
    recipe = setup.recipe
    model = setup.model()
    optimizer = make_optimizer(recipe, model.parameters())
    loader = setup.loader()
    scheduler, per_batch = make_scheduler(recipe, optimizer, len(loader))
    start = time.perf_counter()
    stop = StopAtTarget(target, start)
    trainer = Trainer(model, optimizer, loader, scheduler=scheduler, schedule_per_batch=per_batch,
                      test_data=setup.test, normalize=setup.normalize, epochs=epochs,
                      label_smoothing=recipe.label_smoothing, grad_clip=recipe.grad_clip,
                      ema=recipe.ema, tta_flip=recipe.tta_flip, tta_shift=recipe.tta_shift, progress=False,
                      log=lambda line: log(f"minivgg: {line}"), callbacks=[stop])
    trainer.fit()
    return {"reached": stop.reached, "epochs": stop.epochs,
            "wall_s": time.perf_counter() - start, "parameters": model.num_parameters()}


# ---- PyTorch: the same recipe in a plain loop ------------------------------------------------

def torch_optimizer(torch, recipe, params):
    kind = recipe.optimizer.lower()
    if kind == "sgd":
        return torch.optim.SGD(params, lr=recipe.lr, momentum=recipe.momentum,
                               nesterov=recipe.nesterov, weight_decay=recipe.weight_decay)
    if kind == "adam":
        return torch.optim.Adam(params, lr=recipe.lr, betas=tuple(recipe.betas),
                                weight_decay=recipe.weight_decay)
    if kind == "adamw":
        return torch.optim.AdamW(params, lr=recipe.lr, betas=tuple(recipe.betas),
                                 weight_decay=recipe.weight_decay)
    raise ValueError(f"unknown optimizer {recipe.optimizer!r}")


def torch_scheduler(torch, recipe, optimizer, steps_per_epoch: int):
    """(scheduler or None, stepped per batch), as minivgg.experiment.make_scheduler."""
    sched = torch.optim.lr_scheduler
    kind = recipe.schedule.lower()
    total_steps = recipe.iters if recipe.iters else recipe.epochs * steps_per_epoch
    if kind == "none":
        return None, True
    if kind == "step":
        return sched.StepLR(optimizer, step_size=recipe.step_size, gamma=recipe.gamma), False
    if kind == "multistep":
        return sched.MultiStepLR(optimizer, milestones=list(recipe.milestones), gamma=recipe.gamma), False
    if kind == "onecycle":
        return sched.OneCycleLR(optimizer, max_lr=recipe.max_lr or recipe.lr, total_steps=total_steps,
                                pct_start=recipe.pct_start, anneal_strategy=recipe.anneal_strategy,
                                div_factor=recipe.div_factor,
                                final_div_factor=recipe.final_div_factor), True
    if kind == "cosine":
        return sched.CosineAnnealingLR(optimizer, T_max=total_steps), True
    if kind == "inverse_time":
        return sched.LambdaLR(optimizer, lambda step: 1.0 / (1.0 + recipe.decay * step)), True
    raise ValueError(f"unknown schedule {recipe.schedule!r}")


class TorchEMA:
    """minivgg.train.WeightEMA in torch: decay warmed up as min(decay, (1 + n) / (10 + n))."""

    def __init__(self, torch, model, decay: float):
        self.torch, self.model, self.decay, self.updates = torch, model, decay, 0
        self.shadow = {k: v.detach().clone() for k, v in model.state_dict().items()}
        self.params = dict(model.named_parameters())
        self.buffers = dict(model.named_buffers())

    def update(self):
        self.updates += 1
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        with self.torch.no_grad():
            for name, p in self.params.items():
                self.shadow[name].mul_(d).add_(p, alpha=1 - d)
            for name, b in self.buffers.items():
                self.shadow[name].copy_(b)


def torch_train_epoch(torch, model, loader, optimizer, scheduler, per_batch: bool, ema,
                      recipe) -> tuple[float, float]:
    """One epoch of the recipe's loop in torch; (mean train loss, train accuracy), counted as
    minivgg's Trainer counts them, so that both loops do the same work."""
    loss_sum, correct, seen = torch.zeros(()), torch.zeros((), dtype=torch.int64), 0
    for x, y in loader:
        yt = torch.from_numpy(np.asarray(y, dtype=np.int64))
        logits = model(torch.from_numpy(x))
        loss = torch.nn.functional.cross_entropy(logits, yt, label_smoothing=recipe.label_smoothing)
        optimizer.zero_grad()
        loss.backward()
        if recipe.grad_clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), recipe.grad_clip)
        optimizer.step()
        if scheduler is not None and per_batch:
            scheduler.step()
        if ema is not None:
            ema.update()
        loss_sum += loss.detach() * len(y)
        correct += (logits.detach().argmax(1) == yt).sum()
        seen += len(y)
    if scheduler is not None and not per_batch:
        scheduler.step()
    return float(loss_sum) / max(seen, 1), int(correct) / max(seen, 1)


def with_ema_weights(model, ema, evaluate):
    """evaluate() with the EMA weights swapped in, when there is an EMA."""
    if ema is None:
        return evaluate()
    saved = {k: v.clone() for k, v in model.state_dict().items()}
    model.load_state_dict(ema.shadow)
    try:
        return evaluate()
    finally:
        model.load_state_dict(saved)


def torch_evaluate(torch, model, images, labels, normalize, tta_flip: bool,
                   batch_size: int = 1000, tta_shift: int = 0) -> tuple[float, float]:
    """(accuracy, mean cross-entropy) of `model` in eval mode on uint8 images, as minivgg's,
    with the same test-time augmentation views (minivgg.tta)."""
    from minivgg.tta import tta_views
    mean = np.asarray(normalize[0], np.float32).reshape(1, -1, 1, 1)
    std = np.asarray(normalize[1], np.float32).reshape(1, -1, 1, 1)
    model.eval()
    correct, loss = 0, 0.0
    with torch.no_grad():
        for start in range(0, len(labels), batch_size):
            views = tta_views(images[start:start + batch_size].astype(np.float32) / 255.0,
                              flip=tta_flip, shift=tta_shift)
            logits = sum(model(torch.from_numpy(np.ascontiguousarray((v - mean) / std)))
                         for v in views) / len(views)
            yt = torch.from_numpy(np.asarray(labels[start:start + batch_size], np.int64))
            loss += float(torch.nn.functional.cross_entropy(logits, yt, reduction="sum"))
            correct += int((logits.argmax(1) == yt).sum())
    model.train()
    n = max(len(labels), 1)
    return correct / n, loss / n


def run_torch(setup: Setup, target: float, epochs: int, log, threads: int) -> dict:
    import torch
    from minivgg.interop import to_torch
    torch.set_num_threads(threads)
    recipe = setup.recipe
    model = to_torch(setup.model())
    model.train()
    optimizer = torch_optimizer(torch, recipe, model.parameters())
    loader = setup.loader()
    scheduler, per_batch = torch_scheduler(torch, recipe, optimizer, len(loader))
    ema = TorchEMA(torch, model, recipe.ema) if recipe.ema else None
    history, reached = [], None
    start = time.perf_counter()
    for epoch in range(1, epochs + 1):
        train_loss, _ = torch_train_epoch(torch, model, loader, optimizer, scheduler, per_batch, ema,
                                          recipe)
        if not math.isfinite(train_loss):
            raise RuntimeError(f"PyTorch: the loss became {train_loss} in epoch {epoch}")
        acc, _ = with_ema_weights(model, ema, lambda: torch_evaluate(
            torch, model, *setup.test, setup.normalize, recipe.tta_flip, tta_shift=recipe.tta_shift))
        elapsed = time.perf_counter() - start
        history.append({"epoch": epoch, "test_acc": acc, "elapsed_s": elapsed})
        log(f"torch: epoch {epoch}/{epochs}  test acc {acc:.4f}  {elapsed:.1f}s")
        if acc >= target:
            reached = {"epoch": epoch, "elapsed_s": elapsed, "test_acc": acc}
            break
    return {"reached": reached, "epochs": history, "wall_s": time.perf_counter() - start,
            "parameters": sum(p.numel() for p in model.parameters())}


def plot(data: dict, path: Path) -> None:
    """Test accuracy after each epoch against wall time, one line per framework."""
    from minivgg.plots import plot_accuracy_vs_time
    series = [(f"{name}, {len(result['epochs'])} epochs",
               [e["elapsed_s"] for e in result["epochs"]], [e["test_acc"] for e in result["epochs"]])
              for name, result in data["results"].items()]
    recipe = data["recipe"]
    plot_accuracy_vs_time(series, path, target=data["target"], time_limit=TARGET_S,
                          title=f"{recipe['name']} ({recipe['model']}, batch {recipe['batch_size']}, "
                                f"{data['threads']} threads): test accuracy against training time")


def render(tta: dict) -> list:
    """The time-to-accuracy table of BENCHMARKS.md's speed section, from a time_to_accuracy JSON."""
    recipe = tta["recipe"]
    lines = [f"### Time to {100 * tta['target']:.1f}% MNIST test accuracy", "",
             f"`{tta['command']}` on {tta['date']}: recipe `{recipe['name']}` (model "
             f"{recipe['model']}, batch {recipe['batch_size']}, at most {tta['max_epochs']} "
             f"epochs, {tta['threads']} threads; {tta['train_images']:,} training and "
             f"{tta['test_images']:,} test images). Wall time from the start of training to the "
             f"end of the first epoch whose test accuracy reaches the target, evaluation "
             f"included; the same recipe, initial weights and batches in a plain PyTorch loop. "
             f"Target: under {TARGET_S:.0f} s for minivgg.", "",
             "| framework | parameters | reached at epoch | test accuracy | wall time | target |",
             "|---|---:|---:|---:|---:|:---:|"]
    for framework, result in tta["results"].items():
        reached = result["reached"]
        if reached:
            cells = (f"{reached['epoch']} | {reached['test_acc']:.4f} | "
                     f"{reached['elapsed_s']:.1f} s")
            ok = reached["elapsed_s"] < TARGET_S
        else:
            best = max((e["test_acc"] for e in result["epochs"]), default=float("nan"))
            cells = f"not reached | best {best:.4f} | {result['wall_s']:.1f} s"
            ok = False
        mark = ("✓" if ok else "✗") if framework == "minivgg" else "–"
        lines.append(f"| {framework} | {result['parameters']:,} | {cells} | {mark} |")
    if tta.get("figure"):
        lines += ["", f"Figure: [test accuracy against wall time, both frameworks]({tta['figure']})."]
    return lines


def figure_path(json_path: Path) -> Path:
    return Path(json_path).with_suffix(".png")


# ---- main ------------------------------------------------------------------------------------

def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--recipe", default="mnist_5k_plus", help="named recipe (default mnist_5k_plus)")
    common.add_set_option(p)
    p.add_argument("--target", type=float, default=0.994, help="test accuracy to reach (default 0.994)")
    p.add_argument("--max-epochs", type=int, help="give up after this many epochs (default: the recipe's)")
    p.add_argument("--frameworks", nargs="+", choices=["minivgg", "torch"], default=["minivgg", "torch"])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--data-dir", help="default $MINIVGG_DATA, else the per-user cache")
    p.add_argument("--limit-train", type=int, help="use only the first N training images (smoke tests)")
    p.add_argument("--limit-test", type=int, help="use only the first N test images (smoke tests)")
    p.add_argument("--json", type=Path, default=DEFAULT_JSON)
    p.add_argument("--markdown", type=Path, default=common.BENCHMARKS_MD,
                   help="whose speed section is regenerated when --json is the default")
    p.add_argument("--no-markdown", action="store_true", help="do not touch the markdown file")
    p.add_argument("--plot-only", action="store_true",
                   help="train nothing: redraw the figure from the existing --json file")
    args = p.parse_args(argv)
    if args.plot_only:
        if not args.json.exists():
            raise SystemExit(f"--plot-only: {args.json} does not exist; run without --plot-only "
                             f"first to measure")
        plot(json.loads(args.json.read_text()), figure_path(args.json))
        print(f"wrote {figure_path(args.json)}")
        return 0

    try:
        recipe = get_recipe(args.recipe).with_changes(**common.parse_set(args.set))
    except ValueError as err:
        raise SystemExit(f"--set: {err}") from None
    if recipe.iters:
        raise SystemExit(f"recipe {recipe.name} is iteration-based; time to accuracy needs epochs")
    epochs = args.max_epochs or recipe.epochs
    setup = Setup(recipe, args.data_dir, args.limit_train, args.limit_test)
    parameters = setup.model().num_parameters()
    if parameters >= PARAMETER_LIMIT:
        print(f"note: {recipe.model} has {parameters:,} parameters, not under {PARAMETER_LIMIT:,}")
    print(f"recipe {recipe.name}: {recipe.model} ({parameters:,} parameters), batch "
          f"{recipe.batch_size}, up to {epochs} epochs, target {args.target}; data loaded in "
          f"{setup.load_s:.1f}s; {len(setup.train[1]):,} train / {len(setup.test[1]):,} test images")
    results = {}
    for framework in args.frameworks:
        if framework == "minivgg":
            results[framework] = run_minivgg(setup, args.target, epochs, print)
        else:
            results[framework] = run_torch(setup, args.target, epochs, print, args.threads)
        reached = results[framework]["reached"]
        print(f"{framework}: " + (f"{args.target} reached at epoch {reached['epoch']} after "
                                  f"{reached['elapsed_s']:.1f}s" if reached else
                                  f"{args.target} not reached in {epochs} epochs "
                                  f"({results[framework]['wall_s']:.1f}s)"))
    data = {"command": " ".join(["python benchmarks/time_to_accuracy.py", *map(shlex.quote, argv)]),
            "date": _dt.datetime.now().isoformat(timespec="seconds"),
            "recipe": recipe.to_dict(), "target": args.target, "max_epochs": epochs,
            "threads": args.threads, "train_images": int(len(setup.train[1])),
            "test_images": int(len(setup.test[1])), "data_load_s": setup.load_s,
            "loadavg_end": list(os.getloadavg()), **git_state(), "machine": machine(),
            "results": results}
    common.write_json(args.json, data)
    plot(data, figure_path(args.json))
    print(f"wrote {args.json} and {figure_path(args.json)}")
    speed_json = DEFAULT_JSON.parent / "speed.json"
    if not args.no_markdown and args.json.resolve() == DEFAULT_JSON.resolve() and speed_json.exists():
        import speed
        common.MarkedSection(speed.SECTION, args.markdown).write(speed.section_from_files(speed_json))
        print(f"regenerated the speed section of {args.markdown}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
