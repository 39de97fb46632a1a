"""Test-time augmentation: the views (minivgg.tta), minivgg's evaluate over them, and the
PyTorch twin the benchmarks use."""
import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

from minivgg.autograd import Tensor, no_grad
from minivgg.experiment import validate_recipe
from minivgg.models import build, get_recipe
from minivgg.train import evaluate
from minivgg.tta import shift_images, tta_views

NORM = ((0.1307,), (0.3081,))


def _images(n=40, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=(n, 1, 28, 28), dtype=np.uint8), rng.integers(0, 10, size=n)


@pytest.mark.parametrize("dy, dx", [(0, 1), (0, -1), (2, 0), (-2, 0), (1, -3)])
def test_shift_moves_the_content_and_fills_black(dy, dx):
    x = np.arange(1, 2 * 3 * 6 * 7 + 1, dtype=np.float32).reshape(2, 3, 6, 7)
    out = shift_images(x, dy, dx)
    for r in range(6):
        for c in range(7):
            r0, c0 = r - dy, c - dx
            inside = 0 <= r0 < 6 and 0 <= c0 < 7
            np.testing.assert_array_equal(out[..., r, c], x[..., r0, c0] if inside else 0)


def test_views_are_the_image_its_mirror_and_their_shifts():
    x = np.random.default_rng(1).random((3, 1, 8, 8)).astype(np.float32)
    only = tta_views(x)
    assert len(only) == 1 and np.array_equal(only[0], x)
    flipped = tta_views(x, flip=True)
    assert len(flipped) == 2 and np.array_equal(flipped[1], x[..., ::-1])
    shifted = tta_views(x, shift=2)
    assert len(shifted) == 5 and np.array_equal(shifted[0], x)
    expected = [shift_images(x, 0, 2), shift_images(x, 0, -2), shift_images(x, 2, 0), shift_images(x, -2, 0)]
    for view, want in zip(shifted[1:], expected):
        np.testing.assert_array_equal(view, want)
    both = tta_views(x, flip=True, shift=1)
    assert len(both) == 10
    np.testing.assert_array_equal(both[5], x[..., ::-1])
    np.testing.assert_array_equal(both[6], shift_images(x[..., ::-1], 0, 1))
    assert all(v.flags.c_contiguous for v in both)


@pytest.mark.parametrize("shift", [-1, 8, 1.5, True, "1"])
def test_a_bad_shift_is_refused_with_the_range(shift):
    with pytest.raises(ValueError, match=r"TTA shift must be a whole number of pixels from 0 to 7"):
        tta_views(np.zeros((1, 1, 8, 8), np.float32), shift=shift)


def _manual_logits(model, images, views):
    mean, std = np.float32(NORM[0][0]), np.float32(NORM[1][0])
    x = images.astype(np.float32) / 255.0
    model.eval()
    with no_grad():
        logits = [model(Tensor((v - mean) / std)).data for v in views(x)]
    model.train()
    return np.mean(logits, axis=0)


@pytest.mark.parametrize("flip, shift", [(False, 0), (True, 0), (False, 1), (True, 2)])
def test_evaluate_predicts_from_the_mean_logits_of_the_views(flip, shift):
    model = build("mnist_5k", seed=3)
    images, labels = _images()
    result = evaluate(model, images, labels, NORM, batch_size=16, tta_flip=flip, tta_shift=shift)
    logits = _manual_logits(model, images, lambda x: tta_views(x, flip=flip, shift=shift))
    np.testing.assert_array_equal(result["predictions"], logits.argmax(axis=1))
    assert result["acc"] == pytest.approx(float((logits.argmax(axis=1) == labels).mean()))


def test_flip_tta_is_the_mirror_average_it_always_was():
    """Flipping before normalising (now) and after it (before minivgg.tta) are the same."""
    model = build("mnist_5k", seed=0)
    images, labels = _images(30)
    mean, std = np.float32(NORM[0][0]), np.float32(NORM[1][0])
    x = (images.astype(np.float32) / 255.0 - mean) / std
    model.eval()
    with no_grad():
        old = (model(Tensor(x)).data + model(Tensor(np.ascontiguousarray(x[..., ::-1]))).data) / 2
    model.train()
    result = evaluate(model, images, labels, NORM, tta_flip=True)
    np.testing.assert_array_equal(result["predictions"], old.argmax(axis=1))


