"""A user's own images end to end: train --data on a folder, then eval, predict and inspect
the saved model by its class names; and predict's MNIST-style preprocessing."""
import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from minivgg import checkpoint
from minivgg.data import folders
from minivgg.inference import (evaluate_checkpoint, inspect_files, plot_misclassified,
                               predict_files, prepare_images, uses_mnist_style)
from minivgg.models import build
from minivgg.preprocess import mnist_style

CLASSES = ["bar", "dot", "ring"]


def _shape_image(kind, rng, size=28):
    """A light shape on a dark background, at a random place: bars, dots and rings."""
    img = np.zeros((size, size), np.float32)
    r, c = rng.integers(8, size - 8, 2)
    rows, cols = np.indices(img.shape)
    d = np.hypot(rows - r, cols - c)
    if kind == "bar":
        img[max(r - 6, 0):r + 6, c - 1:c + 2] = 1
    elif kind == "dot":
        img[d <= 3] = 1
    else:
        img[(d >= 4) & (d <= 6)] = 1
    img += rng.normal(0, 0.05, img.shape)
    return (np.clip(img, 0, 1) * 255).astype(np.uint8)


def make_shapes(root, counts=(("train", 24), ("val", 6), ("test", 8)), seed=0):
    rng = np.random.default_rng(seed)
    for split, n in counts:
        for name in CLASSES:
            (root / split / name).mkdir(parents=True)
            for i in range(n):
                Image.fromarray(_shape_image(name, rng)).save(root / split / name / f"{i}.png")
    return root


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    folders._OPEN.clear()


def run_cli(*args, cwd=None, env_cache=None):
    import os
    env = dict(os.environ)
    if env_cache:
        env["XDG_CACHE_HOME"] = str(env_cache)
    proc = subprocess.run([sys.executable, "-m", "minivgg", *map(str, args)], capture_output=True,
                          text=True, timeout=600, cwd=cwd, env=env)
    return proc.returncode, proc.stdout, proc.stderr


def _untrained_model_file(tmp_path, root):
    """An untrained lenet5 saved as `train --data root` would save it: it gets many wrong."""
    model = build("lenet5", in_channels=1, num_classes=3, image_size=28, seed=1)
    path = tmp_path / "model.safetensors"
    checkpoint.save_weights(path, model, {"model": "lenet5", "dataset": str(root),
                                          "num_classes": 3, "class_names": CLASSES,
                                          "input_shape": [1, 28, 28], "mean": [0.1], "std": [0.3]})
    return path


def test_train_on_a_folder_then_eval_predict_inspect_by_class_name(tmp_path):
    # 12 validation images per class: with 6, the best-validation-loss epoch that training
    # restores was too noisy a pick for the accuracy asserted below
    root = make_shapes(tmp_path / "shapes", counts=(("train", 24), ("val", 12), ("test", 8)))
    cache = tmp_path / "cache"
    code, out, err = run_cli("train", "--data", root, "--model", "lenet5", "--epochs", "8",
                             "--lr", "0.003", "--optimizer", "adam", "--schedule", "none",
                             "--batch-size", "16", "--no-augment", "--patience", "4",
                             "--out", tmp_path / "runs", "--no-progress", env_cache=cache)
    assert code == 0, err
    run_dir = next((tmp_path / "runs").iterdir())
    meta = checkpoint.load_weights(run_dir / "model.safetensors")[1]
    assert meta["class_names"] == CLASSES and meta["input_shape"] == [1, 28, 28]
    assert (run_dir / "checkpoints" / "best.safetensors").is_file()  # val/ is the validation split
    results = json.loads((run_dir / "results.json").read_text())
    assert results["final_test_acc"] >= 0.9, (out, results["history"])
    assert "val_loss" in results["history"][0] and results["history"][0]["val_loss"] is not None
    assert list((cache / "minivgg" / "image-folders").glob("*.npz"))  # decoded once, cached

    code, out, err = run_cli("eval", run_dir, "--json", env_cache=cache)
    assert code == 0, err
    evaluated = json.loads(out)
    assert evaluated["count"] == 24 and [s["class"] for s in evaluated["per_class"]] == CLASSES
    assert evaluated["accuracy"] == pytest.approx(results["final_test_acc"], abs=1e-6)

    image = tmp_path / "ring.png"
    Image.fromarray(_shape_image("ring", np.random.default_rng(5))).save(image)
    code, out, err = run_cli("predict", run_dir, image, "--json", env_cache=cache)
    assert code == 0, err
    predicted = json.loads(out)[0]
    assert predicted["prediction"] == "ring" and not predicted["mnist_style"]  # not an MNIST model

    code, out, err = run_cli("inspect", run_dir, image, "--class", "dot", "--out", tmp_path / "look",
                             env_cache=cache)
    assert code == 0, err
    for name in ("filters.png", "ring-maps.png", "ring-gradcam.png"):
        assert (tmp_path / "look" / name).read_bytes()[:4] == b"\x89PNG"


