"""Max, average and adaptive average pooling over NCHW inputs, each forward beside its backward.

Max pooling runs in a compiled kernel (kernels/pool.py), any kernel, stride and padding.
Average pooling reads the KH*KW window taps as strided views (conv.py's window_views: one
whole-batch operation per tap, no loop over samples or pixels) and scatters gradients back
with conv.py's col2im (one slice-add per tap).
"""
from __future__ import annotations

import numpy as np

from ..autograd import Function, Tensor, as_tensor
from ..kernels.pool import max_pool, max_pool_backward
from .layout import as_chwn, chwn_view, from_chwn
from .malloc import empty
from .windows import check_input, col2im, out_length, pair, pool_window, window_views

__all__ = ["max_pool2d", "avg_pool2d", "adaptive_avg_pool2d"]


def _pad(x: np.ndarray, padding: tuple, value: float) -> np.ndarray:
    """(N, C, H, W) -> (N, C, H + 2*ph, W + 2*pw) filled with value around x; x itself if no padding."""
    ph, pw = padding
    if ph == 0 and pw == 0:
        return x
    batch, channels, height, width = x.shape
    xp = np.full((batch, channels, height + 2 * ph, width + 2 * pw), value, dtype=x.dtype)
    xp[:, :, ph:ph + height, pw:pw + width] = x
    return xp


def _crop(a: np.ndarray, padding: tuple) -> np.ndarray:
    ph, pw = padding
    if ph == 0 and pw == 0:
        return a
    return np.ascontiguousarray(a[:, :, ph:a.shape[2] - ph, pw:a.shape[3] - pw])


def _pool_geometry(x: Tensor, kernel_size, stride, padding, op: str):
    """Validated (kernel, stride, padding, (OH, OW)) for max/avg pooling."""
    check_input(x, op)
    kernel, stride, padding = pool_window(kernel_size, stride, padding, op)
    height, width = x.shape[2:]
    if height + 2 * padding[0] < kernel[0] or width + 2 * padding[1] < kernel[1]:
        raise ValueError(
            f"{op}: kernel_size {kernel} is larger than the padded input "
            f"{(height + 2 * padding[0], width + 2 * padding[1])} (input shape "
            f"{tuple(x.shape)}, padding {padding}); use a smaller kernel or a larger input")
    out_hw = (out_length(height, kernel[0], stride[0], padding[0], padding[0]),
              out_length(width, kernel[1], stride[1], padding[1], padding[1]))
    return kernel, stride, padding, out_hw


# ---- max pooling -------------------------------------------------------------------------

def _planes(x: np.ndarray) -> tuple:
    """(N, C, H, W) -> a (P, H, W, L) view for the kernels and whether it is conv2d's
    (C, H, W, N) memory (P = C, L = N) rather than NCHW (P = N*C, L = 1)."""
    chwn = chwn_view(x) if x.shape[0] > 1 else None
    if chwn is not None:
        return chwn, True
    batch, channels, height, width = x.shape
    return np.ascontiguousarray(x).reshape(batch * channels, height, width, 1), False


def _from_planes(a: np.ndarray, chwn: bool, batch: int) -> np.ndarray:
    """The (N, C, H, W) array over a (P, H, W, L) array made like _planes's."""
    if chwn:
        return from_chwn(a)
    return a.reshape(batch, -1, a.shape[1], a.shape[2])


def _max_pool(x: np.ndarray, kernel: tuple, stride: tuple, padding: tuple, out_hw: tuple):
    """(the pooled (N, C, OH, OW) array, the winning taps, the planes' shape, whether x is
    in conv2d's (C, H, W, N) memory): max pooling in x's memory order."""
    planes, chwn = _planes(x)  # (P, H, W, L)
    shape = (planes.shape[0], *out_hw, planes.shape[3])
    out = empty(shape, x.dtype)
    argmax = empty(shape, np.min_scalar_type(kernel[0] * kernel[1] - 1))
    max_pool(planes, *kernel, *stride, *padding, out, argmax)
    return _from_planes(out, chwn, x.shape[0]), argmax, planes.shape, chwn


