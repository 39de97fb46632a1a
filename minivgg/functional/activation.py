"""Elementwise activations and dropout, each forward beside its backward."""
from __future__ import annotations

import math

import numpy as np

from ..autograd import Function, Tensor, as_tensor
from ..kernels import elementwise as kernels
from .checks import number, one_of, probability
from .layout import as_chwn, elementwise, from_chwn, memory_order

__all__ = ["relu", "elu", "leaky_relu", "gelu", "tanh", "sigmoid", "dropout", "dropout2d"]

GELU_APPROXIMATIONS = ("none", "tanh")


class ReLUOp(Function):
    def forward(self, x):
        out = elementwise(kernels.relu, (x,))
        if self.requires_grad:
            self.out = out
        return out

    def backward(self, grad):
        return (elementwise(kernels.relu_backward, (grad, self.out)),)


# np.where(mask, a, b) with a data-dependent mask mispredicts a branch per element, several
# times slower than a plain pass. The activations below select branch-free instead, exactly: max(x, 0) + f(min(x, 0)) with
# f(0) = 0, and slopes as s * (x <= 0) + (x > 0) (a product with 0 or 1, then + 0 or 1).

def _select_slope(positive: np.ndarray, negative_slope: np.ndarray | float, grad) -> np.ndarray:
    """grad * (1 where positive, negative_slope elsewhere), without a branch per element."""
    slope = np.multiply(~positive, negative_slope, dtype=grad.dtype)
    slope += positive
    slope *= grad
    return slope


class ELUOp(Function):
    """alpha * (exp(x) - 1) for x <= 0, x otherwise."""

    def forward(self, x, alpha=1.0):
        alpha = x.dtype.type(alpha)
        if self.requires_grad:
            self.x, self.alpha = x, alpha
        if x.dtype == np.float32:  # one compiled pass, its exponential inside
            return elementwise(kernels.elu_float32, (x,), alpha)
        # exp of the positive side is never used: clamping it avoids overflow warnings
        negative = np.minimum(x, 0)
        return elementwise(kernels.elu, (x, np.expm1(negative, out=negative)), alpha)

    def backward(self, grad):
        if self.x.dtype == np.float32 and grad.dtype == np.float32:
            return (elementwise(kernels.elu_backward_float32, (grad, self.x), self.alpha),)
        negative = np.minimum(self.x, 0)
        return (elementwise(kernels.elu_backward,
                            (grad, self.x, np.exp(negative, out=negative)), self.alpha),)


class LeakyReLUOp(Function):
    def forward(self, x, negative_slope=0.01):
        if self.requires_grad:
            self.x, self.negative_slope = x, negative_slope
        out = np.minimum(x, 0)
        out *= x.dtype.type(negative_slope)
        out += np.maximum(x, 0)
        return out

    def backward(self, grad):
        return (_select_slope(self.x > 0, grad.dtype.type(self.negative_slope), grad),)


# ---- GELU ------------------------------------------------------------------------

_ERFC_COEFFS = (  # Chebyshev fit: erfc(z) = t * exp(-z^2 + P(t)), t = 1 / (1 + z / 2), z >= 0
    -1.26551223, 1.00002368, 0.37409196, 0.09678418, -0.18628806,
    0.27886807, -1.13520398, 1.48851587, -0.82215223, 0.17087277)
_erfc_exact = np.frompyfunc(math.erfc, 1, 1)


def _erfc(x: np.ndarray) -> np.ndarray:
    """Complementary error function in x's dtype (NumPy has none and scipy is not a dependency).

    float32: the Numerical Recipes Chebyshev fit (relative error < 1.2e-7, a float32 ulp,
    up to 2e-6 in the far tail where erfc < 1e-10). float64 (gradient checks): math.erfc
    per element, exact but slow.
    """
    if x.dtype == np.float64:
        return np.asarray(_erfc_exact(x), dtype=np.float64)
    z = np.abs(x)
    t = 1 / (1 + 0.5 * z)
    poly = np.full_like(t, _ERFC_COEFFS[-1])
    for c in _ERFC_COEFFS[-2::-1]:
        poly *= t
        poly += c
    poly -= z * z
    tail = t * np.exp(poly)  # erfc(|x|)
    return np.where(x >= 0, tail, 2 - tail)


