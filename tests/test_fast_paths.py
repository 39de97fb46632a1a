"""The paths conv2d and pooling take only for larger arrays, on small ones.

im2col, col2im and the row unfolding work through blocks of ~BLOCK_BYTES (one block for the
small arrays of the other tests). Here the blocks are shrunk to one row or channel, so
every such path is checked against a gradient check and against the whole-array path.
ELU and LeakyReLU (compiled selects): exactly the two-branch values.
"""
import numpy as np
import pytest

import minivgg
import minivgg.functional as F
from minivgg.functional import conv, windows
from conftest import gradcheck


@pytest.fixture
def tiny_blocks(monkeypatch):
    monkeypatch.setattr(windows, "BLOCK_BYTES", 1)
    monkeypatch.setattr(conv, "BLOCK_BYTES", 1)


def _outputs_and_grads(fn, *arrays):
    tensors = [minivgg.Tensor(a, requires_grad=True) for a in arrays]
    out = fn(*tensors)
    out.backward(np.random.default_rng(9).standard_normal(out.shape).astype(out.dtype))
    return [out.data] + [t.grad for t in tensors]


def _zoo_block(x, w, bn_w, bn_b, w2):
    """Conv (padded) -> ReLU -> BN -> MaxPool (tiled) -> Conv -> AvgPool (overlapping)."""
    h = F.relu(F.conv2d(x, w, padding=1))
    h = F.batch_norm(h, None, None, bn_w, bn_b, training=True)
    h = F.conv2d(F.max_pool2d(h, 2), w2)
    return F.avg_pool2d(h, 2, stride=1)


def _zoo_block_arrays(dtype):
    rng = np.random.default_rng(0)
    return [rng.standard_normal(shape).astype(dtype)
            for shape in [(3, 2, 6, 6), (4, 2, 3, 3), (4,), (4,), (3, 4, 2, 2)]]


def test_one_row_blocks_gradcheck(tiny_blocks):
    gradcheck(_zoo_block, *_zoo_block_arrays(np.float64))


def test_one_row_blocks_equal_whole_arrays(monkeypatch):
    arrays = _zoo_block_arrays(np.float32)
    whole = _outputs_and_grads(_zoo_block, *arrays)
    monkeypatch.setattr(windows, "BLOCK_BYTES", 1)
    monkeypatch.setattr(conv, "BLOCK_BYTES", 1)
    blocked = _outputs_and_grads(_zoo_block, *arrays)
    for a, b in zip(blocked, whole):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("alpha", [1.0, 0.7, 2.5, -0.5])
def test_branch_free_elu_and_leaky_relu_equal_their_definitions(alpha):
    """ELU and LeakyReLU are compiled selects (kernels/elementwise.py); the values and
    slopes must be exactly those of the two-branch definitions (ELU's
    float32 exponential, its own, rounds float64's: kernels/elementwise.py)."""
    rng = np.random.default_rng(4)
    x = np.concatenate([rng.standard_normal(1000) * 5, [0.0, -0.0, np.inf, -np.inf, 1e-30,
                                                       -1e-30, -80.0, 80.0]]).astype(np.float32)
    g = rng.standard_normal(x.shape).astype(np.float32)
    a = np.float32(alpha)
    negative64 = np.minimum(x, 0).astype(np.float64)
    with np.errstate(over="ignore", invalid="ignore"):
        cases = [
            (lambda t: F.elu(t, alpha=alpha),
             np.where(x > 0, x, a * np.expm1(negative64).astype(x.dtype)),
             np.where(x > 0, g, g * (a * np.exp(negative64).astype(x.dtype)))),
            (lambda t: F.leaky_relu(t, negative_slope=alpha),
             np.where(x > 0, x, x * a), np.where(x > 0, g, g * a)),
        ]
    for op, value, slope in cases:
        out, gx = _outputs_and_grads_with(op, x, g)
        assert out.dtype == np.float32 and gx.dtype == np.float32
        np.testing.assert_array_equal(out, value)
        np.testing.assert_array_equal(gx, slope)


def _outputs_and_grads_with(op, x, grad):
    xt = minivgg.Tensor(x, requires_grad=True)
    out = op(xt)
    out.backward(grad)
    return out.data, xt.grad
