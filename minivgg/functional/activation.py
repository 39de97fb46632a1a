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


class ELUOp(Function):
    """alpha * (exp(x) - 1) for x <= 0, x otherwise."""

    def forward(self, x, alpha=1.0):
        self.x, self.alpha = x, x.dtype.type(alpha)
        return elementwise(kernels.elu, (x,), self.alpha)

    def backward(self, grad):
        return (elementwise(kernels.elu_backward, (grad, self.x), self.alpha),)


class LeakyReLUOp(Function):
    def forward(self, x, negative_slope=0.01):
        self.x, self.negative_slope = x, x.dtype.type(negative_slope)
        return elementwise(kernels.leaky_relu, (x,), self.negative_slope)

    def backward(self, grad):
        return (elementwise(kernels.leaky_relu_backward, (grad, self.x), self.negative_slope),)


class GELUOp(Function):
    """x * Phi(x), Phi the standard normal CDF; or its tanh approximation."""

    def forward(self, x, approximate="none"):
        self.x, self.tanh_form = x, approximate == "tanh"
        return elementwise(kernels.gelu, (x,), self.tanh_form)

    def backward(self, grad):
        return (elementwise(kernels.gelu_backward, (grad, self.x), self.tanh_form),)


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
