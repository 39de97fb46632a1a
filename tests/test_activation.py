"""Activations and dropout: gradient checks, PyTorch parity, dropout statistics, errors."""
import math

import numpy as np
import pytest

import minivgg
import minivgg.functional as F
from conftest import gradcheck
from parity import assert_op_matches_torch, run_ours

SHAPES = [(7,), (3, 4), (2, 3, 2, 2)]

# name -> (minivgg op, torch op given the torch module)
ACTIVATIONS = {
    "relu": (F.relu, lambda t: t.nn.functional.relu),
    "elu": (F.elu, lambda t: t.nn.functional.elu),
    "elu_alpha": (lambda x: F.elu(x, alpha=0.7), lambda t: lambda x: t.nn.functional.elu(x, 0.7)),
    "leaky_relu": (F.leaky_relu, lambda t: t.nn.functional.leaky_relu),
    "leaky_relu_slope": (lambda x: F.leaky_relu(x, negative_slope=0.2),
                         lambda t: lambda x: t.nn.functional.leaky_relu(x, 0.2)),
    "gelu": (F.gelu, lambda t: t.nn.functional.gelu),
    "gelu_tanh": (lambda x: F.gelu(x, approximate="tanh"),
                  lambda t: lambda x: t.nn.functional.gelu(x, approximate="tanh")),
    "tanh": (F.tanh, lambda t: t.tanh),
    "sigmoid": (F.sigmoid, lambda t: t.sigmoid),
}


def _away_from_kinks(shape, seed=0, dtype=np.float64, scale=2.0):
    x = np.random.default_rng(seed).standard_normal(shape) * scale
    x[np.abs(x) < 0.05] += 0.1  # central differences must not straddle relu's kink
    return x.astype(dtype)


@pytest.mark.parametrize("name", ACTIVATIONS)
@pytest.mark.parametrize("shape", SHAPES)
def test_activation_gradcheck(name, shape):
    gradcheck(ACTIVATIONS[name][0], _away_from_kinks(shape))


@pytest.mark.parametrize("name", ACTIVATIONS)
def test_activation_matches_torch(torch, name):
    ours_fn, theirs_fn = ACTIVATIONS[name][0], ACTIVATIONS[name][1](torch)
    x = np.concatenate([_away_from_kinks((2, 3, 8, 8), 1, scale=3.0).ravel(),
                        np.linspace(-12, 12, 481), [0.0, -0.0]]).astype(np.float32)
    grad = np.random.default_rng(2).standard_normal(x.shape).astype(np.float32)
    (out, grads), (t_out, t_grads) = assert_op_matches_torch(
        torch, ours_fn, theirs_fn, [x], grad, rtol=1e-5, atol=3e-6, names=["gradient"])
    r_out, r_grads, _ = run_ours(ours_fn, [x.astype(np.float64)], grad.astype(np.float64))
    for what, a, t, r in zip(["output", "gradient"], [out, grads[0]], [t_out, t_grads[0]],
                             [r_out, r_grads[0]]):
        # and no less accurate than torch's float32 (against float64, itself checked below)
        assert np.abs(a - r).max() <= 2 * np.abs(t - r).max() + 1e-7, what


def test_activations_keep_float64(torch):
    x = np.linspace(-6, 6, 101)
    for name, (ours_fn, theirs_fn) in ACTIVATIONS.items():
        out = ours_fn(x)
        assert out.dtype == np.float64, name
        np.testing.assert_allclose(out.data, theirs_fn(torch)(torch.tensor(x)).numpy(),
                                   rtol=1e-13, atol=1e-15, err_msg=name)


def test_sigmoid_and_elu_do_not_overflow():
    x = np.array([-1000.0, -50.0, 0.0, 50.0, 1000.0], np.float32)
    with np.errstate(over="raise", invalid="raise"):
        s = F.sigmoid(x).data
        e = F.elu(x).data
    np.testing.assert_allclose(s, [0.0, 1.9287e-22, 0.5, 1.0, 1.0], rtol=1e-4)
    np.testing.assert_allclose(e, [-1.0, -1.0, 0.0, 50.0, 1000.0])


