"""The command line: every command, its error paths (one clear line, no traceback), and a
real-data end-to-end run (train -> eval -> predict) that must clear an accuracy floor."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from minivgg.cli import main

REAL = os.environ.get("MINIVGG_DATA")
needs_real_data = pytest.mark.skipif(
    not REAL or not Path(REAL, "mnist").is_dir(),
    reason="MINIVGG_DATA does not point at the real datasets (.ci/run sets it to ../shared/datasets)")


def run_cli(*args, env=None):
    """Run `python -m minivgg ...` as a user would; (exit code, stdout, stderr)."""
    full_env = dict(os.environ, **(env or {}))
    proc = subprocess.run([sys.executable, "-m", "minivgg", *args], capture_output=True, text=True,
                          env=full_env, timeout=600)
    return proc.returncode, proc.stdout, proc.stderr


def assert_one_clear_line(code, err, *fragments):
    assert code != 0
    assert "Traceback" not in err
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) >= 1
    for fragment in fragments:
        assert fragment in err, f"{fragment!r} not in {err!r}"


def test_models_lists_the_zoo_with_counts(capsys):
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    for name, count in [("mnist_8k_a", "7,998"), ("mnist_8k_b", "7,936"), ("mnist_5k", "5,178"),
                        ("minivggnet", "2,169,770")]:
        line = next(line for line in out.splitlines() if line.startswith(name + " "))
        assert count in line


@pytest.mark.parametrize("command, second_column", [("models", "dataset"), ("recipes", "model")])
def test_listings_keep_their_columns_aligned(capsys, command, second_column):
    # minivgg_fashion_light is longer than the name column once was, and pushed its row askew
    assert main([command]) == 0
    lines = capsys.readouterr().out.splitlines()
    start = lines[0].index(second_column)
    for line in lines[1:]:
        assert line[start - 1] == " " and line[start] != " ", line


def test_models_describe_each_net_in_a_whole_sentence():
    from minivgg.models import MODELS
    for spec in MODELS.values():
        assert spec.description.endswith("."), spec.description


def test_help_names_the_default_recipe(capsys):
    from minivgg.models import DEFAULT_RECIPE
    with pytest.raises(SystemExit):
        main(["--help"])
    line = next(line for line in capsys.readouterr().out.splitlines() if line.strip().startswith("train"))
    assert f"default: {DEFAULT_RECIPE}" in line


def test_recipes_lists_and_shows(capsys):
    assert main(["recipes"]) == 0
    out = capsys.readouterr().out
    assert "mnist_5k" in out and "(default)" in out and "minivggnet_cifar10" in out
    assert main(["recipes", "mnist_20k"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["schedule"] == "step" and shown["epochs"] == 12


@pytest.mark.parametrize("model,total", [("mnist_8k_a", "7,998"), ("mnist_8k_b", "7,936"),
                                         ("mnist_5k", "5,178")])
def test_summary_totals(capsys, model, total):
    assert main(["summary", model]) == 0
    out = capsys.readouterr().out
    assert f"Total params: {total}" in out
    assert f"Trainable params: {total}" in out
    assert "Output Shape" in out


def test_summary_of_minivggnet_with_an_input_shape(capsys):
    assert main(["summary", "minivggnet", "--input-shape", "3,32,32"]) == 0
    assert "Total params: 2,169,770" in capsys.readouterr().out


@pytest.mark.parametrize("args,fragments", [
    (["train", "--recipe", "nope"], ["unknown recipe 'nope'", "valid recipes: vgg_v1"]),
    (["train", "--model", "resnet"], ["unknown model 'resnet'", "valid models:"]),
    (["train", "--dataset", "imagenet"], ["imagenet", "mnist"]),
    (["train", "--epochs", "0"], ["--epochs", "at least 1"]),
    (["train", "--augment-epochs", "0"], ["--augment-epochs", "at least 1"]),
    (["train", "--tta-shift", "-1"], ["--tta-shift", "at least 0"]),
    (["eval", "/nonexistent/run", "--tta-shift", "one"], ["--tta-shift", "expected a whole number"]),
    (["train", "--lr", "abc"], ["--lr", "expected a number"]),
    (["train", "--resume", "x.safetensors", "--lr", "0.1"], ["--resume continues a run"]),
    (["summary", "mnist_5k", "--input-shape", "3,32"], ["--input-shape", "C,H,W"]),
    (["summary", "mnist_5k", "--input-shape", "3,32,32"], ["28x28"]),
    (["eval", "/nonexistent/run"], ["no model found at /nonexistent/run"]),
    (["frobnicate"], ["invalid choice"]),
])
def test_error_paths_give_one_clear_line(args, fragments):
    code, out, err = run_cli(*args)
    assert_one_clear_line(code, err, *fragments)


def test_output_into_a_closed_pipe_is_not_an_error(monkeypatch, capsys):
    class ClosedPipe:
        def write(self, text):
            raise BrokenPipeError(32, "Broken pipe")

        def flush(self):
            pass

    monkeypatch.setattr(sys, "stdout", ClosedPipe())
    assert main(["recipes"]) == 0
    assert capsys.readouterr().err == ""


def test_missing_dataset_says_where_it_looked(tmp_path):
    code, out, err = run_cli("train", "--iters", "1", "--data-dir", str(tmp_path / "empty"),
                             "--out", str(tmp_path / "runs"))
    assert_one_clear_line(code, err, "mnist", str(tmp_path / "empty"), "MINIVGG_DATA")
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_garbage_checkpoint_is_a_clear_error(tmp_path):
    bad = tmp_path / "model.safetensors"
    bad.write_bytes(b"this is not a checkpoint")
    code, out, err = run_cli("eval", str(bad))
    assert_one_clear_line(code, err, str(bad))
    code, out, err = run_cli("train", "--resume", str(bad))
    assert_one_clear_line(code, err, str(bad))


@needs_real_data
def test_end_to_end_train_eval_predict_on_real_mnist(tmp_path):
    """A few hundred iterations of mnist_5k must clear 97% on the real test set."""
    code, out, err = run_cli("train", "--recipe", "mnist_5k", "--iters", "300", "--batch-size", "64",
                             "--seed", "0", "--augment-epochs", "1", "--tta-shift", "1",
                             "--out", str(tmp_path / "runs"), "--log-every", "100")
    assert code == 0, err
    accuracy = float(next(line for line in out.splitlines() if line.startswith("test accuracy:")).split()[-1])
    assert accuracy >= 0.97, out
    run_dir = Path(next(line for line in out.splitlines() if line.startswith("run directory:")).split(": ", 1)[1])
    for name in ["config.json", "metrics.csv", "train.log", "curves.png", "loss.png", "confusion.png",
                 "results.json", "model.safetensors", "checkpoints/last.resume.safetensors"]:
        assert (run_dir / name).is_file(), name
    recipe = json.loads((run_dir / "config.json").read_text())["recipe"]
    assert recipe["augment_epochs"] == 1 and recipe["tta_shift"] == 1
    results = json.loads((run_dir / "results.json").read_text())
    assert results["final_test_acc"] == pytest.approx(accuracy, abs=1e-4)
    assert "ms/step" in (run_dir / "train.log").read_text()

    code, out, err = run_cli("eval", str(run_dir), "--json")   # with the recipe's TTA, as train scored it
    assert code == 0, err
    evaluated = json.loads(out)
    assert evaluated["accuracy"] == pytest.approx(accuracy, abs=1e-4)
    assert evaluated["tta"] == {"flip": False, "shift": 1}
    code, out, err = run_cli("eval", str(run_dir), "--no-tta")
    assert code == 0, err
    assert "(10,000 images; no TTA)" in out
    code, out, err = run_cli("eval", str(run_dir), "--no-tta", "--tta-shift", "2")
    assert_one_clear_line(code, err, "--no-tta", "alone")
    assert len(evaluated["per_class_accuracy"]) == 10
    assert np.array(evaluated["confusion"]).sum() == 10_000

    # predict: a real test digit written as a PNG (white on black, as MNIST), and inverted
    from PIL import Image
    from minivgg.data import load_dataset
    images, labels = load_dataset("mnist", "test")
    Image.fromarray(images[0, 0]).save(tmp_path / "digit.png")
    Image.fromarray(255 - images[0, 0]).convert("RGB").save(tmp_path / "digit_dark_on_light.jpg")
    (tmp_path / "notes.txt").write_text("not an image")
    code, out, err = run_cli("predict", str(run_dir), str(tmp_path / "digit.png"),
                             str(tmp_path / "digit_dark_on_light.jpg"), "--json")
    assert code == 0, err
    predictions = json.loads(out)
    assert predictions[0]["prediction"] == str(labels[0])
    assert predictions[1]["prediction"] == str(labels[0])
    assert sum(predictions[0]["probabilities"].values()) == pytest.approx(1.0, abs=1e-4)
    code, out, err = run_cli("predict", str(run_dir), str(tmp_path / "digit.png"), "--json", "--no-tta")
    assert code == 0, err
    plain = json.loads(out)[0]["probabilities"]    # the recipe's shift TTA is the default
    assert plain != predictions[0]["probabilities"]
    assert max(abs(plain[k] - v) for k, v in predictions[0]["probabilities"].items()) < 0.2
    code, out, err = run_cli("predict", str(run_dir), str(tmp_path / "notes.txt"))
    assert_one_clear_line(code, err, "notes.txt", "PNG or JPEG")

    # resuming a finished run trains nothing more and keeps the directory
    code, out, err = run_cli("train", "--resume", str(run_dir / "checkpoints" / "last.resume.safetensors"))
    assert code == 0, err
    assert f"run directory: {run_dir}" in out
