"""The augmentation warp: bilinear resampling of each image through its own affine map.

It runs in the thread that makes a batch: the training thread between steps, or the data
loader's prefetch thread while the training thread runs the parallel kernels (when a core
is free for it: see kernels/__init__.py). So it is compiled single-threaded and without the
GIL (`nogil`), and it is not `serialised`: it never enters the training step's thread pool. The arithmetic is data/warp.py's NumPy formulation
operation for operation, in the images' dtype, so the two give the same bits.
"""
from __future__ import annotations

import numpy as np
from numba import njit


@njit(nogil=True, cache=True)
def warp_bilinear(x, inverse, xc, yc, fill, out):
    """out[n, c, i, j] = x[n, c] sampled bilinearly at inverse[n] @ (xc[j], yc[i], 1), the
    pixels outside the image read as 0 and `fill` blended in by the in-bounds weight.

    x, out (N, C, H, W); inverse (N, 2, 3) output->input maps in centred coordinates;
    xc (W,), yc (H,) the centred coordinates of the output pixels; fill (C,).
    """
    batch, channels, height, width = x.shape
    zero, one = x.dtype.type(0), x.dtype.type(1)
    cx, cy = x.dtype.type((width - 1) / 2), x.dtype.type((height - 1) / 2)
    low, right, bottom = x.dtype.type(-1), x.dtype.type(width), x.dtype.type(height)
    # one image at a time in a zero border (1 before, 2 after each axis), so that all four
    # pixels a clamped source position reads are inside the plane, without branches
    plane = np.zeros((height + 3, width + 3), x.dtype)
    for n in range(batch):
        m = inverse[n]
        for c in range(channels):
            plane[1:height + 1, 1:width + 1] = x[n, c]
            for i in range(height):
                for j in range(width):
                    # the source position, clamped into [-1, size]: a clamped position only
                    # ever reads the border
                    src_x = m[0, 0] * xc[j] + (m[0, 1] * yc[i] + (m[0, 2] + cx))
                    src_y = m[1, 0] * xc[j] + (m[1, 1] * yc[i] + (m[1, 2] + cy))
                    src_x = min(max(src_x, low), right)
                    src_y = min(max(src_y, low), bottom)
                    x0, y0 = np.floor(src_x), np.floor(src_y)
                    wx1, wy1 = src_x - x0, src_y - y0
                    wx0, wy0 = one - wx1, one - wy1
                    left, top = int(x0), int(y0)  # the top-left of the four pixels read
                    # the in-bounds weight of each axis, as bilinear sampling of a plane of
                    # ones gives it
                    in_x = ((wx0 if 0 <= left < width else zero)
                            + (wx1 if left < width - 1 else zero))
                    in_y = ((wy0 if 0 <= top < height else zero)
                            + (wy1 if top < height - 1 else zero))
                    inside = in_x * in_y
                    upper = wx0 * plane[top + 1, left + 1] + wx1 * plane[top + 1, left + 2]
                    lower = wx0 * plane[top + 2, left + 1] + wx1 * plane[top + 2, left + 2]
                    v = upper * (wy0 * inside) + (wy1 * inside) * lower
                    if fill[c] != zero:
                        v += (one - inside) * fill[c]
                    out[n, c, i, j] = v
