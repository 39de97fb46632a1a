"""benchmarks/ema_bn_probe.py: re-measuring BatchNorm statistics for the EMA weights must not
change the training it probes."""
from __future__ import annotations

import importlib.util
import io
import os
import sys
from pathlib import Path

import numpy as np
import pytest

from minivgg.models import build

ROOT = Path(__file__).resolve().parent.parent
spec = importlib.util.spec_from_file_location("bench_ema_bn_probe", ROOT / "benchmarks" / "ema_bn_probe.py")
probe = importlib.util.module_from_spec(spec)
sys.modules[spec.name] = probe
spec.loader.exec_module(probe)


def test_remeasure_sets_the_batch_statistics_and_restores_dropout_rngs():
    model = build("minivgg_fashion_light", seed=0)
    images = np.random.default_rng(1).normal(2.0, 3.0, (16, 1, 28, 28)).astype(np.float32)
    first_norm = next(m for m in model.modules() if getattr(m, "running_mean", None) is not None)
    rng_before = probe._module_rng_states(model)
    model.eval()
    probe.remeasure_batch_norm(model, images)
    assert probe._module_rng_states(model) == rng_before
    assert not model.training and first_norm.momentum == 0.1
    # the first BatchNorm follows the first conv: its new mean is that conv's output mean
    conv = next(iter(model.children()))
    out = conv(probe.Tensor(images)).data
    np.testing.assert_allclose(first_norm.running_mean, out.mean(axis=(0, 2, 3)), rtol=1e-4, atol=1e-5)


@pytest.mark.skipif(not os.environ.get("MINIVGG_DATA"),
                    reason="MINIVGG_DATA is not set: the probe's smoke run needs Fashion-MNIST")
def test_probe_leaves_the_training_as_it_was(monkeypatch):
    probed = probe.run_probe("fashion_plus2", epochs=2, bn_images=64, limit=256, out=io.StringIO())
    monkeypatch.setattr(probe, "remeasure_batch_norm", lambda model, images: None)
    plain = probe.run_probe("fashion_plus2", epochs=2, bn_images=64, limit=256, out=io.StringIO())
    assert [r["epoch"] for r in probed] == [1, 2]
    assert [r["train_loss"] for r in probed] == [r["train_loss"] for r in plain]
    assert [r["reported"] for r in probed] == [r["ema_live_bn"] for r in probed]


@pytest.mark.parametrize("argv, message", [
    (["mnist_20k"], "recipe 'mnist_20k' has no EMA"),
    (["nope"], "unknown recipe 'nope'; valid recipes: vgg_v1"),
])
def test_bad_input_gets_one_line_and_no_traceback(capsys, argv, message):
    assert probe.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"ema_bn_probe.py: error: {message}") and "Traceback" not in err


def test_missing_dataset_names_the_folder(tmp_path, capsys):
    assert probe.main(["fashion_plus2", "--data-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert str(tmp_path) in err and "Traceback" not in err