@pytest.mark.parametrize("approximate", ["none", "tanh"])
def test_gelu_float32_accuracy(approximate):
    """float32 GELU computes erfc (a Chebyshev fit) and exp with its own arithmetic
    (kernels/elementwise.py), float64 with libm's. Over the whole range, float32 values and
    slopes stay within the fit's relative error (1.2e-7, plus rounding) of float64's at the
    same inputs; absolutely near the slope's zero and where float32 underflows."""
    x32 = np.concatenate([np.linspace(-12, 12, 240_001), [-1e-30, 0.0, -0.0, 1e-30]]).astype(
        np.float32)
    x, ones = x32.astype(np.float64), np.ones(x32.shape)
    out32, grads32, _ = run_ours(lambda t: F.gelu(t, approximate), [x32], ones.astype(np.float32))
    out64, grads64, _ = run_ours(lambda t: F.gelu(t, approximate), [x], ones)
    assert out32.dtype == grads32[0].dtype == np.float32
    for got, want in [(out32, out64), (grads32[0], grads64[0])]:
        tolerance = 4e-7 * np.abs(want) + np.where(np.abs(x) < 3, 4e-8, 1e-38)
        assert (np.abs(got - want) <= tolerance).all(), approximate
    if approximate == "none":  # float64: libm's erfc
        expected = [v * 0.5 * math.erfc(-math.sqrt(0.5) * v) for v in x[::97]]
        np.testing.assert_allclose(out64[::97], expected, rtol=1e-15, atol=1e-300)


def test_activation_option_errors():
    with pytest.raises(ValueError, match="gelu: approximate must be 'none' or 'tanh', got 'erf'"):
        F.gelu(np.zeros(3), approximate="erf")
    with pytest.raises(ValueError, match="elu: alpha must be a number"):
        F.elu(np.zeros(3), alpha="1")
    with pytest.raises(ValueError, match="leaky_relu: negative_slope must be a number"):
        F.leaky_relu(np.zeros(3), negative_slope=None)


def test_relu_gradient_is_zero_at_zero():
    x = minivgg.Tensor(np.array([-1.0, 0.0, 2.0], np.float32), requires_grad=True)
    F.relu(x).sum().backward()
    np.testing.assert_array_equal(x.grad, [0.0, 0.0, 1.0])


# ---- dropout -------------------------------------------------------------------------

@pytest.mark.parametrize("p", [0.1, 0.5, 0.8])
def test_dropout_statistics_and_exact_scale(torch, p):
    n = 200_000
    x = minivgg.Tensor(np.ones(n, np.float32), requires_grad=True)
    out = F.dropout(x, p, training=True, rng=np.random.default_rng(0))
    kept = out.data != 0
    assert abs(kept.mean() - (1 - p)) < 5 * math.sqrt(p * (1 - p) / n)
    scale = np.float32(1 / (1 - p))
    np.testing.assert_array_equal(out.data[kept], scale)  # exact, in float32
    torch_out = torch.nn.functional.dropout(torch.ones(1000), p, training=True).numpy()
    assert torch_out[torch_out != 0][0] == scale  # the same scale as torch, bit for bit
    out.backward(np.full(n, 2.0, np.float32))
    np.testing.assert_array_equal(x.grad, 2 * out.data)  # gradient flows through kept units
    assert out.dtype == np.float32 and x.grad.dtype == np.float32


def test_dropout_same_seed_same_mask():
    x = np.random.default_rng(5).standard_normal((4, 3, 5, 5)).astype(np.float32)
    a = F.dropout(x, 0.3, rng=np.random.default_rng(11)).data
    b = F.dropout(x, 0.3, rng=np.random.default_rng(11)).data
    c = F.dropout(x, 0.3, rng=np.random.default_rng(12)).data
    np.testing.assert_array_equal(a, b)
    assert np.any((a == 0) != (c == 0))


