"""Plots: files are real PNGs of sensible size, missing data is handled, writes are atomic."""
import os
import struct

import numpy as np
import pytest
from matplotlib.figure import Figure

from minivgg import metrics, plots
from minivgg.fsutil import atomic_open, atomic_write_path

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_size(path) -> tuple:
    """(width, height) from the PNG header, after checking the signature and IHDR chunk."""
    with open(path, "rb") as handle:
        head = handle.read(24)
    assert head[:8] == PNG_SIGNATURE, f"{path} is not a PNG"
    assert head[12:16] == b"IHDR"
    return struct.unpack(">II", head[16:24])


def assert_sensible_png(path, min_side=400, max_side=3000):
    width, height = png_size(path)
    assert min_side <= width <= max_side and min_side <= height <= max_side, (width, height)
    assert os.path.getsize(path) > 10_000  # a blank canvas compresses to far less


def history(epochs=6, **drop):
    """A plausible history; drop={"val_loss": None} removes or blanks keys."""
    rows = []
    for e in range(1, epochs + 1):
        row = {"epoch": e, "train_loss": 1.0 / e, "train_acc": 0.9 + 0.01 * e,
               "val_loss": 0.9 / e, "val_acc": 0.91 + 0.01 * e,
               "test_loss": 0.8 / e, "test_acc": 0.92 + 0.01 * e, "lr": 0.01, "time": 3.0}
        for key, value in drop.items():
            if value is None:
                row.pop(key)
            else:
                row[key] = value
        rows.append(row)
    return rows


def leftovers(directory, keep):
    return sorted(set(os.listdir(directory)) - set(keep))


# ---- plot_curves ----------------------------------------------------------------------

def test_plot_curves_writes_png(tmp_path):
    path = tmp_path / "curves.png"
    plots.plot_curves(history(), path, title="run")
    assert_sensible_png(path)
    assert leftovers(tmp_path, ["curves.png"]) == []


def test_plot_curves_missing_and_none_keys(tmp_path):
    rows = history(val_loss=None, val_acc=None, test_acc=None)
    rows[2]["test_loss"] = None        # a gap in one series
    rows[3]["train_acc"] = float("nan")
    del rows[4]["epoch"]               # falls back to the position
    plots.plot_curves(rows, tmp_path / "a.png")
    assert_sensible_png(tmp_path / "a.png")
    # no accuracy at all, percentages elsewhere: still a figure
    plots.plot_curves([{"train_loss": 2.0}, {"train_loss": 1.0}], tmp_path / "b.png")
    assert_sensible_png(tmp_path / "b.png")
    plots.plot_curves([{"epoch": 1, "test_acc": 97.5}], tmp_path / "c.png")
    assert_sensible_png(tmp_path / "c.png")


def test_plot_curves_bad_input(tmp_path):
    with pytest.raises(ValueError, match="empty"):
        plots.plot_curves([], tmp_path / "x.png")
    with pytest.raises(ValueError, match="list of per-epoch dicts"):
        plots.plot_curves({"train_loss": [1, 2]}, tmp_path / "x.png")
    with pytest.raises(ValueError, match=r"history\[1\] must be a dict"):
        plots.plot_curves([{"train_loss": 1.0}, 3], tmp_path / "x.png")
    with pytest.raises(ValueError, match="train_loss='abc' at epoch 1"):
        plots.plot_curves([{"epoch": 1, "train_loss": "abc"}], tmp_path / "x.png")
    with pytest.raises(ValueError, match="unsupported suffix '.jpg'"):
        plots.plot_curves(history(), tmp_path / "x.jpg")
    assert os.listdir(tmp_path) == []


# ---- plot_iteration_loss --------------------------------------------------------------

def test_plot_iteration_loss(tmp_path):
    steps = np.arange(0, 2000, 10)
    losses = 2.3 * np.exp(-steps / 500) + 0.05 * np.random.default_rng(0).random(len(steps))
    losses[7] = np.nan
    plots.plot_iteration_loss(steps, losses, tmp_path / "it.png")
    assert_sensible_png(tmp_path / "it.png")
    with pytest.raises(ValueError, match="equal length"):
        plots.plot_iteration_loss([1, 2, 3], [1.0, 2.0], tmp_path / "x.png")
    with pytest.raises(ValueError, match="smoothing"):
        plots.plot_iteration_loss([1, 2], [1.0, 2.0], tmp_path / "x.png", smoothing=1.0)


