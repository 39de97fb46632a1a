"""Max, average and adaptive average pooling over NCHW inputs, each forward beside its backward.

All three run in compiled kernels (kernels/pool.py) on conv2d's (C, H, W, N) memory (an
NCHW input is copied to it first: the kernels' innermost loops run along the batch, and
along one value per pixel they were several times slower than the copy). Average pooling, fixed windows and adaptive bins alike, is a sum
over each window's rows and columns divided by a per-window divisor.
"""
from __future__ import annotations

import numpy as np

from ..autograd import Function, Tensor, as_tensor
from ..kernels.pool import avg_pool, avg_pool_backward, max_pool, max_pool_backward
from .layout import as_chwn, from_chwn
from .malloc import empty
from .windows import check_input, out_length, pair, pool_window

__all__ = ["max_pool2d", "avg_pool2d", "adaptive_avg_pool2d"]


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

def _max_pool(x: np.ndarray, kernel: tuple, stride: tuple, padding: tuple, out_hw: tuple):
    """(the pooled (N, C, OH, OW) array, the winning taps): max pooling in conv2d's
    (C, H, W, N) memory order, where the kernel's innermost loop runs along the batch."""
    planes = as_chwn(x)  # (C, H, W, N)
    shape = (planes.shape[0], *out_hw, planes.shape[3])
    out = empty(shape, x.dtype)
    argmax = empty(shape, np.min_scalar_type(kernel[0] * kernel[1] - 1))
    max_pool(planes, *kernel, *stride, *padding, out, argmax)
    return from_chwn(out), argmax


def max_pool_2x2_values(x: np.ndarray) -> np.ndarray:
    """The 2x2 stride-2 max pool of the (N, C, H, W) array x, no graph (conv2d's
    max_pool_2x2 where its kernel cannot do it inside)."""
    out_hw = (x.shape[2] // 2, x.shape[3] // 2)
    return _max_pool(x, (2, 2), (2, 2), (0, 0), out_hw)[0]


class MaxPool2dOp(Function):
    """out = the maximum of each window; the gradient goes to the first maximal element.

    Keeps the winning tap of each window as one byte for backward.
    """

    def forward(self, x, kernel=(2, 2), stride=(2, 2), padding=(0, 0), out_hw=(1, 1)):
        out, argmax = _max_pool(x, kernel, stride, padding, out_hw)
        if self.requires_grad:
            self.argmax, self.in_shape = argmax, x.shape
            self.window = (*kernel, *stride, *padding)
        return out

    def backward(self, grad):
        batch, channels, height, width = self.in_shape
        dx = empty((channels, height, width, batch), grad.dtype)
        max_pool_backward(as_chwn(grad), self.argmax, *self.window, dx)
        return (from_chwn(dx),)


def max_pool2d(x, kernel_size, stride=None, padding=0) -> Tensor:
    """As torch.nn.functional.max_pool2d (no dilation, floor mode).

    x: (N, C, H, W); kernel_size, stride (default kernel_size), padding: int or pair.
    Padding counts as -inf and may be at most half the kernel. Returns (N, C, OH, OW).
    """
    x = as_tensor(x)
    kernel, stride, padding, out_hw = _pool_geometry(x, kernel_size, stride, padding,
                                                     "max_pool2d")
    return MaxPool2dOp.apply(x, kernel=kernel, stride=stride, padding=padding, out_hw=out_hw)


# ---- average pooling: fixed windows and adaptive bins, one kernel ------------------------

def _window_bounds(size: int, kernel: int, stride: int, pad: int, out: int) -> np.ndarray:
    """(out, 2): each window's [start, stop) inside the unpadded input, along one axis."""
    starts = np.arange(out) * stride - pad
    return np.stack([np.maximum(starts, 0), np.minimum(starts + kernel, size)], axis=1)


def _bin_bounds(size: int, bins: int) -> np.ndarray:
    """(bins, 2): PyTorch's adaptive bins, [floor(i*size/bins), ceil((i+1)*size/bins))."""
    i = np.arange(bins)
    return np.stack([(i * size) // bins, -((-(i + 1) * size) // bins)], axis=1)


class AvgPool2dOp(Function):
    """out = the sum of each window / divisor (its size, or the window's padded size); the
    gradient is shared out the same way."""

    def forward(self, x, rows=None, columns=None, divisor=None):
        planes = as_chwn(x)  # (C, H, W, N)
        out = empty((planes.shape[0], len(rows), len(columns), planes.shape[3]), x.dtype)
        avg_pool(planes, rows, columns, divisor, out)
        self.window, self.in_shape = (rows, columns, divisor), planes.shape
        return from_chwn(out)

    def backward(self, grad):
        dx = empty(self.in_shape, grad.dtype)
        avg_pool_backward(as_chwn(grad), *self.window, dx)
        return (from_chwn(dx),)


def _average(x: Tensor, rows: np.ndarray, columns: np.ndarray, divisor=None) -> Tensor:
    """AvgPool2dOp over the windows rows x columns; divisor None: each window's own size."""
    if divisor is None:
        divisor = np.outer(rows[:, 1] - rows[:, 0], columns[:, 1] - columns[:, 0])
    return AvgPool2dOp.apply(x, rows=rows, columns=columns,
                             divisor=np.broadcast_to(divisor, (len(rows), len(columns)))
                             .astype(x.dtype))


def avg_pool2d(x, kernel_size, stride=None, padding=0, count_include_pad=True) -> Tensor:
    """As torch.nn.functional.avg_pool2d (floor mode, no divisor_override).

    x: (N, C, H, W); kernel_size, stride (default kernel_size), padding: int or pair
    (zero padding, at most half the kernel). count_include_pad=False divides each window
    by the number of its elements inside the input. Returns (N, C, OH, OW).
    """
    x = as_tensor(x)
    kernel, stride, padding, out_hw = _pool_geometry(x, kernel_size, stride, padding,
                                                     "avg_pool2d")
    rows, columns = (_window_bounds(x.shape[2 + a], kernel[a], stride[a], padding[a], out_hw[a])
                     for a in (0, 1))
    return _average(x, rows, columns, kernel[0] * kernel[1] if count_include_pad else None)


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
    return _average(x, _bin_bounds(x.shape[2], out_hw[0]), _bin_bounds(x.shape[3], out_hw[1]))
