"""conv2d's unfolding (im2col) of a (C, H, W, N) input and its adjoint, the zero padding
included: no padded copy of the input is made.

cols[i, j, c, oh, ow, n] = x[c, stride_h * oh + i - top, stride_w * ow + j - left, n], 0
where that falls outside x. With the kernel's KH x KW taps this is im2col; with taps
(1, KW) and OH the padded height it is the row GEMMs' unfolding along W only
(functional/conv.py). Every copy moves a run of N contiguous values, the batch.

The parallel tasks are (c, i, j) in that order, so the taps of one channel run one after
another on one thread and its plane stays in cache; fold has one task per channel, which
alone adds into that channel's gradient, in a fixed order: the same bits for any number of
threads.
"""
from __future__ import annotations

from numba import njit, prange

from . import serialised


@serialised
@njit(parallel=True, cache=True)
def unfold(x, stride_h, stride_w, top, left, cols):
    """Fill cols (KH, KW, C, OH, OW, N) from x (C, H, W, N), as above."""
    taps_h, taps_w, channels, out_h, out_w, lanes = cols.shape
    _, height, width, _ = x.shape
    for task in prange(channels * taps_h * taps_w):
        c, i, j = task // (taps_h * taps_w), task // taps_w % taps_h, task % taps_w
        for oh in range(out_h):
            h = stride_h * oh + i - top
            for ow in range(out_w):
                w = stride_w * ow + j - left
                target = cols[i, j, c, oh, ow]
                if 0 <= h < height and 0 <= w < width:
                    source = x[c, h, w]
                    for n in range(lanes):
                        target[n] = source[n]
                else:
                    target[:] = 0


@serialised
@njit(parallel=True, cache=True)
def fold(cols, stride_h, stride_w, top, left, x):
    """The adjoint of unfold: x (C, H, W, N) = the sum, over every tap and position that
    unfold copies from (c, h, w), of those cols values; x is overwritten."""
    taps_h, taps_w, channels, out_h, out_w, lanes = cols.shape
    _, height, width, _ = x.shape
    for c in prange(channels):
        x[c] = 0
        for i in range(taps_h):
            for j in range(taps_w):
                for oh in range(out_h):
                    h = stride_h * oh + i - top
                    if h < 0 or h >= height:
                        continue
                    for ow in range(out_w):
                        w = stride_w * ow + j - left
                        if 0 <= w < width:
                            target, source = x[c, h, w], cols[i, j, c, oh, ow]
                            for n in range(lanes):
                                target[n] += source[n]
