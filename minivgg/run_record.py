"""The record of one training run: one format wherever a finished run is kept.

`minivgg train` writes it as results.json in the run directory (experiment.RunFiles);
benchmarks/accuracy.py keeps one per run under benchmarks/results/accuracy/, the same record
with the command that ran it; `minivgg compare` and the BENCHMARKS.md tables read it.

    record = RunRecord.begin(recipe)             # what is trained, by which code, where
    ...train...
    record.end(trainer.state, final=..., wall_time_s=...)   # how it went
    record.write(run_dir / "results.json")
    record = RunRecord.read(path)

The final epoch's (or final iteration's) figures are the result; the best epoch on the test
set is kept beside them for reference only, never to judge a run.
"""
from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import math
import os
import platform
import statistics
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .fsutil import atomic_write_path

FORMAT = "minivgg-run-record"
VERSION = 1
CURVE_POINTS = 200   # an iteration-loss curve is averaged down to about this many points


@dataclass
class RunRecord:
    """Every field has a default, so that a record written before a field existed still reads
    (the field as its default); `begin` and `end` fill them all in."""
    # what was trained
    recipe: str | None = None            # the recipe's name
    recipe_config: dict | None = None    # every field of the recipe as trained (Recipe.to_dict())
    changes: dict | None = None          # fields that differ from the registered recipe of that
    #                                      name (None: no recipe of that name is registered)
    model: str | None = None
    dataset: str | None = None
    seed: int | None = None
    batch_size: int | None = None
    unit: str | None = None              # "epochs" or "iterations": what the recipe counts
    # how it went
    status: str = "running"              # "completed", or "diverged" (error says how)
    error: str | None = None
    num_parameters: int | None = None
    epochs_run: int | None = None
    iterations: int | None = None
    stopped_early: bool | None = None
    restored_epoch: int | None = None    # whose weights early stopping restored at the end
    final_test_acc: float | None = None
    final_test_loss: float | None = None
    per_class_test_acc: list | None = None
    best_epoch_test_acc: float | None = None   # for reference only
    best_epoch: int | None = None
    mean_last3_test_acc: float | None = None   # None for iteration runs and under 3 epochs
    min_last3_test_acc: float | None = None
    wall_time_s: float | None = None     # training and evaluation, from fit() to its end
    images_per_s: float | None = None    # training images per second, evaluation excluded
    history: list = field(default_factory=list)     # the Trainer's row per epoch
    train_loss_by_iteration: dict | None = None     # {"iterations", "loss"}: window means
    # by which code, where, when
    git_commit: str | None = None
    git_dirty: bool | None = None
    machine: dict = field(default_factory=dict)
    started: str | None = None
    finished: str | None = None
    command: str | None = None           # the command line that produced the record, if any
    run_dir: str | None = None

    @classmethod
    def begin(cls, recipe, *, run_dir: str | None = None, command: str | None = None) -> RunRecord:
        """The record of a run of `recipe` about to start."""
        return cls(recipe=recipe.name, recipe_config=recipe.to_dict(), changes=recipe_changes(recipe),
                   model=recipe.model, dataset=recipe.dataset, seed=recipe.seed,
                   batch_size=recipe.batch_size, unit="iterations" if recipe.iters else "epochs",
                   **git_state(), machine=machine(), started=now(), command=command,
                   run_dir=run_dir)

    def end(self, state, *, num_parameters: int, wall_time_s: float, final: dict | None = None,
            per_class_test_acc: list | None = None) -> RunRecord:
        """Fill in how the run went from the Trainer's LoopState; `final` is the last test
        evaluation ({"acc", "loss"}), None without a test set."""
        self.status, self.finished = "completed", now()
        self.num_parameters, self.wall_time_s = num_parameters, round(wall_time_s, 2)
        self.epochs_run, self.iterations = state.epoch, state.iteration
        self.stopped_early, self.restored_epoch = state.stopped_early, state.restored_epoch or None
        self.history = list(state.history)
        for name, value in epoch_figures(self.history, self.unit == "iterations").items():
            setattr(self, name, value)
        if final is not None:   # after restore_best_weights, the restored epoch's score
            self.final_test_acc, self.final_test_loss = final["acc"], final["loss"]
        self.per_class_test_acc = per_class_test_acc
        self.images_per_s = images_per_second(self.history)
        iterations, losses = iteration_loss_curve(state.iter_log)
        self.train_loss_by_iteration = {"iterations": iterations, "loss": losses} if iterations else None
        return self

    def diverged(self, error: str) -> RunRecord:
        """A run whose loss diverged: a result too, which counts against its recipe's target."""
        self.status, self.error, self.finished = "diverged", error, now()
        return self

    def to_dict(self) -> dict:
        return {"format": FORMAT, "version": VERSION, **dataclasses.asdict(self)}

    def write(self, path) -> None:
        """As indented JSON, atomically (a temporary file renamed)."""
        with atomic_write_path(path) as tmp:
            Path(tmp).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def from_dict(cls, data: dict, where: str = "a run record") -> RunRecord:
        if data.get("format") != FORMAT:
            raise ValueError(f"{where}: not a run record (format {FORMAT!r}, as results.json of "
                             f"`minivgg train` and the results of benchmarks/accuracy.py), got format "
                             f"{data.get('format')!r}")
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    @classmethod
    def read(cls, path) -> RunRecord:
        try:
            data = json.loads(Path(path).read_text())
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}: not valid JSON ({err}); the file is damaged") from None
        if not isinstance(data, dict):
            raise ValueError(f"{path}: a run record must hold a JSON object")
        return cls.from_dict(data, str(path))