def test_recipe_validation_refuses_a_bad_tta_shift():
    validate_recipe(get_recipe("mnist_7k_plus3").override(tta_shift=1))
    for bad in (-1, True, 1.5):
        with pytest.raises(ValueError, match=r"tta_shift must be a whole number of pixels"):
            validate_recipe(get_recipe("mnist_7k_plus3").override(tta_shift=bad))


def _time_to_accuracy():
    path = Path(__file__).resolve().parent.parent / "benchmarks" / "time_to_accuracy.py"
    spec = importlib.util.spec_from_file_location("bench_time_to_accuracy_tta", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("flip, shift", [(True, 0), (False, 1)])
def test_torch_twin_evaluates_the_same_views(torch, flip, shift):
    from minivgg.interop import to_torch
    model = build("mnist_7k", seed=2)
    images, labels = _images(64, seed=5)
    ours = evaluate(model, images, labels, NORM, tta_flip=flip, tta_shift=shift)
    acc, loss = _time_to_accuracy().torch_evaluate(torch, to_torch(model), images, labels, NORM,
                                                   flip, tta_shift=shift, batch_size=24)
    assert acc == pytest.approx(ours["acc"]) and loss == pytest.approx(ours["loss"], rel=1e-4)


def test_a_saved_model_is_scored_with_its_recipes_tta_unless_told_otherwise():
    from minivgg.tta import saved_tta
    meta = {"recipe": {"tta_flip": True, "tta_shift": 2}}
    assert saved_tta(meta) == (True, 2)
    assert saved_tta(meta, flip=False, shift=0) == (False, 0)
    assert saved_tta(meta, shift=1) == (True, 1)
    assert saved_tta({"recipe": {"tta_flip": True}}) == (True, 0)    # written before tta_shift
    assert saved_tta({}) == (False, 0)                               # no recipe: plain model


def test_describe_tta_names_the_views():
    from minivgg.tta import describe_tta
    assert describe_tta(False, 0) == "no TTA"
    assert describe_tta(True, 0) == "TTA: mirror, 2 views"
    assert describe_tta(False, 1) == "TTA: 1-pixel shifts, 5 views"
    assert describe_tta(True, 2) == "TTA: mirror + 2-pixel shifts, 10 views"


def test_translate_views_and_weights_are_airbenchs(torch):
    """airbench94's mirror + translate TTA, written on torch: the two mirror views weighted
    1/2, the mirror views of the image moved 1 pixel down-right and up-left (reflect) 1/2."""
    from minivgg.interop import to_torch
    from minivgg.tta import tta_weights
    model = build("mnist_5k", seed=1)
    model.eval()
    x = np.random.default_rng(3).standard_normal((6, 1, 28, 28)).astype(np.float32)
    twin = to_torch(model)
    with torch.no_grad():
        inputs = torch.from_numpy(x)
        mirror = lambda v: 0.5 * twin(v) + 0.5 * twin(v.flip(-1))  # noqa: E731
        padded = torch.nn.functional.pad(inputs, (1,) * 4, mode="reflect")
        moved = [padded[:, :, 0:28, 0:28], padded[:, :, 2:30, 2:30]]
        expected = 0.5 * mirror(inputs) + 0.5 * torch.stack([mirror(m) for m in moved]).mean(0)
    views = tta_views(x, flip=True, translate=1)
    assert len(views) == 6
    np.testing.assert_array_equal(views[1], np.asarray(moved[0]))
    np.testing.assert_array_equal(views[2], np.asarray(moved[1]))
    weights = tta_weights(True, 0, 1)
    np.testing.assert_allclose(weights, [0.25, 0.125, 0.125] * 2)
    from minivgg.train import averaged_logits
    with no_grad():
        ours = averaged_logits(model, x, tta_flip=True, tta_translate=1)
    np.testing.assert_allclose(ours, expected.numpy(), rtol=1e-4, atol=1e-5)
    assert tta_weights(True, 2, 0).tolist() == [0.1] * 10
    with pytest.raises(ValueError, match="not both"):
        tta_views(x, shift=1, translate=1)
    with pytest.raises(ValueError, match="TTA translate must be"):
        tta_views(x, translate=28)


def test_a_saved_model_keeps_its_recipes_translate_unless_told_otherwise():
    from minivgg.tta import describe_tta, saved_tta_translate
    meta = {"recipe": {"tta_flip": True, "tta_translate": 1}}
    assert saved_tta_translate(meta) == 1
    assert saved_tta_translate(meta, flip=False, shift=0) == 0
    assert saved_tta_translate({"recipe": {"tta_flip": True}}) == 0
    assert describe_tta(True, 0, 1) == "TTA: mirror + 1-pixel diagonal translates, 6 views"
