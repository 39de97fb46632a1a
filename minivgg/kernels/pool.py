"""Max pooling over a (P, H, W, L) view, with the winning tap of each window kept compact,
and average pooling over windows given by their bounds (fixed windows and adaptive bins).

P is the planes (the channels of conv2d's (C, H, W, N) memory) and L the lanes (the
batch): the innermost loop runs over L. One plane per parallel
iteration: backward's scatter into overlapping windows then has one writer per value, in
one fixed order, and the bits do not depend on the number of threads.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from . import serialised


@serialised
@njit(parallel=True, cache=True)
def max_pool(x, kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w, out, argmax):
    """out[p, y, x, l] = the maximum of window (y, x); argmax = its tap i*KW + j, the first
    maximal one in row-major tap order as in PyTorch (a NaN wins, as there). Padding is
    -inf: taps outside the input are skipped.

    x: (P, H, W, L); out: (P, OH, OW, L); argmax: (P, OH, OW, L) of an integer type.
    """
    planes, height, width, lanes = x.shape
    _, out_h, out_w, _ = out.shape
    for p in prange(planes):
        for y in range(out_h):
            for xo in range(out_w):
                best, tap_of_best = out[p, y, xo], argmax[p, y, xo]  # (L,) each
                best[:] = -np.inf
                tap_of_best[:] = 0
                for i in range(kernel_h):
                    h = y * stride_h + i - pad_h
                    if h < 0 or h >= height:
                        continue
                    for j in range(kernel_w):
                        w = xo * stride_w + j - pad_w
                        if w < 0 or w >= width:
                            continue
                        row, tap = x[p, h, w], i * kernel_w + j
                        for n in range(lanes):
                            v = row[n]
                            if v > best[n] or v != v:
                                best[n] = v
                                tap_of_best[n] = tap


@serialised
@njit(parallel=True, cache=True)
def max_pool_backward(grad, argmax, kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w,
                      grad_x):
    """grad_x[p, h, w, l] = the sum of grad over the windows whose winning tap is (h, w).

    grad, argmax: (P, OH, OW, L); grad_x: (P, H, W, L), overwritten.
    """
    planes, height, width, lanes = grad_x.shape
    _, out_h, out_w, _ = grad.shape
    for p in prange(planes):
        grad_x[p] = 0
        for y in range(out_h):
            for xo in range(out_w):
                g, tap_of_best = grad[p, y, xo], argmax[p, y, xo]
                for i in range(kernel_h):
                    h = y * stride_h + i - pad_h
                    if h < 0 or h >= height:
                        continue
                    for j in range(kernel_w):
                        w = xo * stride_w + j - pad_w
                        if w < 0 or w >= width:
                            continue
                        target, tap = grad_x[p, h, w], i * kernel_w + j
                        for n in range(lanes):
                            if tap_of_best[n] == tap:
                                target[n] += g[n]


@serialised
@njit(parallel=True, cache=True)
def avg_pool(x, row_bounds, col_bounds, divisor, out):
    """out[p, y, x, l] = the sum of x[p, h, w, l] over rows [row_bounds[y, 0], row_bounds[y, 1])
    and columns [col_bounds[x, 0], col_bounds[x, 1]) of the input, / divisor[y, x].

    x: (P, H, W, L); out: (P, OH, OW, L); row_bounds: (OH, 2), col_bounds: (OW, 2), integers;
    divisor: (OH, OW) of x's dtype.
    """
    planes, _, _, lanes = x.shape
    _, out_h, out_w, _ = out.shape
    for p in prange(planes):
        for y in range(out_h):
            for xo in range(out_w):
                total = out[p, y, xo]  # (L,)
                total[:] = 0
                for h in range(row_bounds[y, 0], row_bounds[y, 1]):
                    for w in range(col_bounds[xo, 0], col_bounds[xo, 1]):
                        row = x[p, h, w]
                        for n in range(lanes):
                            total[n] += row[n]
                for n in range(lanes):
                    total[n] /= divisor[y, xo]


@serialised
@njit(parallel=True, cache=True)
def avg_pool_backward(grad, row_bounds, col_bounds, divisor, grad_x):
    """grad_x[p, h, w, l] = the sum of grad / divisor over the windows that hold (h, w).

    grad: (P, OH, OW, L); grad_x: (P, H, W, L), overwritten.
    """
    planes, _, _, lanes = grad_x.shape
    _, out_h, out_w, _ = grad.shape
    for p in prange(planes):
        grad_x[p] = 0
        for y in range(out_h):
            for xo in range(out_w):
                g, d = grad[p, y, xo], divisor[y, xo]
                for h in range(row_bounds[y, 0], row_bounds[y, 1]):
                    for w in range(col_bounds[xo, 0], col_bounds[xo, 1]):
                        target = grad_x[p, h, w]
                        for n in range(lanes):
                            target[n] += g[n] / d
