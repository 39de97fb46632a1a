"""ELU and LeakyReLU (compiled selects): exactly the two-branch values."""
import numpy as np
import pytest

import minivgg
import minivgg.functional as F


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
