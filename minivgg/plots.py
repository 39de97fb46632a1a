"""Training plots: per-epoch curves, iteration loss, confusion matrix, run comparison.

Figures are drawn with matplotlib's object API (`Figure` + the Agg canvas), never
through pyplot, so plotting leaves the user's pyplot state and backend untouched and
works without a display. Every file is written atomically (see fsutil).

A history is a list of per-epoch dicts such as
    {"epoch": 3, "train_loss": 0.21, "train_acc": 0.93, "val_loss": None,
     "test_loss": 0.18, "test_acc": 0.95, "lr": 0.01, "time": 41.2}
where any loss/accuracy key may be missing or None. Accuracies may be fractions or
percentages; the axes follow whichever the history uses.

Every plot function returns its Figure (a Jupyter cell shows it) and writes it to `path`
when one is given.
"""
from __future__ import annotations

import math
import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from .fsutil import atomic_write_path

SPLITS = ("train", "val", "test")
_SPLIT_COLORS = {"train": "C0", "val": "C2", "test": "C1"}
_FORMATS = {"": "png", ".png": "png", ".svg": "svg", ".pdf": "pdf"}
_DPI = 110
_MAX_MARKED_POINTS = 40      # beyond this many epochs, markers only clutter the lines
_MAX_ANNOTATED_CLASSES = 30  # beyond this, confusion-matrix cells are too small for text


# ---- shared helpers ---------------------------------------------------------------------

def _output_format(path) -> str:
    suffix = Path(os.fspath(path)).suffix.lower()
    if suffix not in _FORMATS:
        raise ValueError(f"plot path {str(path)!r}: unsupported suffix {suffix!r}; "
                         f"use .png (or .svg, .pdf)")
    return _FORMATS[suffix]


