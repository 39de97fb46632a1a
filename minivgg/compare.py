"""Compare finished (or running) training runs: one overlay figure and a table of figures.

A run is either a run directory written by `minivgg train` / `run_recipe` (results.json,
else metrics.csv + config.json while it is still training) or one run record's JSON file
(minivgg.run_record: a results.json, or a result of `benchmarks/accuracy.py`). The overlay is
`plots.plot_compare` (train/test loss and accuracy per epoch); runs counted in iterations
also get a second figure, `<out>-iterations.png`, of their training loss per iteration,
because their per-epoch curves have only one or two points.

    runs = compare_runs(["runs/a", "runs/b"], "compare.png", labels=["a", "b"])
    print(format_table(runs))
"""
from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from . import plots
from .fsutil import atomic_write_path
from .run_record import RunRecord, iteration_loss_curve


@dataclass
class RunSummary:
    """What a comparison needs from one run."""
    label: str
    path: Path
    recipe: str | None
    dataset: str | None
    iteration_based: bool
    epochs_run: int
    iterations: int | None
    final_test_acc: float | None     # after the last epoch/iteration: the figure we report
    best_test_acc: float | None      # best epoch on the test set: for reference only
    best_epoch: int | None
    wall_time_s: float | None
    finished: bool                   # False: read from metrics.csv of a run still going
    history: list = field(repr=False, default_factory=list)
    iteration_loss: tuple | None = field(repr=False, default=None)   # (iterations, losses)


# ---- loading -----------------------------------------------------------------------------------
def read_iteration_log(run_dir) -> list:
    """The per-iteration [iteration, loss, ms] rows of a run directory's iterations.csv;
    [] when the run was counted in epochs."""
    path = Path(run_dir) / "iterations.csv"
    if not path.is_file():
        return []
    rows = _read_metrics_csv(path)
    return [[row["iteration"], row["loss"], row["step_ms"]] for row in rows]


def _number(text: str):
    if text == "":
        return None
    try:
        value = float(text)
    except ValueError:
        return text
    return int(value) if value.is_integer() and "." not in text and "e" not in text.lower() else value


def _read_metrics_csv(path: Path) -> list:
    with open(path, newline="") as f:
        return [{key: _number(value) for key, value in row.items()} for row in csv.DictReader(f)]


def _read_json(path: Path, what: str) -> dict:
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: {what} is not valid JSON ({err}); the file is damaged") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: {what} must hold a JSON object")
    return data


def _best(history: list) -> tuple[float | None, int | None]:
    scored = [(row["test_acc"], row.get("epoch", i + 1)) for i, row in enumerate(history)
              if isinstance(row.get("test_acc"), (int, float))]
    if not scored:
        return None, None
    best_acc = max(acc for acc, _ in scored)
    return best_acc, next(epoch for acc, epoch in scored if acc == best_acc)


def _summary(label, path, results: dict, history: list, iteration_loss, finished: bool) -> RunSummary:
    recipe = results.get("recipe")
    recipe_config = results.get("recipe_config") or {}
    iterations = results.get("iterations")
    iteration_based = bool(recipe_config.get("iters")) if recipe_config else bool(iteration_loss)
    best_acc, best_epoch = _best(history)
    return RunSummary(label=label, path=Path(path), recipe=recipe if isinstance(recipe, str) else None,
                      dataset=results.get("dataset"), iteration_based=iteration_based,
                      epochs_run=results.get("epochs_run") or len(history), iterations=iterations,
                      final_test_acc=results.get("final_test_acc"), best_test_acc=best_acc,
                      best_epoch=best_epoch, wall_time_s=results.get("wall_time_s"),
                      finished=finished, history=history, iteration_loss=iteration_loss)


def _load_run_dir(path: Path, label: str) -> RunSummary:
    config = _read_json(path / "config.json", "config.json") if (path / "config.json").is_file() else {}
    iter_log = read_iteration_log(path)
    iteration_loss = iteration_loss_curve(iter_log) if iter_log else None
    if (path / "results.json").is_file():
        results = _read_json(path / "results.json", "results.json")
        history = results.get("history") or []
        results = dict(results, recipe_config=config.get("recipe", {}))
        return _summary(label, path, results, history, iteration_loss, finished=True)
    history = _read_metrics_csv(path / "metrics.csv")
    recipe = config.get("recipe", {})
    last = history[-1] if history else {}
    results = {"recipe": recipe.get("name"), "recipe_config": recipe, "dataset": config.get("dataset"),
               "epochs_run": len(history), "iterations": last.get("iteration"),
               "final_test_acc": last.get("test_acc"),
               "wall_time_s": round(sum(row.get("time") or 0 for row in history), 2)}
    return _summary(label, path, results, history, iteration_loss, finished=False)