_SQRT_HALF = math.sqrt(0.5)
_INV_SQRT_2PI = 1 / math.sqrt(2 * math.pi)
_TANH_BETA = math.sqrt(2 / math.pi)
_TANH_KAPPA = 0.044715


class GELUOp(Function):
    """x * Phi(x), Phi the standard normal CDF; or its tanh approximation."""

    def forward(self, x, approximate="none"):
        if approximate == "tanh":
            inner = _TANH_BETA * (x + _TANH_KAPPA * x * x * x)
            tanh_inner = np.tanh(inner)
            out = 0.5 * x * (1 + tanh_inner)
            if self.requires_grad:
                self.x, self.tanh_inner = x, tanh_inner
        else:
            cdf = 0.5 * _erfc(-_SQRT_HALF * x)  # Phi(x), accurate in the left tail too
            out = x * cdf
            if self.requires_grad:
                self.x, self.cdf = x, cdf
        self.approximate = approximate
        return out

    def backward(self, grad):
        x = self.x
        if self.approximate == "tanh":
            t = self.tanh_inner
            d_inner = _TANH_BETA * (1 + 3 * _TANH_KAPPA * x * x)
            slope = 0.5 * (1 + t) + 0.5 * x * ((1 - t) * (1 + t)) * d_inner
        else:
            pdf = _INV_SQRT_2PI * np.exp(-0.5 * x * x)
            slope = self.cdf + x * pdf
        return (grad * slope,)


class TanhOp(Function):
    def forward(self, x):
        out = np.tanh(x)
        if self.requires_grad:
            self.out = out
        return out

    def backward(self, grad):
        # (1 - t)(1 + t) rather than 1 - t*t: exact 1 - t where |t| is close to 1
        return (grad * ((1 - self.out) * (1 + self.out)),)


class SigmoidOp(Function):
    def forward(self, x):
        e = np.exp(-np.abs(x))  # never overflows
        out = np.where(x >= 0, 1 / (1 + e), e / (1 + e))
        if self.requires_grad:
            self.out = out
        return out

    def backward(self, grad):
        return (grad * self.out * (1 - self.out),)


def relu(x) -> Tensor:
    return ReLUOp.apply(x)


def elu(x, alpha: float = 1.0) -> Tensor:
    number(alpha, "alpha", "elu")
    return ELUOp.apply(x, alpha=alpha)


def leaky_relu(x, negative_slope: float = 0.01) -> Tensor:
    number(negative_slope, "negative_slope", "leaky_relu")
    return LeakyReLUOp.apply(x, negative_slope=negative_slope)


def gelu(x, approximate: str = "none") -> Tensor:
    """x * Phi(x) (approximate="none", exact erf form) or its "tanh" approximation."""
    one_of(approximate, GELU_APPROXIMATIONS, "approximate", "gelu")
    return GELUOp.apply(x, approximate=approximate)


def tanh(x) -> Tensor:
    return TanhOp.apply(x)


def sigmoid(x) -> Tensor:
    return SigmoidOp.apply(x)


# ---- dropout ---------------------------------------------------------------------

class DropoutOp(Function):
    """out = x * mask; mask holds 0 or 1 / (1 - p) and broadcasts against x (dropout2d)."""

    def forward(self, x, mask=None):
        if self.requires_grad:
            self.mask = mask
        return np.multiply(x, mask, out=np.empty_like(x))  # in x's memory order

    def backward(self, grad):
        return (np.multiply(grad, self.mask, out=np.empty_like(grad)),)


