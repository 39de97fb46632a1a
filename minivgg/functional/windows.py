"""Sliding-window geometry shared by convolution and pooling: argument checks, output sizes,
the strided views each kernel tap sees, and im2col / col2im over them."""
from __future__ import annotations

import numbers

import numpy as np

from ..autograd import Tensor
from .malloc import empty


def pair(value, name: str, op: str, minimum: int) -> tuple:
    """An int or a pair of ints (a tuple, list or array), each >= minimum, as a
    (height, width) tuple."""
    values = (value, value) if isinstance(value, numbers.Integral) else value
    if isinstance(values, np.ndarray):
        values = values.tolist()
    if (not isinstance(values, (tuple, list)) or len(values) != 2
            or not all(isinstance(v, numbers.Integral) and not isinstance(v, bool)
                       for v in values)):
        raise ValueError(f"{op}: {name} must be an int or a pair of ints, got {value!r}")
    if min(values) < minimum:
        raise ValueError(f"{op}: {name} must be >= {minimum}, got {value!r}")
    return int(values[0]), int(values[1])


def pool_window(kernel_size, stride, padding, op: str) -> tuple:
    """Checked (kernel, stride, padding) pairs of a pooling window; stride None means the
    kernel size, and the padding may be at most half the kernel, as in PyTorch."""
    kernel = pair(kernel_size, "kernel_size", op, minimum=1)
    stride = kernel if stride is None else pair(stride, "stride", op, minimum=1)
    padding = pair(padding, "padding", op, minimum=0)
    if padding[0] * 2 > kernel[0] or padding[1] * 2 > kernel[1]:
        raise ValueError(f"{op}: padding {padding} must be at most half of kernel_size "
                         f"{kernel} (as in PyTorch); reduce the padding")
    return kernel, stride, padding


def check_input(x: Tensor, op: str) -> None:
    if x.ndim != 4:
        raise ValueError(
            f"{op} expects a 4-D input (N, C, H, W), got shape {tuple(x.shape)}; "
            f"add a batch dimension with x.reshape(1, *x.shape) for a single image")
    if not np.issubdtype(x.dtype, np.floating):
        raise ValueError(f"{op} expects a floating-point input, got dtype {x.dtype}; "
                         f"convert it with x.astype(np.float32)")


def out_length(size: int, kernel: int, stride: int, pad_before: int, pad_after: int) -> int:
    """How many window positions fit along one axis (PyTorch's floor mode)."""
    return (size + pad_before + pad_after - kernel) // stride + 1


def window_views(a: np.ndarray, kernel: tuple, stride: tuple, out_hw: tuple,
                 axes: tuple = (-2, -1)) -> list:
    """The KH*KW strided views of `a` that kernel tap (i, j) sees, in row-major tap order.

    View (i, j) holds a[..., i + stride_h * oh, j + stride_w * ow, ...] for every output
    position (oh, ow); `axes` are the two spatial axes of `a`.
    """
    (kh, kw), (sh, sw), (oh, ow) = kernel, stride, out_hw
    views = []
    for i in range(kh):
        for j in range(kw):
            index = [slice(None)] * a.ndim
            index[axes[0]] = slice(i, i + sh * (oh - 1) + 1, sh)
            index[axes[1]] = slice(j, j + sw * (ow - 1) + 1, sw)
            views.append(a[tuple(index)])
    return views


# im2col and col2im go through axis 0 (channels in conv2d's (C, H, W, N) layout, samples
# in pooling's NCHW) a block of about BLOCK_BYTES at a time, so that all KH*KW taps of a
# block read (im2col) or accumulate into (col2im) memory that stays in the core's cache;
# a whole-array pass per tap streams it from memory KH*KW times (measured faster for both,
# im2col most; the figures are in the commit that introduced the blocking).
BLOCK_BYTES = 512 * 1024


def cache_blocks(shape: tuple, itemsize: int, axes: tuple) -> list:
    """Slices of axis 0 of an array of `shape` covering about BLOCK_BYTES each (the whole
    array when axis 0 is one of the spatial `axes`)."""
    if 0 in [axis % len(shape) for axis in axes]:
        return [slice(None)]
    per_row = itemsize * int(np.prod(shape[1:]))
    step = max(1, BLOCK_BYTES // max(per_row, 1))
    return [slice(start, start + step) for start in range(0, shape[0], step)]


def im2col(a: np.ndarray, kernel: tuple, stride: tuple, out_hw: tuple,
           axes: tuple = (-2, -1)) -> np.ndarray:
    """(..., H, ..., W, ...) -> (KH*KW, ..., OH, ..., OW, ...): one copy per kernel tap."""
    views = window_views(a, kernel, stride, out_hw, axes)
    cols = empty((len(views),) + views[0].shape, a.dtype)
    for block in cache_blocks(a.shape, a.itemsize, axes):
        for k, view in enumerate(views):
            cols[k, block] = view[block]
    return cols


def col2im(slabs, shape: tuple, dtype, kernel: tuple, stride: tuple, out_hw: tuple,
           axes: tuple = (-2, -1)) -> np.ndarray:
    """The adjoint of im2col: add each tap's (..., OH, ..., OW, ...) slab back into `shape`.

    `slabs` yields one slab per tap in tap order: a (KH*KW, ...) array or a list, or a
    generator that computes each slab on demand so the taps are never all in memory at
    once (then the whole array is one block). When the windows tile `shape` exactly
    (stride == kernel, sizes divisible) every element is written once, so slabs are
    assigned instead of summed into zeros.
    """
    tiles = (tuple(stride) == tuple(kernel)
             and out_hw[0] * kernel[0] == shape[axes[0]]
             and out_hw[1] * kernel[1] == shape[axes[1]])
    out = empty(shape, dtype)
    views = window_views(out, kernel, stride, out_hw, axes)
    blocks = (cache_blocks(shape, out.itemsize, axes)
              if isinstance(slabs, (np.ndarray, list, tuple)) else [slice(None)])
    for block in blocks:
        if not tiles:
            out[block] = 0
        for view, slab in zip(views, slabs):
            target = view[block]
            if tiles:
                target[...] = slab[block]
            else:
                target += slab[block]
    return out
