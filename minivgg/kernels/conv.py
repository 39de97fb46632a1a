"""Direct 3x3 stride-1 convolution in the batch-innermost (C, H, W, N) layout.

At stride 1, output row y of channel o is one contiguous run of OW*N values, and the
values kernel tap (i, j) multiplies into it are the contiguous run of input row y + i that
starts j*N values in: the innermost loop runs over OW*N positions whatever the channel
count, with full SIMD lanes, and the nine taps are spelled out so that each load and store
of the output feeds nine multiply-adds. Inputs come already padded.

The input gradient of a stride-1 convolution is itself a 3x3 convolution (of the gradient,
padded, with the kernel flipped and its channel axes swapped: see functional/conv.py), so
conv3x3 serves forward and input gradient alike.

Each parallel iteration owns its outputs (output rows, or one (o, c) kernel) and adds
into them in one fixed order: the same bits for any number of threads. 'contract' lets
LLVM fuse a multiply and its add into one FMA instruction (the same in every run).
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from . import serialised

FASTMATH = {"contract"}
# Sums may be regrouped (into vector lanes) where a kernel reduces: see conv3x3_weight_grad.
REDUCTION_FASTMATH = {"contract", "reassoc"}
# Positions of an output row handled per pass over the input channels, and output channels
# per parallel iteration: the blocks of GROUP outputs and of the three input rows they read
# stay in the core's L1 cache.
BLOCK = 512
GROUP = 4


@serialised
@njit(parallel=True, cache=True, fastmath=FASTMATH)
def conv3x3(xp, weight, batch, out):
    """out[o, y, x, n] = sum over c, i, j of weight[o, c, i, j] * xp[c, y + i, x + j, n]

    xp: (C, OH + 2, (OW + 2) * N), padded; weight: (O, C, 3, 3); out: (O, OH, OW * N),
    overwritten. One parallel iteration per output row of a group of GROUP channels: the
    three input rows of each c are read from L2 once and serve the whole group from L1.
    """
    channels = xp.shape[0]
    out_channels, out_h, span = out.shape
    groups = (out_channels + GROUP - 1) // GROUP
    for task in prange(groups * out_h):
        group, y = task // out_h, task % out_h
        first, last = group * GROUP, min(group * GROUP + GROUP, out_channels)
        for start in range(0, span, BLOCK):
            stop = min(start + BLOCK, span)
            for o in range(first, last):
                out[o, y, start:stop] = 0.0
            for c in range(channels):
                # x_ij: the run of input row y + i that tap (i, j) multiplies into acc
                x00, x01, x02 = _runs(xp[c, y], start, stop, batch)
                x10, x11, x12 = _runs(xp[c, y + 1], start, stop, batch)
                x20, x21, x22 = _runs(xp[c, y + 2], start, stop, batch)
                for o in range(first, last):
                    w = weight[o, c]
                    acc = out[o, y, start:stop]
                    for p in range(stop - start):
                        acc[p] += (w[0, 0] * x00[p] + w[0, 1] * x01[p] + w[0, 2] * x02[p]
                                   + w[1, 0] * x10[p] + w[1, 1] * x11[p] + w[1, 2] * x12[p]
                                   + w[2, 0] * x20[p] + w[2, 1] * x21[p] + w[2, 2] * x22[p])


@serialised
@njit(parallel=True, cache=True, fastmath=REDUCTION_FASTMATH)
def conv3x3_weight_grad(xp, grad, batch, grad_weight):
    """grad_weight[o, c, i, j] = sum over y, x, n of grad[o, y, x, n] * xp[c, y + i, x + j, n]

    xp: (C, OH + 2, (OW + 2) * N), padded; grad: (O, OH, OW * N); grad_weight: (O, C, 3, 3).
    One (o, c) pair per parallel iteration. Each output row's nine sums are float32 dot
    products, which 'reassoc' lets LLVM keep in nine vector registers (its order of
    additions is fixed by the compiled code, not by the thread count); the rows' sums are
    added in float64.
    """
    channels = xp.shape[0]
    out_channels, out_h, span = grad.shape
    for oc in prange(out_channels * channels):
        o, c = oc // channels, oc % channels
        totals = np.zeros(9)
        for y in range(out_h):
            g = grad[o, y]
            x00, x01, x02 = _runs(xp[c, y], 0, span, batch)
            x10, x11, x12 = _runs(xp[c, y + 1], 0, span, batch)
            x20, x21, x22 = _runs(xp[c, y + 2], 0, span, batch)
            s00 = s01 = s02 = s10 = s11 = s12 = s20 = s21 = s22 = xp.dtype.type(0)
            for p in range(span):
                s00 += g[p] * x00[p]
                s01 += g[p] * x01[p]
                s02 += g[p] * x02[p]
                s10 += g[p] * x10[p]
                s11 += g[p] * x11[p]
                s12 += g[p] * x12[p]
                s20 += g[p] * x20[p]
                s21 += g[p] * x21[p]
                s22 += g[p] * x22[p]
            totals[0] += s00
            totals[1] += s01
            totals[2] += s02
            totals[3] += s10
            totals[4] += s11
            totals[5] += s12
            totals[6] += s20
            totals[7] += s21
            totals[8] += s22
        for tap in range(9):
            grad_weight[o, c, tap // 3, tap % 3] = totals[tap]


@njit(inline="always")
def _runs(row, start, stop, batch):
    """The three runs [start + j*N, stop + j*N) of a padded input row, taps j = 0, 1, 2."""
    return (row[start:stop], row[start + batch:stop + batch],
            row[start + 2 * batch:stop + 2 * batch])
