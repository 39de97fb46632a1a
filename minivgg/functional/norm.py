"""Batch normalisation and layer normalisation, each forward beside its backward."""
from __future__ import annotations

import numbers

import numpy as np

from ..autograd import Function, Tensor, as_tensor
from ..kernels.norm import NO_DROPOUT, batch_norm_affine, batch_norm_backward, batch_norm_forward
from .activation import dropout_key
from .layout import as_chwn, chwn_view, from_chwn
from .malloc import empty

__all__ = ["batch_norm", "layer_norm"]


# BatchNorm works on a 3-D view of its input whose last axis is contiguous in memory and
# whose channel axis is `axis`: (N, C, M) for C-ordered input (axis 1), (C, H*W, N) for the
# (C, H, W, N) memory behind conv2d's outputs (axis 0); the kernels take it channel first.

def _channel_rows(x: np.ndarray) -> tuple:
    """(N, C), (N, C, L) or (N, C, H, W) -> (3-D view, channel axis); see above."""
    chwn = chwn_view(x) if x.ndim == 4 and x.shape[0] > 1 else None
    if chwn is not None:
        return chwn.reshape(x.shape[1], -1, x.shape[0]), 0  # (C, H*W, N)
    return np.ascontiguousarray(x).reshape(x.shape[0], x.shape[1], -1), 1  # (N, C, M)


def _in_layout(a: np.ndarray, rows: np.ndarray, axis: int) -> np.ndarray:
    """The 3-D view `rows` of an array shaped like `a`, over a's memory when `a` is laid out
    as `axis` says, else over a copy of `a` in that layout."""
    if axis == 0:
        return as_chwn(a).reshape(rows.shape)
    return np.ascontiguousarray(a).reshape(rows.shape)


def _restore(rows: np.ndarray, shape: tuple, axis: int) -> np.ndarray:
    """A 3-D view made by _channel_rows back to the (N, C, ...) shape, over the same memory."""
    if axis == 0:
        return from_chwn(rows.reshape(shape[1:] + shape[:1]))
    return rows.reshape(shape)


def _channels_first(rows: np.ndarray, axis: int) -> np.ndarray:
    """A 3-D view with its channel axis `axis` as the (C, R, L) view the kernels take."""
    return rows if axis == 0 else rows.transpose(1, 0, 2)


