"""Shared test helpers: a float64 central-difference gradient check and torch access (the
torch-parity comparisons are in parity.py)."""
import os

import numpy as np
import pytest

import minivgg


def numerical_grad(f, x: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    """d f(x) / d x by central differences; f maps an array to a float."""
    grad = np.zeros_like(x)
    flat, gflat = x.reshape(-1), grad.reshape(-1)
    for i in range(flat.size):
        old = flat[i]
        flat[i] = old + eps
        plus = f(x)
        flat[i] = old - eps
        minus = f(x)
        flat[i] = old
        gflat[i] = (plus - minus) / (2 * eps)
    return grad


def gradcheck(fn, *arrays, seed: int = 0, atol: float = 1e-6, rtol: float = 1e-5):
    """Check the analytic gradients of `fn(*tensors) -> Tensor` against central differences.

    Every array is float64 and differentiated; the scalar checked is sum(out * w) for a
    fixed random w, so every output element's gradient is exercised.
    """
    rng = np.random.default_rng(seed)
    arrays = [np.array(a, dtype=np.float64) for a in arrays]
    tensors = [minivgg.Tensor(a, requires_grad=True) for a in arrays]
    out = fn(*tensors)
    weight = rng.standard_normal(out.shape)
    (out * minivgg.Tensor(weight)).sum().backward()
    for i, (a, t) in enumerate(zip(arrays, tensors)):
        def scalar(v, i=i):
            args = [minivgg.Tensor(v if j == i else arrays[j]) for j in range(len(arrays))]
            return float((fn(*args).data * weight).sum())
        expected = numerical_grad(scalar, a.copy())
        assert t.grad is not None, f"input {i} got no gradient"
        np.testing.assert_allclose(t.grad, expected, atol=atol, rtol=rtol,
                                   err_msg=f"gradient of input {i} disagrees with central differences")


@pytest.fixture(scope="session")
def torch():
    """PyTorch as a reference (2 threads, like the benchmarks); a test-only dependency.

    Outside CI a missing torch skips the parity tests (with the reason shown by -rs);
    in CI it is an error, since the parity tests are the point.
    """
    if os.environ.get("CI"):
        import torch
    else:
        torch = pytest.importorskip("torch", reason="PyTorch 2.13.0 is the test reference: "
                                                    "pip install torch==2.13.0")
    torch.set_num_threads(2)
    return torch