@pytest.mark.parametrize("layout", ["nchw", "chwn", "strided"])
def test_dropout_in_each_memory_layout_keeps_that_layout(layout):
    # conv2d's outputs are (C, H, W, N) in memory: the draws follow x's memory order, the
    # output keeps it, and backward applies the same mask whatever the gradient's layout
    rng = np.random.default_rng(0)
    data = rng.standard_normal((6, 3, 5, 4)).astype(np.float32)
    if layout == "chwn":
        data = np.ascontiguousarray(data.transpose(1, 2, 3, 0)).transpose(3, 0, 1, 2)
    elif layout == "strided":
        data = np.repeat(data, 2, axis=3)[..., ::2]
    x = minivgg.Tensor(data, requires_grad=True)
    out = F.dropout(x, 0.4, rng=np.random.default_rng(1))
    kept = out.data != 0
    scale = np.float32(1 / 0.6)
    np.testing.assert_array_equal(out.data[kept], data[kept] * scale)
    assert 0.4 < kept.mean() < 0.8
    if layout == "chwn":
        assert out.data.transpose(1, 2, 3, 0).flags.c_contiguous
    out.backward(np.ones(data.shape, np.float32))  # an (N, C, H, W) gradient
    np.testing.assert_array_equal(x.grad, kept * scale)


def test_dropout_uses_no_global_random_state():
    np.random.seed(3)
    expected = np.random.random(3)
    np.random.seed(3)
    F.dropout(np.ones(100), 0.5, rng=np.random.default_rng(0))
    F.dropout2d(np.ones((2, 3, 2, 2)), 0.5, rng=np.random.default_rng(0))
    np.testing.assert_array_equal(np.random.random(3), expected)


def test_dropout_gradcheck():
    x = np.random.default_rng(0).standard_normal((3, 4, 2, 2))
    gradcheck(lambda t: F.dropout(t, 0.4, rng=np.random.default_rng(1)), x)
    gradcheck(lambda t: F.dropout2d(t, 0.4, rng=np.random.default_rng(1)), x)


def test_dropout_is_identity_in_eval_and_for_p_zero():
    x = minivgg.Tensor(np.arange(6, dtype=np.float32), requires_grad=True)
    assert F.dropout(x, 0.5, training=False) is x
    assert F.dropout(x, 0.0, training=True) is x  # no rng needed: nothing is random
    assert F.dropout2d(np.ones((1, 2, 2, 2)), 0.5, training=False).data.sum() == 8


def test_dropout_p_one_gives_zeros():
    x = minivgg.Tensor(np.ones((3, 4), np.float32), requires_grad=True)
    out = F.dropout(x, 1.0, rng=np.random.default_rng(0))
    np.testing.assert_array_equal(out.data, 0)
    out.sum().backward()
    np.testing.assert_array_equal(x.grad, 0)
    assert x.grad.dtype == np.float32


def test_dropout_keeps_float64():
    out = F.dropout(np.ones(50), 0.5, rng=np.random.default_rng(0))
    assert out.dtype == np.float64
    assert set(np.unique(out.data)) <= {0.0, 2.0}


def test_dropout2d_zeroes_whole_channels():
    n, c = 64, 32
    x = np.ones((n, c, 3, 3), np.float32)
    out = F.dropout2d(x, 0.25, rng=np.random.default_rng(3)).data
    per_channel = out.reshape(n, c, -1)
    assert np.all(per_channel.min(axis=2) == per_channel.max(axis=2))  # all or nothing
    kept = per_channel[:, :, 0] != 0
    assert abs(kept.mean() - 0.75) < 5 * math.sqrt(0.25 * 0.75 / (n * c))
    np.testing.assert_array_equal(per_channel[kept], np.float32(1 / 0.75))


def test_dropout_errors():
    x = np.ones((2, 3), np.float32)
    with pytest.raises(ValueError, match=r"dropout: training with p=0.5 needs rng=numpy.random"):
        F.dropout(x, 0.5, training=True)
    with pytest.raises(ValueError, match=r"dropout: p must be a probability in \[0, 1\], got 1.5"):
        F.dropout(x, 1.5, rng=np.random.default_rng(0))
    with pytest.raises(ValueError, match=r"dropout: p must be a probability"):
        F.dropout(x, -0.1, training=False)
    with pytest.raises(ValueError, match="rng must be a numpy.random.Generator, got int"):
        F.dropout(x, 0.5, rng=0)
    with pytest.raises(ValueError, match=r"dropout2d expects an input of shape \(N, C, H, W\), "
                                         r"got shape \(2, 3\)"):
        F.dropout2d(x, 0.5, rng=np.random.default_rng(0))
    with pytest.raises(ValueError, match="dropout2d: training with p=0.5 needs rng"):
        F.dropout2d(np.ones((1, 2, 2, 2)), 0.5)