def _load_record_json(path: Path, label: str) -> RunSummary:
    results = RunRecord.read(path).to_dict()
    curve = results["train_loss_by_iteration"]
    iteration_loss = (curve["iterations"], curve["loss"]) if curve else None
    return _summary(label, path, results, results["history"], iteration_loss,
                    finished=results["status"] == "completed")


def load_run(path, label: str | None = None) -> RunSummary:
    """Read one run: a run directory (results.json, or metrics.csv while it trains) or a
    run record's JSON file."""
    path = Path(os.fspath(path))
    label = label or (path.stem if path.is_file() else path.name)
    if path.is_file() and path.suffix == ".json":
        return _load_record_json(path, label)
    if not path.is_dir():
        raise ValueError(f"{path}: no such run directory (give folders written by `minivgg train`, "
                         f"such as runs/mnist_5k-20261122-193000)")
    if not (path / "results.json").is_file() and not (path / "metrics.csv").is_file():
        raise ValueError(f"{path} is not a run directory: it has neither results.json nor "
                         f"metrics.csv (give folders written by `minivgg train`, after at least "
                         f"one epoch)")
    return _load_run_dir(path, label)


# ---- figures and table -------------------------------------------------------------------------
def iterations_figure_path(out) -> Path:
    out = Path(os.fspath(out))
    return out.with_name(f"{out.stem}-iterations{out.suffix or '.png'}")


def plot_iteration_losses(runs: list, path, title: str | None = None) -> None:
    """Overlay the window-averaged training loss per iteration of the runs that have one."""
    figure = Figure(figsize=(9, 5), dpi=110, layout="constrained")
    FigureCanvasAgg(figure)
    ax = figure.subplots()
    for i, run in enumerate(runs):
        if not run.iteration_loss or not run.iteration_loss[0]:
            continue
        iterations, losses = run.iteration_loss
        ax.plot(iterations, losses, color=f"C{i % 10}", linewidth=1.6,
                label=f"{run.label} (last {losses[-1]:.4g})")
    ax.set_xlabel("iteration")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel("training loss (window mean)")
    ax.set_title(title or "training loss per iteration")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="small")
    with atomic_write_path(path) as temp:
        figure.savefig(temp, format=Path(os.fspath(path)).suffix.lstrip(".") or "png", dpi=110)


def compare_runs(paths, out="compare.png", labels=None, title: str | None = None) -> list:
    """Load the runs, write the overlay figure to `out` (and `<out>-iterations.png` when
    some runs are counted in iterations); returns their RunSummary list."""
    paths = list(paths)
    if not paths:
        raise ValueError("compare: give at least one run directory")
    if labels is not None:
        labels = list(labels)
        if len(labels) != len(paths):
            raise ValueError(f"compare: {len(labels)} labels for {len(paths)} runs; give one label "
                             f"per run, comma-separated")
    runs = [load_run(p, labels[i] if labels else None) for i, p in enumerate(paths)]
    for run in runs:
        if not run.history:
            raise ValueError(f"{run.path}: the run has no finished epoch yet; nothing to compare")
    plots.plot_compare([(run.label, run.history) for run in runs], out, title=title)
    if any(run.iteration_loss and run.iteration_loss[0] for run in runs):
        plot_iteration_losses(runs, iterations_figure_path(out), title=title)
    return runs


def _acc(value) -> str:
    return "-" if value is None else f"{value:.4f}"


def format_duration(seconds) -> str:
    """Seconds as "12.5 s", "3.2 min" or "1.50 h"."""
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.2f} h"


def format_table(runs: list) -> str:
    """Plain-text table: label, recipe, length, final test acc, best test acc, wall time."""
    header = ["label", "recipe", "trained", "final test acc", "best test acc (epoch)*", "wall time"]
    rows = []
    for run in runs:
        trained = (f"{run.iterations} iters" if run.iteration_based else f"{run.epochs_run} epochs")
        if not run.finished:
            trained += " (running)"
        best = "-" if run.best_test_acc is None else f"{run.best_test_acc:.4f} ({run.best_epoch})"
        rows.append([run.label, run.recipe or "-", trained, _acc(run.final_test_acc), best,
                     format_duration(run.wall_time_s)])
    widths = [max(len(r[i]) for r in [header] + rows) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip()
             for row in [header] + rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    lines.append("* best epoch on the test set, for reference only: the final figure is the result")
    return "\n".join(lines)


__all__ = ["RunSummary", "load_run", "compare_runs", "format_table", "read_iteration_log",
           "format_duration", "plot_iteration_losses", "iterations_figure_path"]
