"""The (C, H, W, N) memory behind (N, C, H, W) arrays: conv2d's outputs and what follows them.

conv2d returns the (N, C, H, W) transpose of the (C, H, W, N) array it computed: NCHW in
shape and indexing, (C, H, W, N) in memory, as a PyTorch channels_last tensor is NCHW in
shape and NHWC in memory. The ops that usually follow a convolution (ReLU, batch_norm,
max pooling, the next conv2d) work in that order without converting it; anything else
sees an ordinary strided array.
"""
from __future__ import annotations

import numpy as np

from ..kernels.layout import nchw_to_chwn
from .malloc import empty


def chwn_view(a: np.ndarray) -> np.ndarray | None:
    """The contiguous (C, H, W, N) array behind an (N, C, H, W) array laid out that way in
    memory (conv2d's outputs and what follows them), or None for any other layout."""
    chwn = a.transpose(1, 2, 3, 0)
    return chwn if chwn.flags.c_contiguous else None


def copy_to_chwn(a: np.ndarray, out: np.ndarray) -> np.ndarray:
    """Write the (N, C, H, W) array a into the (C, H, W, N) array out (it may be a view)."""
    if chwn_view(a) is not None:
        out[...] = a.transpose(1, 2, 3, 0)  # runs of W*N contiguous values
        return out
    if a.flags.c_contiguous and a.dtype == out.dtype and a.dtype in (np.float32, np.float64):
        nchw_to_chwn(a, out)  # a batch as it comes: the compiled transpose
        return out
    # One channel at a time: a whole-array transpose that moves N from the first axis to
    # the last writes with a stride of N values and is several times slower.
    for c in range(a.shape[1]):
        out[c] = a[:, c].transpose(1, 2, 0)
    return out


def as_chwn(a: np.ndarray) -> np.ndarray:
    """(N, C, H, W) -> contiguous (C, H, W, N): the memory behind a, or a copy in that order."""
    chwn = chwn_view(a)
    if chwn is not None:
        return chwn
    batch, channels, height, width = a.shape
    return copy_to_chwn(a, empty((channels, height, width, batch), a.dtype))


def from_chwn(a: np.ndarray) -> np.ndarray:
    """(C, H, W, N) -> the (N, C, H, W) array over the same memory (no copy)."""
    return a.transpose(3, 0, 1, 2)


def padded_chwn(x: np.ndarray, padding: tuple) -> np.ndarray:
    """(N, C, H, W) -> (C, H + top + bottom, W + left + right, N) with a zero border."""
    batch, channels, height, width = x.shape
    top, bottom, left, right = padding
    xp = empty((channels, height + top + bottom, width + left + right, batch), x.dtype)
    xp[:, :top] = 0
    xp[:, top + height:] = 0
    xp[:, top:top + height, :left] = 0
    xp[:, top:top + height, left + width:] = 0
    copy_to_chwn(x, xp[:, top:top + height, left:left + width])
    return xp


def memory_order(a: np.ndarray) -> np.ndarray | None:
    """The contiguous array behind `a` (C order, or conv2d's (C, H, W, N)), or None."""
    if a.flags.c_contiguous:
        return a
    return chwn_view(a) if a.ndim == 4 else None


def elementwise(kernel, arrays: tuple, *scalars) -> np.ndarray:
    """kernel(*flat arrays, *scalars, flat out) over arrays of one shape, in the first one's
    memory order; the result is laid out as it is. Arrays that are strided, or laid out
    unlike the first, are first copied to C order (all of them)."""
    first = arrays[0]
    memory = memory_order(first)
    steps = [s // first.itemsize for s in first.strides]
    if memory is None or any(a.shape != first.shape or [s // a.itemsize for s in a.strides]
                             != steps for a in arrays[1:]):
        arrays = tuple(np.ascontiguousarray(a) for a in arrays)
        first = memory = arrays[0]
    out = empty(memory.shape, memory.dtype)
    kernel(*(memory_order(a).reshape(-1) for a in arrays), *scalars, out.reshape(-1))
    return out if memory is first else from_chwn(out)