class BatchNorm(Function):
    """y = (x - mean) / sqrt(var + eps) * weight + bias, per channel (axis 1).

    Training normalises with the batch statistics (biased variance) and updates the
    running statistics in place (unbiased variance), as PyTorch does; eval normalises
    with the running statistics. Backward recomputes x - mean from x (kept anyway when a
    ReLU comes before) rather than keeping it: one activation less in memory. With
    relu=True the input is max(x, 0), formed in forward and again in backward; x is what
    is kept. With relu_after=True the output is max(y, 0): y never exists as a tensor of
    its own, and the output is kept for the gradient mask. Both modes' backward is
    kernels/norm.py's, eval's without the batch statistics' terms.
    """

    def forward(self, x, weight, bias, running_mean=None, running_var=None,
                training=False, momentum=0.1, eps=1e-5, relu=False, relu_after=False,
                dropout=None):
        rows, axis = _channel_rows(x)  # 3-D view, channel axis `axis`
        self.training, self.weight, self.axis, self.relu = training, weight, axis, relu
        self.drop_scale = 0.0 if dropout is None else dropout[2]
        out = empty(rows.shape, rows.dtype)
        out_view = _channels_first(out, axis)
        if training:
            channels = rows.shape[axis]
            if dropout is not None:  # (key, threshold, scale): the index of (c, r, n) in memory
                stride_c, stride_r, _ = (step // out.itemsize for step in out_view.strides)
                dropout = (*dropout, stride_c, stride_r)
            mean, invstd = np.empty(channels), np.empty(channels)  # float64
            ones, zeros = np.ones(channels, rows.dtype), np.zeros(channels, rows.dtype)
            var = batch_norm_forward(
                _channels_first(rows, axis), ones if weight is None else weight,
                zeros if bias is None else bias, eps, relu, relu_after,
                NO_DROPOUT if dropout is None else dropout, out_view, mean, invstd)
            count = rows.size // channels
            if running_mean is not None:
                running_mean[...] = momentum * mean.astype(rows.dtype) + (1 - momentum) * running_mean
            if running_var is not None:
                unbiased = (var * (count / (count - 1))).astype(rows.dtype)
                running_var[...] = momentum * unbiased + (1 - momentum) * running_var
        else:
            mean = running_mean.astype(x.dtype, copy=False)
            invstd = 1.0 / np.sqrt(running_var.astype(x.dtype, copy=False) + eps)
            scale = invstd if weight is None else invstd * weight  # (C,)
            shift = -mean * scale if bias is None else bias - mean * scale
            batch_norm_affine(_channels_first(rows, axis), scale, shift, relu, relu_after,
                              out_view)
        if self.requires_grad:
            self.rows, self.out = rows, out if relu_after else None
            self.mean, self.invstd = mean.astype(np.float64), invstd.astype(np.float64)
        return _restore(out, x.shape, axis)

    def backward(self, grad):
        need_x, need_w, need_b = self.needs_input_grad
        rows, axis = self.rows, self.axis
        dy = _in_layout(grad, rows, axis)  # 3-D, laid out as forward's input
        channels = dy.shape[axis]
        sum_dy, sum_dy_xhat = np.empty(channels, dy.dtype), np.empty(channels, dy.dtype)
        gx = empty(rows.shape, rows.dtype) if need_x else np.empty((0, 0, 0), rows.dtype)
        weight = np.ones(channels, rows.dtype) if self.weight is None else self.weight
        out = rows if self.out is None else self.out  # only read when relu_after
        batch_norm_backward(
            _channels_first(rows, axis), _channels_first(dy, axis), _channels_first(out, axis),
            weight, self.mean, self.invstd, self.training, self.relu, self.out is not None,
            self.drop_scale, _channels_first(gx, axis) if need_x else gx, sum_dy_xhat, sum_dy)
        gw = sum_dy_xhat if need_w else None
        gb = sum_dy if need_b else None
        return (_restore(gx, grad.shape, axis) if need_x else None), gw, gb


def _stat_array(op: str, name: str, stat, channels: int, x_shape) -> np.ndarray | None:
    if stat is None:
        return None
    array = stat.data if isinstance(stat, Tensor) else stat
    if not isinstance(array, np.ndarray):
        raise ValueError(f"{op}: {name} must be a NumPy array of shape ({channels},) (it is "
                        f"updated in place), got {type(stat).__name__}")
    if array.shape != (channels,):
        raise ValueError(f"{op}: {name} has shape {array.shape} but the input of shape "
                         f"{tuple(x_shape)} has {channels} channels; pass one value per channel")
    return array


def _check_affine(op: str, name: str, param, expected: tuple, x_shape) -> None:
    if param is not None and tuple(param.shape) != expected:
        raise ValueError(f"{op}: {name} has shape {tuple(param.shape)} but the input of shape "
                         f"{tuple(x_shape)} needs {expected}")


def _check_eps(op: str, eps) -> None:
    if not isinstance(eps, numbers.Real) or eps < 0:
        raise ValueError(f"{op}: eps must be a non-negative number, got {eps!r}")


def batch_norm(x, running_mean, running_var, weight=None, bias=None, training: bool = False,
               momentum: float = 0.1, eps: float = 1e-5, relu: bool = False,
               relu_after: bool = False, dropout: float = 0.0, rng=None) -> Tensor:
    """Batch normalisation over axis 1 of (N, C), (N, C, L) or (N, C, H, W), as torch's.

    running_mean / running_var: (C,) arrays (or None), updated in place when training:
    running = (1 - momentum) * running + momentum * batch_stat, with the unbiased batch
    variance. For a cumulative average (torch's momentum=None), pass 1 / batches_seen.
    relu=True normalises max(x, 0): relu then batch_norm as one op, the ReLU's output never
    written out and its gradient mask applied in BatchNorm's last backward pass.
    relu_after=True returns max(batch_norm(x), 0): batch_norm then relu as one op.
    dropout=p (with relu_after and training) then drops that output as
    dropout(..., p, rng=rng) would, the same mask, in the same op.
    """
    x = as_tensor(x)
    if x.ndim not in (2, 3, 4):
        raise ValueError(f"batch_norm expects an input of shape (N, C), (N, C, L) or "
                         f"(N, C, H, W), got shape {x.shape}")
    channels = x.shape[1]
    running_mean = _stat_array("batch_norm", "running_mean", running_mean, channels, x.shape)
    running_var = _stat_array("batch_norm", "running_var", running_var, channels, x.shape)
    _check_affine("batch_norm", "weight", weight, (channels,), x.shape)
    _check_affine("batch_norm", "bias", bias, (channels,), x.shape)
    _check_eps("batch_norm", eps)
    if training:
        if not isinstance(momentum, numbers.Real) or not 0 <= momentum <= 1:
            raise ValueError(f"batch_norm: momentum must be a number in [0, 1], got {momentum!r} "
                             f"(for a cumulative average pass 1 / number of batches seen)")
        if x.size // channels == 1:
            raise ValueError(f"batch_norm: expected more than 1 value per channel when training, "
                             f"got input of shape {x.shape}; use a larger batch or eval mode")
    elif running_mean is None or running_var is None:
        raise ValueError("batch_norm: eval mode (training=False) normalises with the running "
                         "statistics, but running_mean or running_var is None; pass them or "
                         "use training=True")
    key = None
    if dropout:
        if not (training and relu_after):
            raise ValueError("batch_norm: dropout is fused only after the ReLU of a training "
                             "batch norm (training=True, relu_after=True); otherwise call "
                             "dropout on the output")
        key = dropout_key("batch_norm", dropout, rng)
    return BatchNorm.apply(x, weight, bias, running_mean=running_mean, running_var=running_var,
                           training=bool(training), momentum=momentum, eps=eps, relu=bool(relu),
                           relu_after=bool(relu_after), dropout=key)


class LayerNormOp(Function):
    """Normalise each sample over its trailing dims: x viewed as (B, D)."""

    def forward(self, x, weight, bias, normalized_shape=(), eps=1e-5):
        d = int(np.prod(normalized_shape))
        x2 = x.reshape(-1, d)  # (B, D)
        mean = x2.mean(axis=1, keepdims=True)  # (B, 1)
        xhat = x2 - mean
        var = np.einsum("bd,bd->b", xhat, xhat)[:, None] / d
        invstd = 1.0 / np.sqrt(var + eps)  # (B, 1)
        xhat *= invstd
        if self.requires_grad:
            self.xhat, self.invstd, self.weight = xhat, invstd, weight
            self.normalized_shape = normalized_shape
            out = xhat * weight.reshape(d) if weight is not None else xhat.copy()
        else:
            out = xhat
            if weight is not None:
                out *= weight.reshape(d)
        if bias is not None:
            out += bias.reshape(d)
        return out.reshape(x.shape)

    def backward(self, grad):
        need_x, need_w, need_b = self.needs_input_grad
        xhat = self.xhat
        dy = grad.reshape(xhat.shape)  # (B, D)
        d = xhat.shape[1]
        gw = gb = gx = None
        if need_w:
            gw = np.einsum("bd,bd->d", dy, xhat).reshape(self.normalized_shape)
        if need_b:
            gb = dy.sum(axis=0).reshape(self.normalized_shape)
        if need_x:
            # dx = invstd * (g - mean(g) - xhat * mean(g * xhat)), g = dy * weight, per row
            g = dy * self.weight.reshape(d) if self.weight is not None else dy.copy()
            mean_g = g.mean(axis=1, keepdims=True)
            mean_g_xhat = np.einsum("bd,bd->b", g, xhat)[:, None] / d
            g -= mean_g
            g -= xhat * mean_g_xhat
            g *= self.invstd
            gx = g.reshape(grad.shape)
        return gx, gw, gb


def layer_norm(x, normalized_shape, weight=None, bias=None, eps: float = 1e-5) -> Tensor:
    """Normalise over the trailing dims `normalized_shape` (an int or a tuple), as torch's."""
    x = as_tensor(x)
    if isinstance(normalized_shape, numbers.Integral):
        normalized_shape = (int(normalized_shape),)
    normalized_shape = tuple(normalized_shape)
    k = len(normalized_shape)
    if k == 0 or x.ndim < k or tuple(x.shape[x.ndim - k:]) != normalized_shape:
        raise ValueError(f"layer_norm: the input of shape {x.shape} does not end in "
                         f"normalized_shape {normalized_shape}; pass the trailing dims to "
                         f"normalise over")
    _check_affine("layer_norm", "weight", weight, normalized_shape, x.shape)
    _check_affine("layer_norm", "bias", bias, normalized_shape, x.shape)
    _check_eps("layer_norm", eps)
    return LayerNormOp.apply(x, weight, bias, normalized_shape=normalized_shape, eps=eps)