def test_eval_lists_the_worst_misclassified_and_per_class_scores(tmp_path):
    root = make_shapes(tmp_path / "shapes", counts=(("train", 4), ("test", 10)))
    path = _untrained_model_file(tmp_path, root)
    r = evaluate_checkpoint(path)
    wrong = r["misclassified"]
    assert len(wrong) == r["count"] - round(r["accuracy"] * r["count"]) and wrong
    losses = [w["loss"] for w in wrong]
    assert losses == sorted(losses, reverse=True)
    assert all(w["true"] != w["predicted"] for w in wrong)
    matrix = r["confusion"]
    for k, s in enumerate(r["per_class"]):
        assert s["support"] == matrix[k].sum()
        assert s["recall"] == pytest.approx(matrix[k, k] / matrix[k].sum())
        if matrix[:, k].sum():
            assert s["precision"] == pytest.approx(matrix[k, k] / matrix[:, k].sum())
    figure = plot_misclassified(r, tmp_path / "worst.png", count=5)
    assert figure is not None and (tmp_path / "worst.png").is_file()

    code, out, err = run_cli("eval", path, "--errors", "5", env_cache=tmp_path / "cache")
    assert code == 0, err
    assert "per-class precision, recall and F1" in out and "macro avg" in out
    assert (tmp_path / "misclassified-test.png").is_file()


def _digit_page(tmp_path):
    """A dark "7" on a light page, filling its frame, as a person saves one."""
    page = np.full((90, 60), 235, np.uint8)
    page[2:12, 2:58] = 30
    page[12:88, 44:56] = 30
    Image.fromarray(page).save(tmp_path / "seven.png")
    return tmp_path / "seven.png", page


def test_predict_makes_digits_mnist_style_for_mnist_models_only(tmp_path):
    path, page = _digit_page(tmp_path)
    model = build("mnist_5k", seed=0)
    mnist_meta = {"model": "mnist_5k", "dataset": "mnist", "num_classes": 10, "input_shape": [1, 28, 28],
                  "class_names": [str(d) for d in range(10)], "mean": [0.1307], "std": [0.3081]}
    assert uses_mnist_style(mnist_meta) and not uses_mnist_style(mnist_meta, preprocess=False)
    np.testing.assert_array_equal(prepare_images([path], mnist_meta)[0, 0], mnist_style(page))
    plain = prepare_images([path], mnist_meta, preprocess=False)[0, 0]
    assert not np.array_equal(plain, mnist_style(page))
    fashion = dict(mnist_meta, dataset="fashion-mnist")
    assert not uses_mnist_style(fashion) and uses_mnist_style(fashion, preprocess=True)
    with pytest.raises(ValueError, match="28x28 greyscale"):
        uses_mnist_style(dict(mnist_meta, input_shape=[3, 32, 32]), preprocess=True)

    weights = tmp_path / "mnist.safetensors"
    checkpoint.save_weights(weights, model, mnist_meta)
    on = predict_files(weights, [path], show=tmp_path / "seen.png")[0]
    off = predict_files(weights, [path], preprocess=False)[0]
    assert on["mnist_style"] and not off["mnist_style"]
    assert on["probabilities"] != off["probabilities"]
    assert (tmp_path / "seen.png").read_bytes()[:4] == b"\x89PNG"
    code, out, err = run_cli("predict", weights, path, "--no-preprocess", "--show", tmp_path / "s2.png")
    assert code == 0, err
    assert "MNIST-style" not in out and (tmp_path / "s2.png").is_file()

    blank = tmp_path / "blank.png"
    Image.fromarray(np.full((28, 28), 255, np.uint8)).save(blank)
    code, out, err = run_cli("predict", weights, blank)
    assert code != 0 and "blank.png" in err and "blank" in err and "Traceback" not in err


def test_inspect_files_in_python_and_unknown_class(tmp_path):
    root = make_shapes(tmp_path / "shapes", counts=(("train", 2), ("test", 1)))
    path = _untrained_model_file(tmp_path, root)
    image = root / "test" / "dot" / "0.png"
    written = inspect_files(path, [image, image], tmp_path / "out", target="ring")
    names = sorted(p.name for p in written)
    assert names == ["0-0-gradcam.png", "0-0-maps.png", "0-1-gradcam.png", "0-1-maps.png", "filters.png"]
    with pytest.raises(ValueError, match="unknown class 'cat'.*bar, dot, ring"):
        inspect_files(path, [image], tmp_path / "out", target="cat")


def test_bad_folders_on_the_command_line_are_one_clear_line(tmp_path):
    (tmp_path / "one" / "only").mkdir(parents=True)
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "one" / "only" / "a.png")
    for folder, fragment in ((tmp_path / "one", "one class"), (tmp_path / "none", "does not exist")):
        code, out, err = run_cli("train", "--data", folder, "--out", tmp_path / "runs")
        assert code != 0 and fragment in err and "Traceback" not in err, err
    assert not (tmp_path / "runs").exists()
    code, out, err = run_cli("train", "--data", tmp_path / "one", "--dataset", "mnist")
    assert code != 0 and "not both" in err
