"""Train from an image-folder export of part of real MNIST: PNG files in class folders, read
back through `minivgg train --data`, must clear an accuracy floor on the exported test images."""
import json
import os
import subprocess
import sys

import pytest
from PIL import Image

pytestmark = [
    pytest.mark.realdata, pytest.mark.slow,
    pytest.mark.skipif(not os.environ.get("MINIVGG_DATA"),
                       reason="MINIVGG_DATA is not set: set it to the folder holding mnist/ to train "
                              "from an image-folder export of it"),
]

TRAIN, TEST = 3000, 1000


def export(images, labels, folder):
    for i, (image, label) in enumerate(zip(images, labels)):
        (folder / str(label)).mkdir(parents=True, exist_ok=True)
        Image.fromarray(image[0]).save(folder / str(label) / f"{i:05d}.png")


def test_train_from_an_exported_mnist_folder_clears_a_floor(tmp_path):
    from minivgg.data import load_dataset

    train_x, train_y = load_dataset("mnist", "train")
    test_x, test_y = load_dataset("mnist", "test")
    export(train_x[:TRAIN], train_y[:TRAIN], tmp_path / "digits" / "train")
    export(test_x[:TEST], test_y[:TEST], tmp_path / "digits" / "test")

    env = dict(os.environ, XDG_CACHE_HOME=str(tmp_path / "cache"))
    proc = subprocess.run([sys.executable, "-m", "minivgg", "train", "--data", str(tmp_path / "digits"),
                           "--recipe", "mnist_5k", "--epochs", "3", "--seed", "0", "--no-progress",
                           "--out", str(tmp_path / "runs")],
                          capture_output=True, text=True, timeout=900, env=env)
    assert proc.returncode == 0, proc.stderr
    run_dir = next((tmp_path / "runs").iterdir())
    results = json.loads((run_dir / "results.json").read_text())
    config = json.loads((run_dir / "config.json").read_text())
    assert config["class_names"] == [str(d) for d in range(10)]
    assert config["input_shape"] == [1, 28, 28]
    # the folder's statistics are those of the exported images
    assert config["mean"][0] == pytest.approx(train_x[:TRAIN].mean() / 255, abs=1e-3)
    assert results["final_test_acc"] >= 0.93, proc.stdout