class ElementDropoutOp(Function):
    """out = x * scale where the element's random bits >= threshold, else 0
    (kernels/elementwise.py). The bits come from a counter-based generator keyed by one draw
    from rng and indexed by position in x's memory order (conv2d's (C, H, W, N) included):
    each direction is one plain pass, and backward recomputes the mask from the key instead
    of keeping it."""

    def forward(self, x, key=None, p=0.5):
        self.key, self.threshold = np.uint64(key), _keep_threshold(p)
        self.scale = x.dtype.type(1 / (1 - p))
        memory = memory_order(x)
        self.chwn = memory is not None and memory is not x  # conv2d's (C, H, W, N) memory
        return elementwise(kernels.dropout, (x,), self.key, self.threshold, self.scale)

    def backward(self, grad):
        # the gradient in x's memory order, so that element i meets the same bits
        grad = from_chwn(as_chwn(grad)) if self.chwn else np.ascontiguousarray(grad)
        return (elementwise(kernels.dropout, (grad,), self.key, self.threshold, self.scale),)


def _keep_threshold(p: float) -> np.uint32:
    """The 32 random bits b kept with probability 1 - p: b >= ceil(p * 2**24) << 8, which
    keeps b as u >= p keeps the float32 uniform u = (b >> 8) / 2**24 (p rounded to float32)."""
    return np.uint32(math.ceil(float(np.float32(p)) * 2 ** 24) << 8)


def _check_rng(op: str, p, rng) -> None:
    if rng is None:
        raise ValueError(f"{op}: training with p={p} needs rng=numpy.random.Generator "
                         f"(e.g. numpy.random.default_rng(seed)); minivgg uses no global "
                         f"random state")
    if not isinstance(rng, np.random.Generator):
        raise ValueError(f"{op}: rng must be a numpy.random.Generator, got {type(rng).__name__}")


def dropout_key(op: str, p, rng) -> tuple:
    """(key, keep threshold, scale) of an element-wise dropout mask (ElementDropoutOp), for
    ops that drop their own output (batch_norm's fused dropout); 0 < p < 1 in float32."""
    probability(p, "p", op)
    _check_rng(op, p, rng)
    if not 0 < np.float32(p) < 1:
        raise ValueError(f"{op}: fused dropout needs 0 < p < 1, got {p!r}")
    return np.uint64(rng.bit_generator.random_raw()), _keep_threshold(p), 1 / (1 - p)


def _dropout(op: str, x: Tensor, p, training, rng, mask_shape) -> Tensor:
    probability(p, "p", op)
    if not training or p == 0:
        return x
    _check_rng(op, p, rng)
    if np.float32(p) == 1:  # no float32 uniform in [0, 1) reaches it: every unit dropped
        mask = np.zeros(mask_shape, dtype=x.dtype)
    elif tuple(mask_shape) == x.shape:
        # one 64-bit draw keys the whole mask (see ElementDropoutOp)
        return ElementDropoutOp.apply(x, key=rng.bit_generator.random_raw(), p=p)
    else:
        # keep with probability 1 - p; the uniform draws become the mask in place
        mask = rng.random(mask_shape, dtype=np.float32)
        np.greater_equal(mask, p, out=mask)
        mask = mask.astype(x.dtype, copy=False)
        mask *= 1 / (1 - p)
    return DropoutOp.apply(x, mask=mask)


def dropout(x, p: float = 0.5, training: bool = True, rng=None) -> Tensor:
    """Inverted dropout: zero each element with probability p, scale the rest by 1 / (1 - p).

    rng: a numpy.random.Generator (required when training with p > 0); the same seed
    gives the same mask. Identity (the input itself) when not training.
    """
    x = as_tensor(x)
    return _dropout("dropout", x, p, training, rng, x.shape)


def dropout2d(x, p: float = 0.5, training: bool = True, rng=None) -> Tensor:
    """Channel dropout for (N, C, H, W): zero whole channels with probability p."""
    x = as_tensor(x)
    if x.ndim != 4:
        raise ValueError(f"dropout2d expects an input of shape (N, C, H, W), got shape {x.shape}")
    return _dropout("dropout2d", x, p, training, rng, x.shape[:2] + (1, 1))
