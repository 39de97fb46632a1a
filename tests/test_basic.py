"""Elementwise arithmetic, matmul, shape ops, reductions and linear: gradients and torch parity."""
import numpy as np
import pytest

import minivgg
import minivgg.functional as F
from conftest import gradcheck
from parity import assert_op_matches_torch

BROADCAST_PAIRS = [
    ((3, 4), (3, 4)),
    ((3, 4), (4,)),
    ((4,), (3, 4)),
    ((2, 3, 4), (3, 1)),
    ((3, 1), (1, 4)),
    ((2, 1, 4), (3, 1)),
    ((2, 3), ()),
]
ARITHMETIC = {
    "add": (F.add, lambda a, b: a + b),
    "sub": (F.sub, lambda a, b: a - b),
    "mul": (F.mul, lambda a, b: a * b),
    "div": (F.div, lambda a, b: a / b),
}


def _arrays(shape_a, shape_b, seed=0, dtype=np.float64):
    rng = np.random.default_rng(seed)
    a = rng.standard_normal(shape_a)
    b = rng.uniform(0.5, 2.0, shape_b) * rng.choice([-1, 1], shape_b)  # safe divisor
    return a.astype(dtype), b.astype(dtype)


@pytest.mark.parametrize("op", ARITHMETIC)
@pytest.mark.parametrize("shape_a, shape_b", BROADCAST_PAIRS)
def test_arithmetic_gradcheck_with_broadcasting(op, shape_a, shape_b):
    gradcheck(ARITHMETIC[op][0], *_arrays(shape_a, shape_b))


@pytest.mark.parametrize("op", ARITHMETIC)
@pytest.mark.parametrize("shape_a, shape_b", BROADCAST_PAIRS)
def test_arithmetic_matches_torch(torch, op, shape_a, shape_b):
    ours_fn, torch_fn = ARITHMETIC[op]
    a, b = _arrays(shape_a, shape_b, 1, np.float32)
    (_, grads), _ = assert_op_matches_torch(
        torch, ours_fn, torch_fn, [a, b],
        lambda shape: np.random.default_rng(2).standard_normal(shape).astype(np.float32),
        rtol=1e-6, atol=1e-7, grad_rtol=1e-5, grad_atol=1e-6)
    for ours, shape in [(grads[0], shape_a), (grads[1], shape_b)]:
        assert ours.shape == shape and ours.dtype == np.float32  # unbroadcast to the input shape


def test_operators_with_scalars_and_arrays():
    x = minivgg.Tensor(np.array([1.0, 2.0, 4.0], np.float32), requires_grad=True)
    y = (x + 1.0) * 3.0 - x / 2.0 + (1.0 - x) + np.ones(3, np.float32) * x - (-x)
    assert isinstance(y, minivgg.Tensor) and y.dtype == np.float32
    np.testing.assert_allclose(y.data, 3 * (x.data + 1) - x.data / 2 + 1 - x.data + 2 * x.data)
    y.sum().backward()
    np.testing.assert_allclose(x.grad, np.full(3, 3 - 0.5 - 1 + 1 + 1))


@pytest.mark.parametrize("shapes", [((3, 4), (4, 5)), ((1, 3), (3, 1)), ((5, 2), (2, 2))])
def test_matmul_gradcheck_and_torch(torch, shapes):
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal(shapes[0]), rng.standard_normal(shapes[1])
    gradcheck(F.matmul, a, b)
    assert_op_matches_torch(torch, lambda a, b: a @ b, lambda a, b: a @ b,
                            [a.astype(np.float32), b.astype(np.float32)],
                            lambda shape: np.ones(shape, np.float32), rtol=1e-6, atol=1e-6)


def test_reshape_and_flatten():
    x = np.random.default_rng(0).standard_normal((2, 3, 4))
    gradcheck(lambda t: F.reshape(t, (4, 6)), x)
    gradcheck(lambda t: t.reshape(6, -1), x)
    gradcheck(lambda t: t.view((3, 8)), x)
    for start_dim, shape in [(0, (24,)), (1, (2, 12)), (2, (2, 3, 4))]:
        out = F.flatten(x, start_dim)
        assert out.shape == shape
        np.testing.assert_array_equal(out.data.ravel(), x.ravel())
        gradcheck(lambda t, s=start_dim: t.flatten(s), x)
    with pytest.raises(ValueError,
                       match=r"flatten: start_dim 3 is out of range for shape \(2, 3, 4\)"):
        F.flatten(x, 3)
    with pytest.raises(ValueError, match="flatten: start_dim -1 is out of range"):
        F.flatten(x, -1)


