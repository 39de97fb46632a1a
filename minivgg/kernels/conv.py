"""Direct 3x3 and 5x5 stride-1 convolution in the batch-innermost (C, H, W, N) layout.

At stride 1, output row y of channel o is one contiguous run of OW*N values, and the
values kernel tap (i, j) multiplies into it are the contiguous run of input row y + i that
starts j*N values in: the innermost loop runs over OW*N positions whatever the channel
count, with full SIMD lanes. Inputs come already padded.

What bounds these loops is loads, not arithmetic: a multiply-add whose operands both come
from memory costs a load each. So the nine taps are spelled out (each load and store of
an output feeds nine multiply-adds), the weights are local values (registers), and each
input value loaded serves several output channels at once: four in the forward kernel,
two in the weight gradient, as many as the 32 vector registers hold.

The input gradient of a stride-1 convolution is itself a convolution of the same size (of
the gradient, padded, with the kernel flipped and its channel axes swapped: see
functional/conv.py), so conv3x3 and conv5x5 serve forward and input gradient alike. The
5x5 kernels are the 3x3 ones taking one kernel row per pass (below).

Each parallel iteration owns its outputs (output rows, or a pair of (o, c) kernels) and adds
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
# stay in the core's L1 and L2 caches.
BLOCK = 2048
GROUP = 4


@serialised
@njit(parallel=True, cache=True, fastmath=FASTMATH)
def conv3x3(xp, weight, bias, relu, scale, shift, batch, out):
    """out[o, y, x, n] = bias[o] + sum over c, i, j of weight[o, c, i, j] * xp[c, y + i, x + j, n],
    then `_epilogue`'s (relu, scale, shift)

    xp: (C, OH + 2, (OW + 2) * N), padded; weight: (O, C, 3, 3); bias: (O,); out:
    (O, OH, OW * N), overwritten. One parallel iteration per output row of a group of GROUP channels: the
    three input rows of each c are read from L2 once and serve the whole group from L1.
    A whole group is one pass: each input value loaded feeds the multiply-adds of all four
    channels (load-bound otherwise, one load per multiply-add); the channels left over
    when O is not a multiple of 4 take one pass each.
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
                out[o, y, start:stop] = bias[o]
            for c in range(channels):
                # x_ij: the run of input row y + i that tap (i, j) multiplies into out
                x00, x01, x02 = _runs(xp[c, y], start, stop, batch)
                x10, x11, x12 = _runs(xp[c, y + 1], start, stop, batch)
                x20, x21, x22 = _runs(xp[c, y + 2], start, stop, batch)
                if last - first == 4:
                    # a, b, d, e: the taps of the four channels (locals: loaded once)
                    a, b = _taps(weight[first, c]), _taps(weight[first + 1, c])
                    d, e = _taps(weight[first + 2, c]), _taps(weight[first + 3, c])
                    out_a, out_b = out[first, y, start:stop], out[first + 1, y, start:stop]
                    out_d, out_e = out[first + 2, y, start:stop], out[first + 3, y, start:stop]
                    for p in range(stop - start):
                        sa, sb, sd, se = out_a[p], out_b[p], out_d[p], out_e[p]
                        v = x00[p]; sa += a[0] * v; sb += b[0] * v; sd += d[0] * v; se += e[0] * v  # noqa: E702
                        v = x01[p]; sa += a[1] * v; sb += b[1] * v; sd += d[1] * v; se += e[1] * v  # noqa: E702
                        v = x02[p]; sa += a[2] * v; sb += b[2] * v; sd += d[2] * v; se += e[2] * v  # noqa: E702
                        v = x10[p]; sa += a[3] * v; sb += b[3] * v; sd += d[3] * v; se += e[3] * v  # noqa: E702
                        v = x11[p]; sa += a[4] * v; sb += b[4] * v; sd += d[4] * v; se += e[4] * v  # noqa: E702
                        v = x12[p]; sa += a[5] * v; sb += b[5] * v; sd += d[5] * v; se += e[5] * v  # noqa: E702
                        v = x20[p]; sa += a[6] * v; sb += b[6] * v; sd += d[6] * v; se += e[6] * v  # noqa: E702
                        v = x21[p]; sa += a[7] * v; sb += b[7] * v; sd += d[7] * v; se += e[7] * v  # noqa: E702
                        v = x22[p]; sa += a[8] * v; sb += b[8] * v; sd += d[8] * v; se += e[8] * v  # noqa: E702
                        out_a[p], out_b[p], out_d[p], out_e[p] = sa, sb, sd, se
                    continue
                for o in range(first, last):
                    a = _taps(weight[o, c])
                    acc = out[o, y, start:stop]
                    for p in range(stop - start):
                        acc[p] += (a[0] * x00[p] + a[1] * x01[p] + a[2] * x02[p]
                                   + a[3] * x10[p] + a[4] * x11[p] + a[5] * x12[p]
                                   + a[6] * x20[p] + a[7] * x21[p] + a[8] * x22[p])
            for o in range(first, last):
                _epilogue(out[o, y, start:stop], o, relu, scale, shift)