def test_ema_is_bias_corrected():
    values = np.array([4.0, 4.0, 4.0, 2.0])
    smoothed = plots._ema(values, 0.5)
    np.testing.assert_allclose(smoothed[:3], 4.0)  # no pull towards zero at the start
    assert 2.0 < smoothed[3] < 4.0
    np.testing.assert_allclose(plots._ema(values, 0.0), values)


# ---- confusion matrix -----------------------------------------------------------------

def test_confusion_matrix_matches_loop():
    rng = np.random.default_rng(1)
    k = 7
    y_true = rng.integers(0, k, 1000)
    y_pred = rng.integers(0, k, 1000)
    expected = np.zeros((k, k), dtype=np.int64)
    for t, p in zip(y_true, y_pred):
        expected[t, p] += 1
    got = metrics.confusion_matrix(y_true, y_pred, k)
    assert got.dtype == np.int64 and got.shape == (k, k)
    np.testing.assert_array_equal(got, expected)
    assert metrics.confusion_matrix([], [], 3).sum() == 0


def test_confusion_matrix_errors():
    with pytest.raises(ValueError, match=r"y_pred\[2\] = 5 is outside \[0, 3\)"):
        metrics.confusion_matrix([0, 1, 2], [0, 1, 5], 3)
    with pytest.raises(ValueError, match=r"y_true\[0\] = -1"):
        metrics.confusion_matrix([-1, 1], [0, 1], 3)
    with pytest.raises(ValueError, match="differ in length"):
        metrics.confusion_matrix([0, 1], [0], 3)
    with pytest.raises(ValueError, match="argmax"):
        metrics.confusion_matrix(np.zeros((4, 3)), [0, 1, 2, 0], 3)
    with pytest.raises(ValueError, match="integer class indices"):
        metrics.confusion_matrix([0.0, 1.0], [0, 1], 3)
    with pytest.raises(ValueError, match="num_classes"):
        metrics.confusion_matrix([0], [0], 0)


def test_plot_confusion_matrix(tmp_path):
    rng = np.random.default_rng(2)
    y = rng.integers(0, 10, 2000)
    p = np.where(rng.random(2000) < 0.8, y, rng.integers(0, 10, 2000))
    matrix = metrics.confusion_matrix(y, p, 10)
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    plots.plot_confusion_matrix(matrix, names, tmp_path / "cm.png")
    assert_sensible_png(tmp_path / "cm.png")
    plots.plot_confusion_matrix(matrix, None, tmp_path / "raw.png", normalize=False)
    assert_sensible_png(tmp_path / "raw.png")
    with pytest.raises(ValueError, match="3 class names for a 10x10"):
        plots.plot_confusion_matrix(matrix, ["a", "b", "c"], tmp_path / "x.png")
    with pytest.raises(ValueError, match="square"):
        plots.plot_confusion_matrix(np.ones((2, 3), dtype=int), None, tmp_path / "x.png")
    with pytest.raises(ValueError, match="non-negative integer counts"):
        plots.plot_confusion_matrix(np.full((2, 2), 0.5), None, tmp_path / "x.png")


# ---- plot_compare ---------------------------------------------------------------------

def test_plot_compare(tmp_path):
    runs = [("sgd", history(8)), ("adam", history(5, test_loss=None, test_acc=None)),
            ("percent", [{"epoch": 1, "train_acc": 90.0}, {"epoch": 2, "train_acc": 95.0}])]
    plots.plot_compare(runs, tmp_path / "cmp.png", title="optimizers")
    assert_sensible_png(tmp_path / "cmp.png")
    with pytest.raises(ValueError, match="non-empty list"):
        plots.plot_compare([], tmp_path / "x.png")
    with pytest.raises(ValueError, match=r"runs\[0\] must be a \(label, history\) pair"):
        plots.plot_compare([history()], tmp_path / "x.png")
    with pytest.raises(ValueError, match="run 'b'"):
        plots.plot_compare([("a", history()), ("b", [])], tmp_path / "x.png")


