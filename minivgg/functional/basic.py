"""Elementwise arithmetic, shape ops, reductions and linear: each forward beside its backward."""
from __future__ import annotations

import numpy as np

from ..autograd import Function, Tensor
from .gemm import gemm


def _unbroadcast(grad: np.ndarray, shape: tuple) -> np.ndarray:
    """Sum grad down to `shape`, undoing NumPy broadcasting."""
    if grad.shape == shape:
        return grad
    extra = grad.ndim - len(shape)
    if extra:
        grad = grad.sum(axis=tuple(range(extra)))
    axes = tuple(i for i, n in enumerate(shape) if n == 1 and grad.shape[i] != 1)
    if axes:
        grad = grad.sum(axis=axes, keepdims=True)
    return grad.reshape(shape)


class Add(Function):
    def forward(self, a, b):
        self.shapes = (np.shape(a), np.shape(b))
        return np.add(a, b)

    def backward(self, grad):
        return _unbroadcast(grad, self.shapes[0]), _unbroadcast(grad, self.shapes[1])


class Sub(Function):
    def forward(self, a, b):
        self.shapes = (np.shape(a), np.shape(b))
        return np.subtract(a, b)

    def backward(self, grad):
        return _unbroadcast(grad, self.shapes[0]), _unbroadcast(-grad, self.shapes[1])


class Mul(Function):
    def forward(self, a, b):
        if self.requires_grad:
            self.a, self.b = a, b
        return np.multiply(a, b)

    def backward(self, grad):
        ga = _unbroadcast(grad * self.b, np.shape(self.a)) if self.needs_input_grad[0] else None
        gb = _unbroadcast(grad * self.a, np.shape(self.b)) if self.needs_input_grad[1] else None
        return ga, gb


class Div(Function):
    def forward(self, a, b):
        if self.requires_grad:
            self.a, self.b = a, b
        return np.divide(a, b)

    def backward(self, grad):
        ga = _unbroadcast(grad / self.b, np.shape(self.a)) if self.needs_input_grad[0] else None
        gb = (_unbroadcast(-grad * self.a / (self.b * self.b), np.shape(self.b))
              if self.needs_input_grad[1] else None)
        return ga, gb


class Power(Function):
    """x ** exponent for a constant (non-differentiated) exponent."""

    def forward(self, x, exponent):
        if self.requires_grad:
            self.x, self.exponent = x, exponent
        return np.power(x, np.asarray(exponent, dtype=x.dtype))

    def backward(self, grad):
        e = np.asarray(self.exponent, dtype=self.x.dtype)
        return (grad * e * np.power(self.x, e - 1),)


class MatMul(Function):
    """2-D matrix product a @ b."""

    def forward(self, a, b):
        if self.requires_grad:
            self.a, self.b = a, b
        return gemm(a, b)

    def backward(self, grad):
        ga = gemm(grad, self.b.T) if self.needs_input_grad[0] else None
        gb = gemm(self.a.T, grad) if self.needs_input_grad[1] else None
        return ga, gb


class Reshape(Function):
    def forward(self, x, shape):
        self.in_shape = x.shape
        return x.reshape(shape)

    def backward(self, grad):
        return (grad.reshape(self.in_shape),)


class Sum(Function):
    def forward(self, x, axis=None, keepdims=False):
        self.in_shape, self.axis, self.keepdims = x.shape, axis, keepdims
        return np.asarray(x.sum(axis=axis, keepdims=keepdims))

    def backward(self, grad):
        if self.axis is not None and not self.keepdims:
            grad = np.expand_dims(grad, self.axis)
        return (np.broadcast_to(grad, self.in_shape).copy(),)


class Mean(Function):
    def forward(self, x, axis=None, keepdims=False):
        self.in_shape, self.axis, self.keepdims = x.shape, axis, keepdims
        out = np.asarray(x.mean(axis=axis, keepdims=keepdims))
        self.count = x.size // max(out.size, 1)
        return out.astype(x.dtype, copy=False)

    def backward(self, grad):
        if self.axis is not None and not self.keepdims:
            grad = np.expand_dims(grad, self.axis)
        return (np.broadcast_to(grad / self.count, self.in_shape).astype(grad.dtype),)


class LinearOp(Function):
    """y = x @ W.T + b with W in PyTorch's (out_features, in_features) layout."""

    def forward(self, x, weight, bias=None):
        if self.requires_grad:
            self.x, self.weight = x, weight
        if x.T.flags.c_contiguous and not x.flags.c_contiguous:
            # a flattened conv2d output ((C, H, W, N) memory): W @ x.T reads both operands
            # in their memory order, the faster product
            out = gemm(weight, x.T).T
        else:
            out = gemm(x, weight.T)
        if bias is not None:
            out += bias
        return out

    def backward(self, grad):
        need_x, need_w, need_b = self.needs_input_grad
        gx = gemm(grad, self.weight) if need_x else None
        gw = gemm(grad.T, self.x) if need_w else None
        gb = grad.sum(axis=0) if need_b else None
        return gx, gw, gb


def add(a, b) -> Tensor:
    return Add.apply(a, b)


def sub(a, b) -> Tensor:
    return Sub.apply(a, b)


def mul(a, b) -> Tensor:
    return Mul.apply(a, b)


def div(a, b) -> Tensor:
    return Div.apply(a, b)


def power(x, exponent: float) -> Tensor:
    if isinstance(exponent, Tensor):
        raise TypeError("power: the exponent must be a number, not a Tensor")
    return Power.apply(x, exponent=float(exponent))


def matmul(a, b) -> Tensor:
    return MatMul.apply(a, b)


def reshape(x, shape) -> Tensor:
    return Reshape.apply(x, shape=tuple(shape))


def flatten(x, start_dim: int = 1) -> Tensor:
    """Collapse the dimensions from start_dim on into one, as torch.flatten(x, start_dim)."""
    shape = x.shape
    if not 0 <= start_dim < len(shape):
        raise ValueError(f"flatten: start_dim {start_dim} is out of range for shape {tuple(shape)}")
    return Reshape.apply(x, shape=tuple(shape[:start_dim]) + (-1,))


def sum(x, axis=None, keepdims: bool = False) -> Tensor:  # noqa: A001 (mirrors torch.sum)
    return Sum.apply(x, axis=axis, keepdims=keepdims)


def mean(x, axis=None, keepdims: bool = False) -> Tensor:
    return Mean.apply(x, axis=axis, keepdims=keepdims)


def linear(x, weight, bias=None) -> Tensor:
    """x: (N, in_features); weight: (out_features, in_features); bias: (out_features,)."""
    if x.ndim != 2:
        raise ValueError(f"linear expects a 2-D input (N, in_features), got shape {tuple(x.shape)}")
    if weight.ndim != 2:
        raise ValueError(f"linear expects a 2-D weight (out_features, in_features), got shape "
                         f"{tuple(weight.shape)}")
    if bias is not None and tuple(bias.shape) != (weight.shape[0],):
        raise ValueError(f"linear: bias shape {tuple(bias.shape)} does not match the weight's "
                         f"{weight.shape[0]} output features; expected ({weight.shape[0]},)")
    if x.shape[1] != weight.shape[1]:
        raise ValueError(
            f"linear: input has {x.shape[1]} features but the weight expects {weight.shape[1]} "
            f"(weight shape {tuple(weight.shape)}, input shape {tuple(x.shape)})")
    return LinearOp.apply(x, weight, bias)
