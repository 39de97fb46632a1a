"""conv2d's (C, H, W, N) memory order behind NCHW arrays, and the ops that take it as it is.

conv2d returns (N, C, H, W) arrays whose memory is (C, H, W, N)-ordered; relu, batch_norm,
tiled max pooling, dropout and the next conv2d work in that order without converting it.
Every op must give the same values and gradients whatever the memory order of its input
and of the gradient it receives.
"""
import numpy as np
import pytest

import minivgg
import minivgg.functional as F
from minivgg.functional.layout import as_chwn, chwn_view, from_chwn, padded_chwn
from conftest import gradcheck


def _chwn_ordered(a: np.ndarray) -> np.ndarray:
    """The same (N, C, H, W) values, laid out (C, H, W, N) in memory."""
    out = from_chwn(np.ascontiguousarray(a.transpose(1, 2, 3, 0)))
    assert chwn_view(out) is not None and not out.flags.c_contiguous
    return out


def _run(op, x, grad, *params):
    """op's output, and the gradients of x and params for the given output gradient."""
    xt = minivgg.Tensor(x, requires_grad=True)
    pts = [minivgg.Tensor(p, requires_grad=True) for p in params]
    out = op(xt, *pts)
    out.backward(grad)
    return out.data, [xt.grad] + [p.grad for p in pts]


def _assert_same_in_both_orders(op, shape, *params, seed=0, exact=False):
    """op gives the same output and gradients for C-ordered and (C, H, W, N)-ordered inputs
    and output gradients, in every combination."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape).astype(np.float32)
    reference_out, reference_grads = None, None
    for x_in in (x, _chwn_ordered(x)):
        probe = op(minivgg.Tensor(x_in), *params).data
        grad = np.random.default_rng(seed + 1).standard_normal(probe.shape).astype(np.float32)
        for grad_in in (grad, _chwn_ordered(grad)):
            out, grads = _run(op, x_in, grad_in, *params)
            assert out.dtype == np.float32 and all(g.dtype == np.float32 for g in grads)
            if reference_out is None:
                reference_out, reference_grads = out, grads
                continue
            check = (np.testing.assert_array_equal if exact
                     else lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6))
            check(out, reference_out)
            for g, r in zip(grads, reference_grads):
                check(g, r)
    return reference_out


def test_conv2d_output_is_nchw_over_chwn_memory():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 3, 6, 5)).astype(np.float32)
    w = rng.standard_normal((2, 3, 3, 3)).astype(np.float32)
    out = F.conv2d(x, w, padding=1).data
    assert out.shape == (4, 2, 6, 5)
    chwn = chwn_view(out)
    assert chwn is not None and chwn.shape == (2, 6, 5, 4)
    # indexing is NCHW: out[n, o] is sample n's map o
    single = F.conv2d(x[2:3], w, padding=1).data
    np.testing.assert_allclose(out[2], single[0], rtol=1e-6, atol=1e-6)
    assert np.ascontiguousarray(out).flags.c_contiguous


def test_as_chwn_is_free_for_conv_outputs_and_a_copy_otherwise():
    x = np.arange(2 * 3 * 4 * 5, dtype=np.float32).reshape(2, 3, 4, 5)
    copied = as_chwn(x)
    assert copied.shape == (3, 4, 5, 2) and copied.flags.c_contiguous
    np.testing.assert_array_equal(copied, x.transpose(1, 2, 3, 0))
    y = _chwn_ordered(x)
    assert np.shares_memory(as_chwn(y), y)
    np.testing.assert_array_equal(from_chwn(as_chwn(y)), x)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_padded_chwn_of_an_nchw_batch_is_the_padded_transpose(dtype):
    """C-ordered batches take the compiled transpose (kernels/layout.py), strided views and
    other dtypes NumPy's copy: the same values either way, the border zero."""
    x = np.random.default_rng(0).standard_normal((37, 3, 9, 7)).astype(dtype)
    padding = (1, 2, 0, 3)  # top, bottom, left, right
    expected = np.pad(x.transpose(1, 2, 3, 0), ((0, 0), (1, 2), (0, 3), (0, 0)))
    wide = np.zeros((37, 3, 9, 14), dtype)
    wide[..., ::2] = x
    for batch in (x, wide[..., ::2]):  # C-ordered, then every other column of a wider array
        padded = padded_chwn(batch, padding)
        assert padded.dtype == dtype and padded.flags.c_contiguous
        np.testing.assert_array_equal(padded, expected)


