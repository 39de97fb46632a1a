"""log_softmax, softmax, nll_loss and cross_entropy: gradient checks, PyTorch parity, errors."""
import numpy as np
import pytest

import minivgg
import minivgg.functional as F
from conftest import gradcheck
from parity import assert_op_matches_torch

REDUCTIONS = ["mean", "sum", "none"]
SMOOTHINGS = [0.0, 0.1, 1.0]


def _logits(shape, seed=0, dtype=np.float64, scale=2.0):
    return (np.random.default_rng(seed).standard_normal(shape) * scale).astype(dtype)


def _labels(n, classes, seed=1):
    return np.random.default_rng(seed).integers(0, classes, n)


# ---- log_softmax / softmax -------------------------------------------------------------

@pytest.mark.parametrize("shape, axis", [((4, 5), 1), ((3, 4, 2), 1), ((3, 4), -1), ((5, 2), 0)])
@pytest.mark.parametrize("op", [F.log_softmax, F.softmax])
def test_softmax_gradcheck(op, shape, axis):
    gradcheck(lambda x: op(x, axis=axis), _logits(shape))


@pytest.mark.parametrize("op_name", ["log_softmax", "softmax"])
@pytest.mark.parametrize("axis", [1, -1, 0])
def test_softmax_matches_torch(torch, op_name, axis):
    x = _logits((6, 10, 3), 2, np.float32, scale=5.0)
    grad = _logits((6, 10, 3), 3, np.float32)
    assert_op_matches_torch(torch, lambda t: getattr(F, op_name)(t, axis=axis),
                            lambda t: getattr(torch.nn.functional, op_name)(t, dim=axis), [x],
                            grad, rtol=1e-6, atol=1e-6, grad_rtol=1e-5, grad_atol=1e-6)


def test_log_softmax_is_stable_for_huge_logits(torch):
    x = np.array([[1e4, 0.0, -1e4], [3e4, 3e4, 3e4], [-1e4, -1e4 + 1, -1e4 + 2]], np.float32)
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        ours = F.log_softmax(x).data
        probs = F.softmax(x).data
    np.testing.assert_allclose(ours, torch.log_softmax(torch.tensor(x), 1).numpy(), rtol=1e-6)
    np.testing.assert_allclose(probs.sum(axis=1), 1, rtol=1e-6)
    assert np.isfinite(ours).all()


def test_softmax_axis_error():
    with pytest.raises(ValueError, match=r"log_softmax: axis 2 is out of range for an input of "
                                         r"shape \(3, 4\)"):
        F.log_softmax(np.zeros((3, 4)), axis=2)
    with pytest.raises(ValueError, match="softmax: axis -3 is out of range"):
        F.softmax(np.zeros((3, 4)), axis=-3)


# ---- nll_loss ------------------------------------------------------------------------------

@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_nll_loss_gradcheck(reduction):
    target = _labels(5, 4)
    gradcheck(lambda x: F.nll_loss(x, target, reduction=reduction), _logits((5, 4)))


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_nll_loss_matches_torch(torch, reduction):
    log_probs = torch.log_softmax(torch.tensor(_logits((8, 6), 4, np.float32)), 1).numpy()
    target = _labels(8, 6, 5)
    assert_op_matches_torch(
        torch, lambda t: F.nll_loss(t, target, reduction=reduction),
        lambda t: torch.nn.functional.nll_loss(t, torch.tensor(target), reduction=reduction),
        [log_probs], lambda shape: _logits(shape, 6, np.float32),
        rtol=1e-6, atol=1e-6, grad_rtol=1e-6, grad_atol=1e-7)


# ---- cross_entropy -----------------------------------------------------------------------