def test_plot_compare_gives_every_run_a_look_of_its_own(tmp_path, monkeypatch):
    saved = []
    monkeypatch.setattr(plots, "_save", lambda figure, path: saved.append(figure))
    plots.plot_compare([(f"run{i}", history(4)) for i in range(23)], tmp_path / "many.png")
    lines = saved[0].axes[3].lines                          # the test accuracy panel
    assert len(lines) == 23
    assert len({(line.get_color(), line.get_marker()) for line in lines}) == 23


# ---- atomic writes --------------------------------------------------------------------

def test_plot_accuracy_vs_time(tmp_path):
    path = tmp_path / "tta.png"
    plots.plot_accuracy_vs_time([("minivgg", [20.0, 40.0, 61.0], [0.98, 0.99, 0.9941]),
                                 ("torch", [15.0, 30.0], [0.979, 0.986])],
                                path, target=0.994, time_limit=120)
    assert_sensible_png(path)
    with pytest.raises(ValueError, match="'torch' has 2 times but 1 accuracies"):
        plots.plot_accuracy_vs_time([("torch", [1.0, 2.0], [0.5])], tmp_path / "bad.png")
    with pytest.raises(ValueError, match="non-empty list"):
        plots.plot_accuracy_vs_time([], tmp_path / "bad.png")
    with pytest.raises(ValueError, match="unsupported suffix"):
        plots.plot_accuracy_vs_time([("a", [1.0], [0.5])], tmp_path / "bad.jpg")
    assert not (tmp_path / "bad.png").exists()


def test_failed_plot_leaves_old_file_intact(tmp_path, monkeypatch):
    path = tmp_path / "curves.png"
    path.write_bytes(b"old contents")

    def half_written_then_fail(self, fname, **kwargs):
        with open(fname, "wb") as handle:
            handle.write(PNG_SIGNATURE + b"truncated")
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(Figure, "savefig", half_written_then_fail)
    with pytest.raises(RuntimeError, match="disk on fire"):
        plots.plot_curves(history(), path)
    assert path.read_bytes() == b"old contents"
    assert leftovers(tmp_path, ["curves.png"]) == []


def test_plot_replaces_existing_file(tmp_path):
    path = tmp_path / "curves.png"
    path.write_bytes(b"old contents")
    plots.plot_curves(history(), path)
    assert_sensible_png(path)


def test_atomic_write_path_and_open(tmp_path):
    target = tmp_path / "data.txt"
    with atomic_write_path(target) as temp:
        assert temp.parent == tmp_path and temp != target and temp.suffix == ".txt"
        temp.write_text("one")
        assert not target.exists()  # nothing appears until the block succeeds
    assert target.read_text() == "one"

    with pytest.raises(KeyError):
        with atomic_open(target, "w") as handle:
            handle.write("two")
            raise KeyError("interrupted")
    assert target.read_text() == "one"
    assert leftovers(tmp_path, ["data.txt"]) == []

    with atomic_open(target, "wb") as handle:
        handle.write(b"three")
    assert target.read_bytes() == b"three"
    umask = os.umask(0)
    os.umask(umask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask  # not mkstemp's 0o600


def test_atomic_write_path_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        with atomic_write_path(tmp_path / "missing" / "x.png"):
            pass
    with pytest.raises(IsADirectoryError):
        with atomic_write_path(tmp_path):
            pass
    with pytest.raises(ValueError, match="mode"):
        with atomic_open(tmp_path / "x", "a"):
            pass


def test_plotting_does_not_touch_pyplot(tmp_path):
    import sys
    import matplotlib
    backend = matplotlib.get_backend() if "matplotlib.pyplot" in sys.modules else None
    plots.plot_curves(history(), tmp_path / "c.png")
    if backend is None:
        assert "matplotlib.pyplot" not in sys.modules
    else:
        assert matplotlib.get_backend() == backend
