"""One training run from a Recipe: builds the pieces, owns the run directory.

A run directory (never overwritten) holds config.json, train.log, metrics.csv,
curves.png, confusion.png, results.json (the run record: minivgg.run_record),
model.safetensors (final weights, torch names),
checkpoints/last.resume.safetensors (everything needed to continue with --resume) and,
with a validation split, checkpoints/best.safetensors (the best validation epoch's weights).
"""
from __future__ import annotations

import csv
import datetime as _dt
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import checkpoint, metrics, nn, optim, plots
from .data import DATASETS, DataLoader, get_dataset_info, is_image_folder, load_dataset, train_val_split
from .data.folders import open_image_folder
from .data import transforms as T
from .fsutil import atomic_write_path
from .models import Recipe, build, get_model_spec
from .optim import lr_scheduler
from .run_record import RunRecord
from .train import Callback, Trainer, TrainingDiverged
from .whitening import init_patch_whitening_

RESUME_NAME = "last.resume.safetensors"
BEST_NAME = "best.safetensors"


@dataclass
class RunResult:
    run_dir: Path
    history: list
    test_acc: float | None
    test_loss: float | None
    wall_time: float
    stopped_early: bool


# ---- building blocks from a recipe ---------------------------------------------------------
def param_groups(recipe: Recipe, model) -> list:
    """The model's parameters as the optimizer takes them: all of them, or, with a
    norm_lr_scale, the trainable ones in two groups, normalisation layers' with that LR
    multiplier and the weight decay divided by it (the same decay per step)."""
    if recipe.norm_lr_scale == 1:
        return list(model.parameters())
    norm_layers = (nn.BatchNorm1d, nn.BatchNorm2d, nn.LayerNorm)
    norm = {id(p) for m in model.modules() if isinstance(m, norm_layers) for p in m.parameters()}
    trainable = [p for p in model.parameters() if p.requires_grad]
    return [{"params": [p for p in trainable if id(p) not in norm]},
            {"params": [p for p in trainable if id(p) in norm], "lr": recipe.lr * recipe.norm_lr_scale,
             "weight_decay": recipe.weight_decay / recipe.norm_lr_scale}]


def make_lookahead(recipe: Recipe, optimizer, model, steps_per_epoch: int):
    """The recipe's Lookahead around `optimizer` (BatchNorm statistics averaged too), or
    `optimizer` itself when it has none."""
    if not recipe.lookahead:
        return optimizer
    total = recipe.iters if recipe.iters else recipe.epochs * steps_per_epoch
    k, rho, power = recipe.lookahead, recipe.lookahead_rho, recipe.lookahead_pow

    def alpha(step):
        return 1 - rho ** k * min(step / total, 1.0) ** power

    buffers = [b for b in model.buffers() if b.dtype.kind == "f"]
    return optim.Lookahead(optimizer, k=k, alpha=alpha,
                           start=recipe.lookahead_start * steps_per_epoch, buffers=buffers)


def make_optimizer(recipe: Recipe, params):
    kind = recipe.optimizer.lower()
    if kind == "sgd":
        return optim.SGD(params, lr=recipe.lr, momentum=recipe.momentum, nesterov=recipe.nesterov,
                         weight_decay=recipe.weight_decay)
    if kind == "adam":
        return optim.Adam(params, lr=recipe.lr, betas=tuple(recipe.betas), weight_decay=recipe.weight_decay)
    if kind == "adamw":
        return optim.AdamW(params, lr=recipe.lr, betas=tuple(recipe.betas), weight_decay=recipe.weight_decay)
    raise ValueError(f"unknown optimizer {recipe.optimizer!r}; valid: sgd, adam, adamw")