def _new_figure(width: float, height: float) -> Figure:
    figure = Figure(figsize=(width, height), dpi=_DPI, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _check_path(path) -> None:
    if path is not None:
        _output_format(path)


def _save(figure: Figure, path) -> Figure:
    """Write the figure to `path` when one is given; return it (a notebook shows it)."""
    if path is not None:
        file_format = _output_format(path)
        with atomic_write_path(path) as temp:
            figure.savefig(temp, format=file_format, dpi=_DPI)
    return figure


def _check_history(history, where: str) -> list:
    if isinstance(history, Mapping) or not hasattr(history, "__iter__"):
        raise ValueError(f"{where}: history must be a list of per-epoch dicts, "
                         f"got {type(history).__name__}")
    history = list(history)
    if not history:
        raise ValueError(f"{where}: history is empty; train at least one epoch first")
    for i, entry in enumerate(history):
        if not isinstance(entry, Mapping):
            raise ValueError(f"{where}: history[{i}] must be a dict, got {type(entry).__name__}")
    return history


def _epochs(history: list) -> list:
    """The x value of each entry: its "epoch" if present, else its 1-based position."""
    return [entry.get("epoch") if entry.get("epoch") is not None else i + 1
            for i, entry in enumerate(history)]


def _series(history: list, key: str, where: str):
    """(epochs, values) of `key`, leaving out entries where it is missing, None or NaN."""
    xs, ys = [], []
    for x, entry in zip(_epochs(history), history):
        value = entry.get(key)
        if value is None:
            continue
        try:
            value = float(value)
        except (TypeError, ValueError):
            raise ValueError(f"{where}: {key}={value!r} at epoch {x} is not a number") from None
        if math.isnan(value):
            continue
        xs.append(x)
        ys.append(value)
    return np.asarray(xs, dtype=np.float64), np.asarray(ys, dtype=np.float64)


def _is_percent(histories: list) -> bool:
    """Whether accuracies are recorded as percentages (any value above 1)."""
    for history in histories:
        for entry in history:
            for split in SPLITS:
                value = entry.get(f"{split}_acc")
                if isinstance(value, (int, float, np.number)) and value > 1:
                    return True
    return False


def _format_last(metric: str, value: float, percent: bool) -> str:
    if metric == "loss":
        return f"{value:.4g}"
    return f"{value:.2f}%" if percent else f"{100 * value:.2f}%"


def _draw_series(ax, xs, ys, label: str, color: str, linestyle: str = "-", marker: str = "o") -> None:
    marker = marker if len(xs) <= _MAX_MARKED_POINTS else None
    ax.plot(xs, ys, label=label, color=color, linestyle=linestyle, marker=marker,
            markersize=3.5, linewidth=1.6)


def _finish_panel(ax, xlabel: str, ylabel: str, title: str, empty_note: str) -> None:
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if ax.lines:
        ax.legend(fontsize="small")
    else:
        ax.text(0.5, 0.5, empty_note, ha="center", va="center", transform=ax.transAxes,
                color="0.4")


# ---- per-epoch curves -----------------------------------------------------------------

def plot_curves(history, path=None, title: str | None = None) -> Figure:
    """Loss and accuracy per epoch (train, val, test where recorded), as one PNG."""
    _check_path(path)
    history = _check_history(history, "plot_curves")
    percent = _is_percent([history])
    figure = _new_figure(11, 4.2)
    loss_ax, acc_ax = figure.subplots(1, 2)
    for metric, ax in (("loss", loss_ax), ("acc", acc_ax)):
        for split in SPLITS:
            xs, ys = _series(history, f"{split}_{metric}", "plot_curves")
            if len(xs):
                label = f"{split} (last {_format_last(metric, ys[-1], percent)})"
                _draw_series(ax, xs, ys, label, _SPLIT_COLORS[split])
    _finish_panel(loss_ax, "epoch", "loss", "loss", "no loss values in history")
    acc_label = "accuracy (%)" if percent else "accuracy"
    _finish_panel(acc_ax, "epoch", acc_label, "accuracy", "no accuracy values in history")
    if title:
        figure.suptitle(title)
    return _save(figure, path)


# ---- iteration-based loss -------------------------------------------------------------

def _ema(values: np.ndarray, smoothing: float) -> np.ndarray:
    """Exponential moving average with bias correction (TensorBoard's smoothing)."""
    smoothed = np.empty_like(values)
    average = 0.0
    for i, value in enumerate(values):
        average = smoothing * average + (1.0 - smoothing) * value
        smoothed[i] = average / (1.0 - smoothing ** (i + 1))
    return smoothed


def plot_iteration_loss(steps, losses, path=None, title: str | None = None,
                        smoothing: float = 0.9) -> Figure:
    """Loss recorded every N iterations, raw (faint) and smoothed by an EMA."""
    _check_path(path)
    steps = np.asarray(steps, dtype=np.float64)
    losses = np.asarray(losses, dtype=np.float64)
    if steps.ndim != 1 or losses.ndim != 1 or len(steps) != len(losses):
        raise ValueError(f"plot_iteration_loss: steps and losses must be 1-D and of equal "
                         f"length, got shapes {steps.shape} and {losses.shape}")
    if len(steps) == 0:
        raise ValueError("plot_iteration_loss: no losses to plot")
    if not 0.0 <= smoothing < 1.0:
        raise ValueError(f"plot_iteration_loss: smoothing must be in [0, 1), got {smoothing}")
    finite = np.isfinite(losses) & np.isfinite(steps)
    omitted = int(len(losses) - finite.sum())
    steps, losses = steps[finite], losses[finite]

    figure = _new_figure(8, 4.5)
    ax = figure.subplots()
    if len(losses):
        ax.plot(steps, losses, color="C0", alpha=0.35, linewidth=1.0, label="loss")
        smoothed = _ema(losses, smoothing)
        ax.plot(steps, smoothed, color="C0", linewidth=2.0,
                label=f"smoothed (EMA {smoothing:g}, last {smoothed[-1]:.4g})")
    note = "all losses are NaN or infinite" if not len(losses) else ""
    _finish_panel(ax, "iteration", "loss", title or "training loss", note)
    if omitted:
        ax.text(0.99, 0.98, f"{omitted} non-finite value(s) omitted", ha="right", va="top",
                transform=ax.transAxes, color="C3", fontsize="small")
    return _save(figure, path)


# ---- confusion matrix -----------------------------------------------------------------

def _check_counts(matrix) -> np.ndarray:
    counts = np.asarray(matrix)
    if counts.ndim != 2 or counts.shape[0] != counts.shape[1] or counts.shape[0] == 0:
        raise ValueError(f"plot_confusion_matrix: matrix must be square (K, K), got shape "
                         f"{counts.shape}")
    if not np.issubdtype(counts.dtype, np.number) or np.any(counts < 0) \
            or np.any(counts != np.round(counts)):
        raise ValueError("plot_confusion_matrix: matrix must hold non-negative integer counts "
                         "(as returned by confusion_matrix)")
    return counts.astype(np.int64)


def plot_confusion_matrix(matrix, class_names, path=None, normalize: bool = True,
                          title: str | None = None) -> Figure:
    """Heat map of a confusion matrix with each cell's count written in it.

    With `normalize`, colours show each true class's row as fractions (so rare classes
    are as visible as common ones) and each cell also gives its row percentage.
    """
    _check_path(path)
    counts = _check_counts(matrix)
    k = counts.shape[0]
    if class_names is None:
        class_names = [str(i) for i in range(k)]
    class_names = [str(name) for name in class_names]
    if len(class_names) != k:
        raise ValueError(f"plot_confusion_matrix: {len(class_names)} class names for a "
                         f"{k}x{k} matrix")

    row_sums = counts.sum(axis=1, keepdims=True)
    fractions = counts / np.maximum(row_sums, 1)
    shown = fractions if normalize else counts
    top = 1.0 if normalize else max(int(counts.max()), 1)

    side = min(max(0.62 * k + 2.8, 5.0), 22.0)
    figure = _new_figure(side + 1.0, side)
    ax = figure.subplots()
    image = ax.imshow(shown, cmap="Blues", vmin=0, vmax=top, interpolation="nearest")
    colorbar = figure.colorbar(image, ax=ax, shrink=0.85)
    colorbar.set_label("fraction of true class" if normalize else "count")

    if k <= _MAX_ANNOTATED_CLASSES:
        fontsize = 9 if k <= 12 else 7
        for t in range(k):
            for p in range(k):
                text = f"{counts[t, p]:,}"
                if normalize and k <= 12 and counts[t, p]:
                    text += f"\n{100 * fractions[t, p]:.1f}%"
                color = "white" if shown[t, p] > 0.55 * top else "black"
                ax.text(p, t, text, ha="center", va="center", color=color, fontsize=fontsize)

    ax.set_xticks(range(k), class_names, rotation=45 if max(map(len, class_names)) > 3 else 0,
                  ha="right" if max(map(len, class_names)) > 3 else "center")
    ax.set_yticks(range(k), class_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    total = int(counts.sum())
    accuracy = f"accuracy {100 * np.trace(counts) / total:.2f}% of {total:,}" if total else "no samples"
    ax.set_title(f"{title} ({accuracy})" if title else accuracy)
    return _save(figure, path)


# ---- comparison of runs ---------------------------------------------------------------

def _check_runs(runs) -> list:
    runs = list(runs) if hasattr(runs, "__iter__") and not isinstance(runs, Mapping) else None
    if not runs:
        raise ValueError("plot_compare: runs must be a non-empty list of (label, history) pairs")
    checked = []
    for i, run in enumerate(runs):
        if not isinstance(run, (tuple, list)) or len(run) != 2:
            raise ValueError(f"plot_compare: runs[{i}] must be a (label, history) pair")
        label, history = run
        checked.append((str(label), _check_history(history, f"plot_compare: run {label!r}")))
    return checked


def _run_style(i: int) -> tuple[str, str]:
    """(colour, marker) of the i-th run of a comparison: the 10 colours of the default cycle,
    then again with another marker, so that no two of up to 40 runs look alike."""
    return f"C{i % 10}", "os^D"[i // 10 % 4]


def plot_compare(runs, path=None, title: str | None = None) -> Figure:
    """Overlay several runs: train loss, test loss, train accuracy, test accuracy (2x2).

    A run without test values shows its validation values (dashed) in the test panels.
    """
    _check_path(path)
    runs = _check_runs(runs)
    percent = _is_percent([history for _, history in runs])
    figure = _new_figure(12, 8.5)
    axes = figure.subplots(2, 2)
    panels = (("train", "loss", axes[0, 0]), ("test", "loss", axes[0, 1]),
              ("train", "acc", axes[1, 0]), ("test", "acc", axes[1, 1]))
    for split, metric, ax in panels:
        for i, (label, history) in enumerate(runs):
            xs, ys = _series(history, f"{split}_{metric}", "plot_compare")
            linestyle, source = "-", ""
            if split == "test" and not len(xs):
                xs, ys = _series(history, f"val_{metric}", "plot_compare")
                linestyle, source = "--", "val, "
            if len(xs):
                shown_label = f"{label} ({source}last {_format_last(metric, ys[-1], percent)})"
                color, marker = _run_style(i)
                _draw_series(ax, xs, ys, shown_label, color, linestyle, marker)
        name = "loss" if metric == "loss" else "accuracy"
        ylabel = "accuracy (%)" if metric == "acc" and percent else name
        _finish_panel(ax, "epoch", ylabel, f"{split} {name}", f"no {split} {name} recorded")
    if title:
        figure.suptitle(title)
    return _save(figure, path)


# ---- accuracy against wall time ---------------------------------------------------------

def plot_accuracy_vs_time(series, path=None, target: float | None = None,
                          time_limit: float | None = None, title: str | None = None) -> Figure:
    """Test accuracy against seconds of training, one line per (label, seconds, accuracies),
    with the target accuracy and the time limit drawn as reference lines where given."""
    _check_path(path)
    series = list(series)
    if not series:
        raise ValueError("plot_accuracy_vs_time: series must be a non-empty list of "
                         "(label, seconds, accuracies)")
    figure = _new_figure(8, 5)
    ax = figure.subplots()
    for i, (label, seconds, accuracies) in enumerate(series):
        if len(seconds) != len(accuracies):
            raise ValueError(f"plot_accuracy_vs_time: {label!r} has {len(seconds)} times but "
                             f"{len(accuracies)} accuracies")
        if len(seconds):
            _draw_series(ax, list(seconds), list(accuracies),
                         f"{label} (last {_format_last('acc', accuracies[-1], False)})", f"C{i % 10}")
    if target is not None:
        ax.axhline(target, color="0.3", linestyle="--", linewidth=1, label=f"target {target:g}")
    if time_limit is not None:
        ax.axvline(time_limit, color="0.3", linestyle=":", linewidth=1, label=f"{time_limit:g} s")
    ax.set_xlim(left=0)
    ax.set_xlabel("wall time (s)")
    ax.set_ylabel("test accuracy")
    ax.set_title(title or "test accuracy against training time")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="small")
    return _save(figure, path)