# ---- the figures ---------------------------------------------------------------------------
def epoch_figures(history: list, iteration_based: bool) -> dict:
    """Final, best (labelled), mean and min of the last 3 epochs' test accuracy."""
    accs = [row.get("test_acc") for row in history]
    scored = [(acc, row.get("epoch")) for acc, row in zip(accs, history) if acc is not None]
    best = max(scored, key=lambda pair: pair[0]) if scored else (None, None)
    last3 = accs[-3:]
    usable_last3 = not iteration_based and len(last3) == 3 and None not in last3
    return {
        "final_test_acc": accs[-1] if accs else None,
        "best_epoch_test_acc": best[0], "best_epoch": best[1],
        "mean_last3_test_acc": statistics.fmean(last3) if usable_last3 else None,
        "min_last3_test_acc": min(last3) if usable_last3 else None,
    }


def images_per_second(history: list) -> float | None:
    """Training images per second over the whole run (epoch times only, evaluation excluded)."""
    images = seconds = 0.0
    for row in history:
        if row.get("images_per_s") and row.get("time"):
            images += row["images_per_s"] * row["time"]
            seconds += row["time"]
    return round(images / seconds, 1) if seconds else None


def iteration_loss_curve(iter_log, points: int = CURVE_POINTS) -> tuple[list, list]:
    """Average an (iteration, loss, ms) log over consecutive windows: about `points` points.

    Each point is (last iteration of the window, mean loss over the window), so the curve
    is smooth without an exponential average's lag and small enough to keep in a JSON file.
    """
    rows = [row for row in iter_log if math.isfinite(float(row[1]))]
    if not rows:
        return [], []
    window = max(1, math.ceil(len(rows) / points))
    iterations, losses = [], []
    for start in range(0, len(rows), window):
        chunk = rows[start:start + window]
        iterations.append(int(chunk[-1][0]))
        losses.append(round(float(np.mean([row[1] for row in chunk])), 5))
    return iterations, losses


def recipe_changes(recipe) -> dict | None:
    """Fields in which `recipe` differs from the registered recipe of its name (None: none is
    registered under that name, e.g. a recipe read from a file)."""
    from .models import RECIPES

    if recipe.name not in RECIPES:
        return None
    base = RECIPES[recipe.name].to_dict()
    return {k: v for k, v in recipe.to_dict().items() if base.get(k) != v}


# ---- which code, which machine -------------------------------------------------------------
def now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _git(*args) -> str | None:
    try:
        out = subprocess.run(["git", *args], capture_output=True, text=True, timeout=10,
                             cwd=Path(__file__).resolve().parent)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def git_state() -> dict:
    """The commit of the checkout minivgg is imported from, and whether tracked files differ
    from it. A copy of the tree without .git (e.g. on a borrowed machine) names its commit in
    MINIVGG_GIT_COMMIT; its cleanliness is then unknown (None)."""
    commit = _git("rev-parse", "HEAD")
    if commit is not None:
        return {"git_commit": commit, "git_dirty": bool(_git("status", "--porcelain", "--untracked-files=no"))}
    return {"git_commit": os.environ.get("MINIVGG_GIT_COMMIT"), "git_dirty": None}


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def machine() -> dict:
    """What a time or a speed depends on: the CPU, how many cores the process may use, the
    Python and NumPy versions and the thread counts set in the environment."""
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {"platform": platform.platform(), "cpu": cpu_name(), "cpu_count": os.cpu_count(),
            "usable_cpus": usable, "python": platform.python_version(), "numpy": np.__version__,
            "threads": {k: os.environ[k] for k in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS",
                                                   "MKL_NUM_THREADS", "NUMBA_NUM_THREADS")
                        if k in os.environ}}


__all__ = ["RunRecord", "FORMAT", "epoch_figures", "images_per_second", "iteration_loss_curve",
           "recipe_changes", "git_state", "machine", "cpu_name"]