def make_scheduler(recipe: Recipe, optimizer, steps_per_epoch: int):
    """(scheduler or None, stepped_per_batch)."""
    kind = recipe.schedule.lower()
    total_steps = recipe.iters if recipe.iters else recipe.epochs * steps_per_epoch
    if kind == "none":
        return None, True
    if kind == "step":
        return lr_scheduler.StepLR(optimizer, step_size=recipe.step_size, gamma=recipe.gamma), False
    if kind == "multistep":
        return lr_scheduler.MultiStepLR(optimizer, milestones=list(recipe.milestones), gamma=recipe.gamma), False
    if kind == "onecycle":
        return lr_scheduler.OneCycleLR(
            optimizer, max_lr=recipe.max_lr or recipe.lr, total_steps=total_steps,
            pct_start=recipe.pct_start, anneal_strategy=recipe.anneal_strategy,
            div_factor=recipe.div_factor, final_div_factor=recipe.final_div_factor), True
    if kind == "cosine":
        return lr_scheduler.CosineAnnealingLR(optimizer, T_max=total_steps), True
    if kind == "inverse_time":
        return lr_scheduler.InverseTimeLR(optimizer, decay=recipe.decay), True
    if kind == "triangle":
        peak = int(recipe.pct_start * total_steps)
        if not 0 < peak < total_steps:
            raise ValueError(f"triangle schedule: pct_start {recipe.pct_start} puts the peak at "
                             f"step {peak} of {total_steps}; it must fall strictly inside")
        up = lr_scheduler.LinearLR(optimizer, start_factor=1 / recipe.div_factor, end_factor=1.0,
                                   total_iters=peak)
        down = lr_scheduler.LinearLR(optimizer, start_factor=1.0, end_factor=recipe.end_factor,
                                     total_iters=total_steps - peak)
        return lr_scheduler.SequentialLR(optimizer, [up, down], milestones=[peak]), True
    raise ValueError(f"unknown schedule {recipe.schedule!r}; valid: none, step, multistep, onecycle, "
                     f"cosine, inverse_time, triangle")


def make_transform(recipe: Recipe):
    steps = []
    for spec in recipe.augment:
        spec = dict(spec)
        name = spec.pop("name", None)
        cls = getattr(T, str(name), None)
        if not isinstance(cls, type):
            raise ValueError(f"unknown augmentation {name!r} in recipe {recipe.name!r}")
        steps.append(cls(**spec))
    return T.Compose(steps) if steps else None


def make_train_loader(recipe: Recipe, images, labels, normalize) -> DataLoader:
    """The recipe's shuffled, augmented training batches (seeded by the recipe)."""
    return DataLoader(images, labels, batch_size=recipe.batch_size, shuffle=True, seed=recipe.seed,
                      drop_last=recipe.drop_last, transform=make_transform(recipe), normalize=normalize,
                      transform_epochs=recipe.augment_epochs)


def _has_val_folder(recipe: Recipe) -> bool:
    return (recipe.dataset not in DATASETS and is_image_folder(recipe.dataset)
            and "val" in open_image_folder(recipe.dataset, **folder_options(recipe)).splits)