REDUCTION_CASES = [(None, False), (0, False), (1, True), (-1, False),
                   ((0, 2), False), ((0, 2), True)]


@pytest.mark.parametrize("axis, keepdims", REDUCTION_CASES)
@pytest.mark.parametrize("name", ["sum", "mean"])
def test_reductions_gradcheck_and_torch(torch, name, axis, keepdims):
    x = np.random.default_rng(0).standard_normal((2, 3, 4))
    gradcheck(lambda t: getattr(F, name)(t, axis=axis, keepdims=keepdims), x)
    dims = tuple(range(3)) if axis is None else axis
    assert_op_matches_torch(
        torch, lambda t: getattr(t, name)(axis=axis, keepdims=keepdims),
        lambda t: getattr(torch, name)(t, dim=dims, keepdim=keepdims), [x.astype(np.float32)],
        lambda shape: np.random.default_rng(1).standard_normal(shape).astype(np.float32),
        rtol=1e-6, atol=1e-6, grad_rtol=1e-6, grad_atol=1e-7)


@pytest.mark.parametrize("bias", [True, False])
def test_linear_gradcheck_and_torch(torch, bias):
    rng = np.random.default_rng(0)
    x, w, b = rng.standard_normal((4, 3)), rng.standard_normal((5, 3)), rng.standard_normal(5)
    if bias:
        gradcheck(F.linear, x, w, b)
    else:
        gradcheck(F.linear, x, w)
    grad = rng.standard_normal((4, 5)).astype(np.float32)
    assert_op_matches_torch(torch, F.linear, torch.nn.functional.linear,
                            [a.astype(np.float32) for a in ([x, w, b] if bias else [x, w])],
                            grad, rtol=1e-6, atol=1e-6, grad_rtol=1e-5, grad_atol=1e-6)


def test_linear_on_a_flattened_conv_output_matches_c_order_and_gradchecks(torch):
    """An input in conv2d's memory order, flattened ((N, F) over (F, N) memory), takes the
    W @ x.T product: the same values as a C-ordered copy, and gradients that check."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((40, 6)).T  # (6, 40) whose memory is (40, 6)
    assert x.T.flags.c_contiguous and not x.flags.c_contiguous
    w, b = rng.standard_normal((7, 40)), rng.standard_normal(7)
    gradcheck(F.linear, x, w, b)
    x32, w32, b32 = (a.astype(np.float32) for a in (x, w, b))
    x32 = np.ascontiguousarray(x32.T).T
    ours = F.linear(x32, w32, b32).data
    np.testing.assert_allclose(ours, F.linear(np.ascontiguousarray(x32), w32, b32).data,
                               rtol=1e-6, atol=1e-6)
    theirs = torch.nn.functional.linear(*(torch.tensor(np.ascontiguousarray(a))
                                          for a in (x32, w32, b32))).numpy()
    np.testing.assert_allclose(ours, theirs, rtol=1e-6, atol=1e-6)


def test_linear_gradient_only_for_parameters():
    """The input needs no gradient (a first layer): weight and bias still get theirs."""
    x = np.ones((2, 3), np.float32)
    w = minivgg.Tensor(np.ones((4, 3), np.float32), requires_grad=True)
    b = minivgg.Tensor(np.zeros(4, np.float32), requires_grad=True)
    F.linear(x, w, b).sum().backward()
    np.testing.assert_array_equal(w.grad, np.full((4, 3), 2.0))
    np.testing.assert_array_equal(b.grad, np.full(4, 2.0))


def test_linear_errors():
    w = np.zeros((5, 3), np.float32)
    with pytest.raises(ValueError, match=r"linear expects a 2-D input \(N, in_features\), "
                                         r"got shape \(2, 3, 4\)"):
        F.linear(np.zeros((2, 3, 4), np.float32), w)
    with pytest.raises(ValueError, match=r"linear: input has 4 features but the weight expects 3 "
                                         r"\(weight shape \(5, 3\), input shape \(2, 4\)\)"):
        F.linear(np.zeros((2, 4), np.float32), w)


def test_linear_rejects_bad_weight_and_bias_shapes():
    x = np.ones((2, 3), np.float32)
    with pytest.raises(ValueError, match=r"2-D weight .*got shape \(3,\)"):
        F.linear(x, np.ones(3, np.float32))
    with pytest.raises(ValueError, match=r"bias shape \(1,\) does not match .* expected \(4,\)"):
        F.linear(x, np.ones((4, 3), np.float32), np.ones(1, np.float32))