@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("label_smoothing", SMOOTHINGS)
def test_cross_entropy_gradcheck(reduction, label_smoothing):
    target = _labels(4, 5)
    gradcheck(lambda x: F.cross_entropy(x, target, label_smoothing=label_smoothing,
                                        reduction=reduction), _logits((4, 5)))


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("label_smoothing", SMOOTHINGS + [0.25])
def test_cross_entropy_matches_torch(torch, reduction, label_smoothing):
    logits = _logits((32, 10), 7, np.float32, scale=4.0)
    target = _labels(32, 10, 8)
    assert_op_matches_torch(
        torch, lambda t: F.cross_entropy(t, minivgg.Tensor(target), label_smoothing=label_smoothing,
                                         reduction=reduction),
        lambda t: torch.nn.functional.cross_entropy(t, torch.tensor(target),
                                                    label_smoothing=label_smoothing,
                                                    reduction=reduction),
        [logits], lambda shape: _logits(shape, 9, np.float32),
        rtol=1e-6, atol=1e-6, grad_rtol=1e-5, grad_atol=1e-7)


def test_cross_entropy_equals_log_softmax_then_nll():
    logits, target = _logits((6, 4), 3), _labels(6, 4, 4)
    fused = F.cross_entropy(logits, target).item()
    composed = F.nll_loss(F.log_softmax(logits), target).item()
    assert fused == pytest.approx(composed, rel=1e-14)


def test_cross_entropy_backward_is_softmax_minus_smoothed_onehot():
    logits = minivgg.Tensor(_logits((3, 4), 2), requires_grad=True)
    target = np.array([0, 3, 1])
    F.cross_entropy(logits, target, label_smoothing=0.2, reduction="sum").backward()
    q = np.full((3, 4), 0.2 / 4)
    q[np.arange(3), target] += 0.8
    np.testing.assert_allclose(logits.grad, F.softmax(logits.data).data - q, atol=1e-15)


def test_cross_entropy_keeps_float64_and_accepts_any_integer_labels():
    loss = F.cross_entropy(_logits((3, 4)), np.array([0, 1, 2], np.int32))
    assert loss.dtype == np.float64 and loss.shape == ()
    assert F.cross_entropy(_logits((3, 4)), np.array([0, 1, 2], np.uint8)).item() == loss.item()


def test_loss_errors():
    logits = np.zeros((3, 4), np.float32)
    with pytest.raises(ValueError, match=r"cross_entropy expects logits of shape \(N, classes\), "
                                         r"got shape \(4,\)"):
        F.cross_entropy(np.zeros(4), np.array([1]))
    with pytest.raises(ValueError, match=r"got shape \(2, 3, 4\)"):
        F.cross_entropy(np.zeros((2, 3, 4)), np.array([1, 2]))
    with pytest.raises(ValueError, match=r"cross_entropy: target contains label 4 but there are "
                                         r"4 classes; labels must be in 0..3"):
        F.cross_entropy(logits, np.array([0, 4, 1]))
    with pytest.raises(ValueError, match="target contains label -1 but there are 4 classes"):
        F.cross_entropy(logits, np.array([0, -1, 1]))
    with pytest.raises(ValueError, match=r"cross_entropy: target has shape \(2,\) but the input "
                                         r"has 3 rows"):
        F.cross_entropy(logits, np.array([0, 1]))
    with pytest.raises(ValueError, match=r"target has shape \(3, 1\)"):
        F.cross_entropy(logits, np.array([[0], [1], [2]]))
    with pytest.raises(ValueError, match="target must hold integer class labels, got dtype "
                                         "float32"):
        F.cross_entropy(logits, np.array([0.0, 1.0, 2.0], np.float32))
    with pytest.raises(ValueError, match=r"cross_entropy: reduction must be one of .*got 'avg'"):
        F.cross_entropy(logits, np.array([0, 1, 2]), reduction="avg")
    with pytest.raises(ValueError, match=r"label_smoothing must be in \[0, 1\], got 1.5"):
        F.cross_entropy(logits, np.array([0, 1, 2]), label_smoothing=1.5)
    with pytest.raises(ValueError, match=r"nll_loss: target contains label 9 but there are 4"):
        F.nll_loss(logits, np.array([9, 1, 2]))
    with pytest.raises(ValueError, match=r"nll_loss expects log_probs of shape \(N, classes\)"):
        F.nll_loss(np.zeros(3), np.array([0, 1, 2]))
    with pytest.raises(ValueError, match="nll_loss: reduction must be one of"):
        F.nll_loss(logits, np.array([0, 1, 2]), reduction=None)