def validate_recipe(recipe: Recipe) -> None:
    problems = []
    if recipe.batch_size < 1:
        problems.append(f"batch size must be at least 1 (got {recipe.batch_size})")
    if recipe.lr <= 0:
        problems.append(f"learning rate must be positive (got {recipe.lr})")
    if recipe.iters is None and (recipe.epochs is None or recipe.epochs < 1):
        problems.append(f"epochs must be at least 1 (got {recipe.epochs})")
    if recipe.iters is not None and recipe.iters < 1:
        problems.append(f"iters must be at least 1 (got {recipe.iters})")
    if not 0 <= recipe.val_fraction < 1:
        problems.append(f"val fraction must be in [0, 1) (got {recipe.val_fraction})")
    if recipe.patience and recipe.val_fraction <= 0 and not _has_val_folder(recipe):
        problems.append("early stopping (patience) needs a validation split (val_fraction > 0, "
                        "or an image folder with val/): "
                        "it never looks at the test set")
    if recipe.augment_epochs is not None and recipe.augment_epochs < 0:
        problems.append(f"augment_epochs must be 0 or more, or None for every epoch "
                        f"(got {recipe.augment_epochs})")
    for name in ("tta_shift", "tta_translate", "whiten_images", "lookahead", "lookahead_start"):
        value = getattr(recipe, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            unit = " of pixels" if name.startswith("tta") else ""
            problems.append(f"{name} must be a whole number{unit}, 0 or more (got {value!r})")
    if recipe.tta_shift and recipe.tta_translate:
        problems.append("give tta_shift or tta_translate, not both")
    if not recipe.norm_lr_scale > 0:
        problems.append(f"norm_lr_scale must be positive (got {recipe.norm_lr_scale})")
    if recipe.schedule == "triangle" and not (recipe.div_factor >= 1 and 0 <= recipe.end_factor <= 1):
        problems.append(f"the triangle schedule needs div_factor >= 1 and end_factor in [0, 1] "
                        f"(got {recipe.div_factor}, {recipe.end_factor})")
    if problems:
        raise ValueError(f"recipe {recipe.name!r}: " + "; ".join(problems))


# ---- resume checkpoints ----------------------------------------------------------------------
def save_trainer_checkpoint(path, trainer, metadata: dict) -> None:
    """Everything `Trainer.load_state_dict` needs to continue exactly, as one safetensors file."""
    state = trainer.state_dict()
    checkpoint.save_resume(path, model=state["model"], optimizer=state["optimizer"],
                           scheduler=state["scheduler"], ema_state=state["ema"],
                           loop_state={"loop": state["loop"], "rng": state["rng"], "best": state["best"]},
                           metadata=metadata)


def load_trainer_checkpoint(path) -> tuple[dict, dict]:
    """(state for Trainer.load_state_dict, the run's metadata)."""
    saved = checkpoint.load_resume(path)
    if "recipe" not in saved["metadata"]:
        raise checkpoint.CheckpointError(f"{path}: this resume checkpoint has no recipe in its "
                                         f"metadata; it was not written by `minivgg train`")
    state = {"model": saved["model"], "optimizer": saved["optimizer"], "scheduler": saved["scheduler"],
             "ema": saved["ema"], **saved["loop_state"]}
    return state, saved["metadata"]


# ---- the run directory ----------------------------------------------------------------------
def new_run_dir(out: str | os.PathLike, name: str) -> Path:
    root = Path(out)
    root.mkdir(parents=True, exist_ok=True)
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    for k in range(1000):
        path = root / (f"{name}-{stamp}" if k == 0 else f"{name}-{stamp}-{k}")
        try:
            path.mkdir()
            return path
        except FileExistsError:
            continue
    raise RuntimeError(f"could not create a new run directory under {root}")


def write_json(path: Path, obj) -> None:
    with atomic_write_path(path) as tmp:
        Path(tmp).write_text(json.dumps(obj, indent=2) + "\n")


def write_metrics_csv(path: Path, history: list) -> None:
    if not history:
        return
    fields = list(history[0])
    with atomic_write_path(path) as tmp:
        with open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=fields)
            writer.writeheader()
            for row in history:
                writer.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in fields})