def max_pool_2x2_values(x: np.ndarray) -> np.ndarray:
    """The 2x2 stride-2 max pool of the (N, C, H, W) array x, no graph (conv2d's
    max_pool_2x2 where its kernel cannot do it inside)."""
    out_hw = (x.shape[2] // 2, x.shape[3] // 2)
    return _max_pool(x, (2, 2), (2, 2), (0, 0), out_hw)[0]


class MaxPool2dOp(Function):
    """out = the maximum of each window; the gradient goes to the first maximal element.

    Works in the input's memory order (NCHW, or conv2d's (C, H, W, N): see conv.py) and
    keeps the winning tap of each window as one byte for backward.
    """

    def forward(self, x, kernel=(2, 2), stride=(2, 2), padding=(0, 0), out_hw=(1, 1)):
        out, argmax, planes_shape, chwn = _max_pool(x, kernel, stride, padding, out_hw)
        if self.requires_grad:
            self.argmax, self.planes_shape, self.chwn = argmax, planes_shape, chwn
            self.window = (*kernel, *stride, *padding)
        return out

    def backward(self, grad):
        batch = grad.shape[0]
        g = as_chwn(grad) if self.chwn else np.ascontiguousarray(grad).reshape(
            self.argmax.shape)  # forward's order
        dx = empty(self.planes_shape, grad.dtype)
        max_pool_backward(g, self.argmax, *self.window, dx)
        return (_from_planes(dx, self.chwn, batch),)


def max_pool2d(x, kernel_size, stride=None, padding=0) -> Tensor:
    """As torch.nn.functional.max_pool2d (no dilation, floor mode).

    x: (N, C, H, W); kernel_size, stride (default kernel_size), padding: int or pair.
    Padding counts as -inf and may be at most half the kernel. Returns (N, C, OH, OW).
    """
    x = as_tensor(x)
    kernel, stride, padding, out_hw = _pool_geometry(x, kernel_size, stride, padding,
                                                     "max_pool2d")
    return MaxPool2dOp.apply(x, kernel=kernel, stride=stride, padding=padding, out_hw=out_hw)


# ---- average pooling ---------------------------------------------------------------------

def _unpadded_counts(size: int, kernel: int, stride: int, pad: int, out: int) -> np.ndarray:
    """How many of each window's `kernel` positions fall inside the unpadded input."""
    starts = np.arange(out) * stride - pad
    return np.minimum(starts + kernel, size) - np.maximum(starts, 0)


class AvgPool2dOp(Function):
    """out = the sum of each window / divisor (the window size, or its unpadded part)."""

    def forward(self, x, kernel=(2, 2), stride=(2, 2), padding=(0, 0), out_hw=(1, 1),
                count_include_pad=True):
        height, width = x.shape[2:]
        if count_include_pad:
            divisor = x.dtype.type(kernel[0] * kernel[1])
        else:
            rows = _unpadded_counts(height, kernel[0], stride[0], padding[0], out_hw[0])
            columns = _unpadded_counts(width, kernel[1], stride[1], padding[1], out_hw[1])
            divisor = np.outer(rows, columns).astype(x.dtype)  # (OH, OW)
        xp = _pad(x, padding, 0)
        views = window_views(xp, kernel, stride, out_hw)  # KH*KW views, each (N, C, OH, OW)
        out = views[0].copy()
        for view in views[1:]:
            out += view
        out /= divisor
        self.divisor, self.padded_shape = divisor, xp.shape
        self.kernel, self.stride, self.padding, self.out_hw = kernel, stride, padding, out_hw
        return out

    def backward(self, grad):
        taps = self.kernel[0] * self.kernel[1]
        scaled = grad / self.divisor  # every tap of a window gets the same share
        dxp = col2im([scaled] * taps, self.padded_shape, grad.dtype, self.kernel, self.stride,
                     self.out_hw)
        return (_crop(dxp, self.padding),)


def avg_pool2d(x, kernel_size, stride=None, padding=0, count_include_pad=True) -> Tensor:
    """As torch.nn.functional.avg_pool2d (floor mode, no divisor_override).

    x: (N, C, H, W); kernel_size, stride (default kernel_size), padding: int or pair
    (zero padding, at most half the kernel). count_include_pad=False divides each window
    by the number of its elements inside the input. Returns (N, C, OH, OW).
    """
    x = as_tensor(x)
    kernel, stride, padding, out_hw = _pool_geometry(x, kernel_size, stride, padding,
                                                     "avg_pool2d")
    return AvgPool2dOp.apply(x, kernel=kernel, stride=stride, padding=padding, out_hw=out_hw,
                           count_include_pad=bool(count_include_pad))


# ---- adaptive average pooling ------------------------------------------------------------

def _bin_matrix(size: int, bins: int, dtype) -> np.ndarray:
    """(bins, size) averaging matrix: row i is 1/len over [floor(i*size/bins), ceil((i+1)*size/bins))."""
    i = np.arange(bins)
    starts = (i * size) // bins
    ends = -((-(i + 1) * size) // bins)
    positions = np.arange(size)
    inside = (positions >= starts[:, None]) & (positions < ends[:, None])
    return (inside / (ends - starts)[:, None]).astype(dtype)


class AdaptiveAvgPool2dOp(Function):
    """out = x @ P.T per (n, c) plane, P the (OH*OW, H*W) bin-averaging matrix.

    Bins of non-divisible sizes overlap and vary in length; P = kron(P_h, P_w) expresses
    that exactly and makes forward and backward one GEMM each over the whole batch. P has
    OH*OW*H*W entries: small for the feature maps adaptive pooling sees (global pooling,
    or 7x7 from a 7x7..32x32 map; even 224x224 -> 7x7 is 2.5M entries and as fast as two
    separable GEMMs), but it grows as the fourth power of the map size.
    """

    def forward(self, x, out_hw=(1, 1)):
        batch, channels, height, width = x.shape
        bins = np.kron(_bin_matrix(height, out_hw[0], x.dtype),
                       _bin_matrix(width, out_hw[1], x.dtype))  # (OH*OW, H*W)
        out = x.reshape(batch * channels, height * width) @ bins.T  # (N*C, OH*OW)
        if self.requires_grad:
            self.bins, self.in_shape = bins, x.shape
        return out.reshape(batch, channels, *out_hw)

    def backward(self, grad):
        batch, channels = grad.shape[:2]
        dx = grad.reshape(batch * channels, -1) @ self.bins  # (N*C, H*W)
        return (dx.reshape(self.in_shape),)


def adaptive_avg_pool2d(x, output_size) -> Tensor:
    """As torch.nn.functional.adaptive_avg_pool2d: average over PyTorch's bins.

    x: (N, C, H, W); output_size: int or (OH, OW). Output bin i covers input rows
    floor(i*H/OH) to ceil((i+1)*H/OH); output_size 1 is global average pooling.
    """
    x = as_tensor(x)
    check_input(x, "adaptive_avg_pool2d")
    out_hw = pair(output_size, "output_size", "adaptive_avg_pool2d", minimum=1)
    if 0 in x.shape:
        raise ValueError(f"adaptive_avg_pool2d: empty input of shape {tuple(x.shape)}")
    return AdaptiveAvgPool2dOp.apply(x, out_hw=out_hw)