@serialised
@njit(parallel=True, cache=True, fastmath=REDUCTION_FASTMATH)
def conv3x3_weight_grad(xp, grad, batch, grad_weight):
    """grad_weight[o, c, i, j] = sum over y, x, n of grad[o, y, x, n] * xp[c, y + i, x + j, n]

    xp: (C, OH + 2, (OW + 2) * N), padded; grad: (O, OH, OW * N); grad_weight: (O, C, 3, 3).
    One parallel iteration per pair of output channels (a, b) and input channel c: each
    input value loaded feeds the sums of both kernels (when O is odd, the last pair is
    one channel twice). Each output row's 18 sums are float32 dot products, which
    'reassoc' lets LLVM keep in vector registers (its order of additions is fixed by the
    compiled code, not by the thread count); the rows' sums are added in float64.
    """
    channels = xp.shape[0]
    out_channels, out_h, span = grad.shape
    pairs = (out_channels + 1) // 2
    for task in prange(pairs * channels):
        a, c = 2 * (task // channels), task % channels
        b = min(a + 1, out_channels - 1)
        totals_a, totals_b = np.zeros(9), np.zeros(9)
        for y in range(out_h):
            g_a, g_b = grad[a, y], grad[b, y]
            x00, x01, x02 = _runs(xp[c, y], 0, span, batch)
            x10, x11, x12 = _runs(xp[c, y + 1], 0, span, batch)
            x20, x21, x22 = _runs(xp[c, y + 2], 0, span, batch)
            a0 = a1 = a2 = a3 = a4 = a5 = a6 = a7 = a8 = xp.dtype.type(0)
            b0 = b1 = b2 = b3 = b4 = b5 = b6 = b7 = b8 = xp.dtype.type(0)
            for p in range(span):
                ga, gb = g_a[p], g_b[p]
                v = x00[p]; a0 += ga * v; b0 += gb * v  # noqa: E702
                v = x01[p]; a1 += ga * v; b1 += gb * v  # noqa: E702
                v = x02[p]; a2 += ga * v; b2 += gb * v  # noqa: E702
                v = x10[p]; a3 += ga * v; b3 += gb * v  # noqa: E702
                v = x11[p]; a4 += ga * v; b4 += gb * v  # noqa: E702
                v = x12[p]; a5 += ga * v; b5 += gb * v  # noqa: E702
                v = x20[p]; a6 += ga * v; b6 += gb * v  # noqa: E702
                v = x21[p]; a7 += ga * v; b7 += gb * v  # noqa: E702
                v = x22[p]; a8 += ga * v; b8 += gb * v  # noqa: E702
            _add9(totals_a, a0, a1, a2, a3, a4, a5, a6, a7, a8)
            _add9(totals_b, b0, b1, b2, b3, b4, b5, b6, b7, b8)
        for tap in range(9):
            grad_weight[a, c, tap // 3, tap % 3] = totals_a[tap]
            grad_weight[b, c, tap // 3, tap % 3] = totals_b[tap]


# ---- 5x5: the same loops, one kernel row (five taps) per pass --------------------------
# A 5x5 kernel's 25 weights for four channels would not fit in registers; a kernel row's
# five do (20 weights), so each pass adds one row's taps and the output is loaded and
# stored once per row instead of once per kernel.

@serialised
@njit(parallel=True, cache=True, fastmath=FASTMATH)
def conv5x5(xp, weight, bias, relu, scale, shift, batch, out):
    """out[o, y, x, n] = bias[o] + sum over c, i, j of weight[o, c, i, j] * xp[c, y + i, x + j, n],
    then `_epilogue`'s (relu, scale, shift)

    xp: (C, OH + 4, (OW + 4) * N), padded; weight: (O, C, 5, 5); bias: (O,); out:
    (O, OH, OW * N), overwritten. Parallel iterations as conv3x3's; the channels of a group of four share
    each input value loaded, the channels left over take one pass each.
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
                out[o, y, start:stop] = bias[o]
            for c in range(channels):
                for i in range(5):
                    # x_j: the run of input row y + i that tap (i, j) multiplies into out
                    x0, x1, x2, x3, x4 = _runs5(xp[c, y + i], start, stop, batch)
                    if last - first == 4:
                        # a, b, d, e: kernel row i of the four channels (locals)
                        a, b = _row5(weight[first, c, i]), _row5(weight[first + 1, c, i])
                        d, e = _row5(weight[first + 2, c, i]), _row5(weight[first + 3, c, i])
                        out_a, out_b = out[first, y, start:stop], out[first + 1, y, start:stop]
                        out_d, out_e = out[first + 2, y, start:stop], out[first + 3, y, start:stop]
                        for p in range(stop - start):
                            sa, sb, sd, se = out_a[p], out_b[p], out_d[p], out_e[p]
                            v = x0[p]; sa += a[0] * v; sb += b[0] * v; sd += d[0] * v; se += e[0] * v  # noqa: E702
                            v = x1[p]; sa += a[1] * v; sb += b[1] * v; sd += d[1] * v; se += e[1] * v  # noqa: E702
                            v = x2[p]; sa += a[2] * v; sb += b[2] * v; sd += d[2] * v; se += e[2] * v  # noqa: E702
                            v = x3[p]; sa += a[3] * v; sb += b[3] * v; sd += d[3] * v; se += e[3] * v  # noqa: E702
                            v = x4[p]; sa += a[4] * v; sb += b[4] * v; sd += d[4] * v; se += e[4] * v  # noqa: E702
                            out_a[p], out_b[p], out_d[p], out_e[p] = sa, sb, sd, se
                        continue
                    for o in range(first, last):
                        a = _row5(weight[o, c, i])
                        acc = out[o, y, start:stop]
                        for p in range(stop - start):
                            acc[p] += (a[0] * x0[p] + a[1] * x1[p] + a[2] * x2[p]
                                       + a[3] * x3[p] + a[4] * x4[p])
            for o in range(first, last):
                _epilogue(out[o, y, start:stop], o, relu, scale, shift)


@serialised
@njit(parallel=True, cache=True, fastmath=REDUCTION_FASTMATH)
def conv5x5_weight_grad(xp, grad, batch, grad_weight):
    """grad_weight[o, c, i, j] = sum over y, x, n of grad[o, y, x, n] * xp[c, y + i, x + j, n]

    xp: (C, OH + 4, (OW + 4) * N), padded; grad: (O, OH, OW * N); grad_weight: (O, C, 5, 5).
    As conv3x3_weight_grad, a pair of output channels per parallel iteration, one kernel
    row at a time: each row's ten sums are float32 dot products, added in float64.
    """
    channels = xp.shape[0]
    out_channels, out_h, span = grad.shape
    pairs = (out_channels + 1) // 2
    for task in prange(pairs * channels):
        a, c = 2 * (task // channels), task % channels
        b = min(a + 1, out_channels - 1)
        totals_a, totals_b = np.zeros((5, 5)), np.zeros((5, 5))
        for y in range(out_h):
            g_a, g_b = grad[a, y], grad[b, y]
            for i in range(5):
                x0, x1, x2, x3, x4 = _runs5(xp[c, y + i], 0, span, batch)
                a0 = a1 = a2 = a3 = a4 = xp.dtype.type(0)
                b0 = b1 = b2 = b3 = b4 = xp.dtype.type(0)
                for p in range(span):
                    ga, gb = g_a[p], g_b[p]
                    v = x0[p]; a0 += ga * v; b0 += gb * v  # noqa: E702
                    v = x1[p]; a1 += ga * v; b1 += gb * v  # noqa: E702
                    v = x2[p]; a2 += ga * v; b2 += gb * v  # noqa: E702
                    v = x3[p]; a3 += ga * v; b3 += gb * v  # noqa: E702
                    v = x4[p]; a4 += ga * v; b4 += gb * v  # noqa: E702
                _add5(totals_a[i], a0, a1, a2, a3, a4)
                _add5(totals_b[i], b0, b1, b2, b3, b4)
        for i in range(5):
            for j in range(5):
                grad_weight[a, c, i, j] = totals_a[i, j]
                grad_weight[b, c, i, j] = totals_b[i, j]


@njit(inline="always")
def _epilogue(values, o, relu, scale, shift):
    """values = relu?(values) * scale[o] + shift[o] in place, on a block still in L1: an
    eval-mode batch norm and ReLU after the convolution (inference), in its pass. Empty
    scale and shift: none (relu False and no scale: nothing to do)."""
    affine = scale.shape[0] > 0
    if not (relu or affine):
        return
    zero = values.dtype.type(0)
    for p in range(values.shape[0]):
        v = values[p]
        if relu and v < zero:
            v = zero
        if affine:
            v = v * scale[o] + shift[o]
        values[p] = v


@njit(inline="always")
def _add9(totals, s0, s1, s2, s3, s4, s5, s6, s7, s8):
    """totals[k] += s_k for the nine taps (float64 totals)."""
    totals[0] += s0
    totals[1] += s1
    totals[2] += s2
    totals[3] += s3
    totals[4] += s4
    totals[5] += s5
    totals[6] += s6
    totals[7] += s7
    totals[8] += s8


@njit(inline="always")
def _runs(row, start, stop, batch):
    """The three runs [start + j*N, stop + j*N) of a padded input row, taps j = 0, 1, 2."""
    return (row[start:stop], row[start + batch:stop + batch],
            row[start + 2 * batch:stop + 2 * batch])


@njit(inline="always")
def _taps(w):
    """The nine weights of a 3x3 kernel as local values, in row-major tap order."""
    return (w[0, 0], w[0, 1], w[0, 2], w[1, 0], w[1, 1], w[1, 2], w[2, 0], w[2, 1], w[2, 2])


@njit(inline="always")
def _runs5(row, start, stop, batch):
    """The five runs [start + j*N, stop + j*N) of a padded input row, taps j = 0..4."""
    return (row[start:stop], row[start + batch:stop + batch],
            row[start + 2 * batch:stop + 2 * batch], row[start + 3 * batch:stop + 3 * batch],
            row[start + 4 * batch:stop + 4 * batch])


@njit(inline="always")
def _row5(w):
    """The five weights of one row of a 5x5 kernel as local values."""
    return (w[0], w[1], w[2], w[3], w[4])


@njit(inline="always")
def _add5(totals, s0, s1, s2, s3, s4):
    """totals[j] += s_j for the five taps of a kernel row (float64 totals)."""
    totals[0] += s0
    totals[1] += s1
    totals[2] += s2
    totals[3] += s3
    totals[4] += s4