@pytest.mark.parametrize("padding, stride, bias", [(0, 1, False), (1, 1, True), (2, 2, True)])
def test_conv2d_takes_either_memory_order(padding, stride, bias):
    rng = np.random.default_rng(1)
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    params = (w,) if not bias else (w, rng.standard_normal(4).astype(np.float32))
    _assert_same_in_both_orders(
        lambda x, *p: F.conv2d(x, *p, stride=stride, padding=padding), (5, 3, 7, 6), *params)


@pytest.mark.parametrize("training", [True, False])
def test_batch_norm_takes_either_memory_order(training):
    rng = np.random.default_rng(2)
    w, b = rng.standard_normal(3).astype(np.float32), rng.standard_normal(3).astype(np.float32)
    mean, var = rng.standard_normal(3).astype(np.float32), rng.uniform(0.5, 2, 3).astype(np.float32)

    def op(x, w, b):
        return F.batch_norm(x, mean.copy(), var.copy(), w, b, training=training)

    _assert_same_in_both_orders(op, (6, 3, 4, 5), w, b)
    x = _chwn_ordered(rng.standard_normal((6, 3, 4, 5)).astype(np.float32))
    assert chwn_view(F.batch_norm(x, mean, var, w, b, training=training).data) is not None


def test_batch_norm_updates_running_stats_the_same_in_either_order():
    x = np.random.default_rng(3).standard_normal((8, 2, 3, 3)).astype(np.float32) * 3 + 1
    stats = []
    for x_in in (x, _chwn_ordered(x)):
        mean, var = np.zeros(2, np.float32), np.ones(2, np.float32)
        F.batch_norm(x_in, mean, var, training=True, momentum=0.5)
        stats.append((mean, var))
    np.testing.assert_allclose(stats[0][0], stats[1][0], rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(stats[0][1], stats[1][1], rtol=1e-6, atol=1e-7)


def test_tiled_max_pool_takes_either_memory_order_and_keeps_it():
    # relu makes ties (all-zero windows): the first maximum must win in both orders
    op = lambda x: F.max_pool2d(F.relu(x), 2)  # noqa: E731
    out = _assert_same_in_both_orders(op, (4, 3, 6, 8), exact=True)
    assert out.shape == (4, 3, 3, 4)
    x = _chwn_ordered(np.random.default_rng(4).standard_normal((4, 3, 6, 8)).astype(np.float32))
    assert chwn_view(op(x).data) is not None


def test_relu_and_dropout_keep_the_memory_order():
    x = _chwn_ordered(np.random.default_rng(5).standard_normal((4, 3, 2, 2)).astype(np.float32))
    assert chwn_view(F.relu(x).data) is not None
    _assert_same_in_both_orders(F.relu, (4, 3, 2, 2), exact=True)
    out = F.dropout(x, 0.5, rng=np.random.default_rng(0)).data
    assert chwn_view(out) is not None
    # dropout draws its bits in the input's memory order: the same seed and layout give the
    # same mask, and the mask of a (C, H, W, N) input is that of the C-ordered copy of its
    # (C, H, W, N) array, transposed back
    np.testing.assert_array_equal(out, F.dropout(x, 0.5, rng=np.random.default_rng(0)).data)
    chwn = np.ascontiguousarray(x.transpose(1, 2, 3, 0))
    as_c = F.dropout(chwn, 0.5, rng=np.random.default_rng(0)).data
    np.testing.assert_array_equal(out, as_c.transpose(3, 0, 1, 2))
    # whatever the gradient's layout, backward applies forward's mask
    for x_in in (np.ascontiguousarray(x), x):
        grads = []
        for grad in (np.ones(x.shape, np.float32), _chwn_ordered(np.ones(x.shape, np.float32))):
            result, (gx,) = _run(lambda t: F.dropout(t, 0.5, rng=np.random.default_rng(0)),
                                 x_in, grad)
            np.testing.assert_array_equal(gx, (result != 0) * np.float32(2))
            grads.append(gx)
        np.testing.assert_array_equal(grads[0], grads[1])


def test_conv_relu_bn_pool_conv_chain_gradcheck():
    """The zoo's Conv -> ReLU -> BN -> MaxPool -> Conv, in float64, passing (C, H, W, N)
    memory from op to op."""
    rng = np.random.default_rng(6)
    x = rng.standard_normal((3, 2, 6, 6))
    w1 = rng.standard_normal((3, 2, 3, 3))
    bn_w, bn_b = rng.standard_normal(3), rng.standard_normal(3)
    w2 = rng.standard_normal((2, 3, 2, 2))

    def chain(x, w1, bn_w, bn_b, w2):
        h = F.relu(F.conv2d(x, w1, padding=1))
        h = F.batch_norm(h, None, None, bn_w, bn_b, training=True)
        return F.conv2d(F.max_pool2d(h, 2), w2)

    gradcheck(chain, x, w1, bn_w, bn_b, w2)