def write_csv(path: Path, header: list, rows: list) -> None:
    with atomic_write_path(path) as tmp:
        with open(tmp, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(header)
            writer.writerows(rows)


class RunLog:
    """Prints a line and appends it to train.log (through tqdm so bars stay intact)."""

    def __init__(self, path: Path, echo=True):
        self.path, self.echo = path, echo

    def __call__(self, line: str) -> None:
        if self.echo:
            from tqdm.auto import tqdm
            tqdm.write(line)
        with open(self.path, "a") as f:
            f.write(line + "\n")


class RunFiles(Callback):
    """The run directory's files: metrics, curves and the resume checkpoint as the run goes;
    at its end the final weights, the confusion matrix and results.json (the run's
    RunRecord, which `record` holds)."""

    def __init__(self, run_dir: Path, metadata: dict, log, record: RunRecord, test_labels=None):
        self.run_dir, self.metadata, self.log = run_dir, metadata, log
        self.record, self.test_labels = record, test_labels
        self.resume_path = run_dir / "checkpoints" / RESUME_NAME
        self.best_path = run_dir / "checkpoints" / BEST_NAME
        self.resume_path.parent.mkdir(exist_ok=True)
        self.start = None

    def save_resume(self, trainer) -> None:
        save_trainer_checkpoint(self.resume_path, trainer, self.metadata)

    def write_curves(self, trainer) -> None:
        st = trainer.state
        write_metrics_csv(self.run_dir / "metrics.csv", st.history)
        if st.iter_log:
            write_csv(self.run_dir / "iterations.csv", ["iteration", "loss", "step_ms"], st.iter_log)
            iters = [row[0] for row in st.iter_log]
            plots.plot_iteration_loss(iters, [row[1] for row in st.iter_log], self.run_dir / "loss.png")
        if st.history:
            plots.plot_curves(st.history, self.run_dir / "curves.png", title=self.metadata["recipe"]["name"])

    def save_weights(self, trainer, path, metadata: dict) -> None:
        """The weights evaluation scores (the EMA's when there is one) as a model file."""
        if trainer.ema is not None:
            with trainer.ema.swapped_in():
                checkpoint.save_weights(path, trainer.model, metadata)
        else:
            checkpoint.save_weights(path, trainer.model, metadata)

    def save_best(self, trainer, record) -> None:
        """checkpoints/best.safetensors: the weights of the best validation epoch so far, a
        model file like model.safetensors (load_model, eval, predict take it)."""
        self.save_weights(trainer, self.best_path, dict(
            self.metadata, epoch=record["epoch"], iteration=record["iteration"],
            val_loss=record["val_loss"], val_acc=record["val_acc"], ema=trainer.ema is not None))

    def on_train_begin(self, trainer):
        self.start = time.perf_counter()

    def on_epoch_end(self, trainer, record):
        if record["val_loss"] is not None and trainer.state.best_epoch == record["epoch"]:
            self.save_best(trainer, record)
        self.save_resume(trainer)
        self.write_curves(trainer)

    def on_interrupt(self, trainer):
        self.save_resume(trainer)
        self.write_curves(trainer)
        self.log(f"interrupted at epoch {trainer.state.epoch + 1}, iteration {trainer.state.iteration}; "
                 f"resume with: minivgg train --resume {self.resume_path}")

    def on_diverged(self, trainer):
        self.write_curves(trainer)
        self.log(f"the last good checkpoint is {self.resume_path}" if self.resume_path.exists()
                 else "no checkpoint was written before the loss diverged")

    def on_train_end(self, trainer):
        wall = time.perf_counter() - self.start
        st, final = trainer.state, trainer.last_test
        self.save_weights(trainer, self.run_dir / "model.safetensors", dict(
            self.metadata, epoch=st.epoch, iteration=st.iteration,
            test_acc=final["acc"] if final else None, ema=trainer.ema is not None))
        per_class = None
        if final is not None:
            classes = self.metadata["class_names"]
            matrix = metrics.confusion_matrix(self.test_labels, final["predictions"], len(classes))
            plots.plot_confusion_matrix(matrix, classes, self.run_dir / "confusion.png")
            per_class = (np.diag(matrix) / np.maximum(matrix.sum(axis=1), 1)).tolist()
        self.record.end(st, num_parameters=trainer.model.num_parameters(), wall_time_s=wall,
                        final=final, per_class_test_acc=per_class)
        self.record.write(self.run_dir / "results.json")
        if final is not None:
            self.log(f"final test accuracy {final['acc']:.4f} (loss {final['loss']:.4f}) after "
                     f"{st.epoch} epoch(s), {st.iteration} iterations, {wall:.1f}s")
        self.log(f"wrote {self.run_dir}: model.safetensors, results.json, metrics.csv, curves.png, "
                 f"{'confusion.png, ' if final is not None else ''}train.log")


# ---- the run ----------------------------------------------------------------------------------
def folder_options(recipe: Recipe) -> dict:
    """How an image-folder dataset is read for `recipe` (no options for a registered dataset):
    resized to the recipe's image_size, else to the side the model is laid out for, if any."""
    if recipe.dataset in DATASETS or not is_image_folder(recipe.dataset):
        return {}
    return {"image_size": recipe.image_size or get_model_spec(recipe.model).fixed_size}


def dataset_info(recipe: Recipe):
    """The DatasetInfo of the recipe's dataset: a registered one or an image folder."""
    return get_dataset_info(recipe.dataset, **folder_options(recipe))


def load_split(recipe: Recipe, split: str, data_dir=None, download=False):
    """(uint8 images, labels) of one split of the recipe's dataset."""
    return load_dataset(recipe.dataset, split, data_dir=data_dir, download=download,
                        **folder_options(recipe))


def make_trainer(recipe: Recipe, train_data, test_data=None, val_data=None, model_options=None,
                 **kwargs) -> Trainer:
    """The net, optimizer, loader, schedule and Trainer that `recipe` describes, ready to fit on
    `train_data` (uint8 images, labels); `model_options` go to the model's builder (e.g. other
    widths), `kwargs` (progress, log, callbacks) to Trainer."""
    info = dataset_info(recipe)
    c, h, _ = info.shape
    model = build(recipe.model, in_channels=c, num_classes=len(info.classes), image_size=h,
                  seed=recipe.seed, **(model_options or {}))
    normalize = (info.mean, info.std)
    if recipe.whiten_images:
        first = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
        images = train_data[0][:recipe.whiten_images].astype(np.float32) / 255
        init_patch_whitening_(first, T.Normalize(*normalize)(images), eps=recipe.whiten_eps)
    optimizer = make_optimizer(recipe, param_groups(recipe, model))
    loader = make_train_loader(recipe, *train_data, normalize)
    scheduler, per_batch = make_scheduler(recipe, optimizer, len(loader))
    optimizer = make_lookahead(recipe, optimizer, model, len(loader))
    return Trainer(model, optimizer, loader, scheduler=scheduler, schedule_per_batch=per_batch,
                   test_data=test_data, val_data=val_data, normalize=normalize,
                   epochs=None if recipe.iters else recipe.epochs, iters=recipe.iters,
                   label_smoothing=recipe.label_smoothing, grad_clip=recipe.grad_clip,
                   ema=recipe.ema, tta_flip=recipe.tta_flip, tta_shift=recipe.tta_shift,
                   tta_translate=recipe.tta_translate, tta_final_only=recipe.tta_final_only,
                   train_epochs_of=dict(recipe.train_epochs_of),
                   patience=recipe.patience, log_every=recipe.log_every,
                   eval_every=recipe.eval_every, **kwargs)


def run_recipe(recipe: Recipe, *, data_dir=None, out="runs", resume=None, download=False,
               progress=None, echo=True, test_set=True, train_subset=None, callbacks=()) -> RunResult:
    """Train `recipe` end to end; returns where everything was written and the final figures.

    `test_set=False` never loads the test set (a recipe search scores on its validation split);
    `train_subset` trains on the first N training images only (before the validation split);
    `callbacks` are added to the Trainer's after the run files' own."""
    resume_state = None
    if resume is not None:
        resume_state, saved_metadata = load_trainer_checkpoint(resume)
        recipe = Recipe.from_dict(saved_metadata["recipe"])
        run_dir = Path(resume).resolve().parent.parent
    validate_recipe(recipe)
    info = dataset_info(recipe)
    train_images, train_labels = load_split(recipe, "train", data_dir, download)
    if train_subset is not None:
        train_images, train_labels = train_images[:train_subset], train_labels[:train_subset]
    test_data = load_split(recipe, "test", data_dir, download) if test_set else None
    val_data = None
    notes = []
    if _has_val_folder(recipe):
        val_data = load_split(recipe, "val")
        if recipe.val_fraction > 0:
            notes.append(f"validating on {recipe.dataset}/val; the recipe's val_fraction "
                         f"{recipe.val_fraction:.3g} is not used")
    elif recipe.val_fraction > 0:
        (train_images, train_labels), val_data = train_val_split(
            train_images, train_labels, val_fraction=recipe.val_fraction, seed=recipe.seed)

    trainer = make_trainer(recipe, (train_images, train_labels), test_data, val_data, progress=progress)
    model = trainer.model

    if resume is None:
        run_dir = new_run_dir(out, recipe.name)
    log = trainer.log = RunLog(run_dir / "train.log", echo=echo)
    record = RunRecord.begin(recipe, run_dir=str(run_dir))
    metadata = {
        "format": "minivgg-run", "recipe": recipe.to_dict(), "model": recipe.model,
        "dataset": recipe.dataset, "num_classes": len(info.classes), "class_names": list(info.classes),
        "input_shape": list(info.shape),
        "mean": list(info.mean), "std": list(info.std),
        "num_parameters": model.num_parameters(), "git_commit": record.git_commit,
        "machine": record.machine,
    }
    if resume is None:
        write_json(run_dir / "config.json", metadata)
    trainer.callbacks.append(RunFiles(run_dir, metadata, log, record,
                                      test_data[1] if test_data else None))
    trainer.callbacks.extend(callbacks)
    if resume_state is not None:
        trainer.load_state_dict(resume_state)
        log(f"resumed {recipe.name} from {resume} at epoch {trainer.state.epoch}, "
            f"iteration {trainer.state.iteration}")
    else:
        log(f"run {run_dir}: recipe {recipe.name} ({recipe.description}); model {recipe.model} "
            f"with {model.num_parameters():,} parameters; {len(train_labels):,} training images of "
            f"{recipe.dataset}")
    for note in notes:
        log(note)

    trainer.fit()
    return RunResult(run_dir, record.history, record.final_test_acc, record.final_test_loss,
                     record.wall_time_s, record.stopped_early)


__all__ = ["run_recipe", "RunResult", "make_trainer", "make_optimizer", "make_scheduler", "make_transform",
           "make_train_loader", "new_run_dir", "TrainingDiverged"]
