"""Batch normalisation, fused with the ReLU on either side of it: training mode, eval mode's
folded affine pass, and the backward of both.

Works on a (C, R, L) view of the input: channel first, its R*L values in rows of L (the
(C, H*W, N) memory behind conv2d's outputs, or (N, C, M) seen through a transpose). One
channel per parallel iteration, so every statistic is summed by one thread in one fixed
order: the same bits for any number of threads. Sums are float64, one per lane of a row
(vector adds), the lanes added at the end.

Forward: one pass for the statistics, one for normalise (+ ReLU, + dropout). Backward: one
pass for the two sums it needs, one for the input gradient.

Dropout after the ReLU draws each element's bits as kernels/elementwise.py's dropout does,
from the key and the element's index in memory (c * stride_c + r * stride_r + n): the same
mask as a separate dropout pass over this output. Backward needs no mask: a dropped
element's output is 0, which the ReLU's test (out > 0) already sends to a zero gradient.

x - mean is formed as (x - m) - r, m the float64 mean rounded to x's dtype and r what the
rounding left: x - m is exact for x near the mean, so channels whose mean is far from
zero keep their accuracy in float32 (Chan, Golub & LeVeque's corrected form).
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from . import serialised
from .elementwise import random_bits

# batch_norm_forward's `dropout` argument when there is none: (key, threshold, scale,
# stride_c, stride_r) with scale 0
NO_DROPOUT = (np.uint64(0), np.uint32(0), 0.0, 0, 0)


@serialised
@njit(parallel=True, cache=True)
def batch_norm_forward(x, weight, bias, eps, relu_before, relu_after, dropout, out, mean,
                       invstd):
    """out = max?(weight * (max?(x, 0) - mean) * invstd + bias, 0) per channel, then dropped
    out if dropout = (key, threshold, scale, stride_c, stride_r) has a scale (see above);
    writes the batch's mean and invstd (biased variance), float64, and returns the variances.

    x, out: (C, R, L); weight, bias: (C,) of x's dtype; mean, invstd: (C,) float64.
    """
    channels, rows, lanes = x.shape
    count = rows * lanes
    variance = np.empty(channels, dtype=np.float64)
    for c in prange(channels):
        total = np.zeros(lanes, dtype=np.float64)
        total_sq = np.zeros(lanes, dtype=np.float64)
        for r in range(rows):
            for n in range(lanes):
                v = np.float64(x[c, r, n])
                if relu_before and v < 0.0:
                    v = 0.0
                total[n] += v
                total_sq[n] += v * v
        mu = total.sum() / count
        var = max(total_sq.sum() / count - mu * mu, 0.0)
        inv = 1.0 / np.sqrt(var + eps)
        mean[c], invstd[c], variance[c] = mu, inv, var
        m, residual = _split(mu, x.dtype)
        scale, shift = x.dtype.type(inv * weight[c]), bias[c]
        key, threshold, drop_scale, stride_c, stride_r = dropout
        drop_scale = x.dtype.type(drop_scale)
        for r in range(rows):
            for n in range(lanes):
                v = x[c, r, n]
                if relu_before and v < 0:
                    v = 0
                y = ((v - m) - residual) * scale + shift
                if relu_after and y < 0:
                    y = 0
                if drop_scale != 0:  # on y rounded to x's dtype, as a separate pass sees it
                    index = c * stride_c + r * stride_r + n
                    y = x.dtype.type(y) * (drop_scale * (random_bits(key, index) >= threshold))
                out[c, r, n] = y
    return variance


@serialised
@njit(parallel=True, cache=True)
def batch_norm_backward(x, dy, out, weight, mean, invstd, batch_stats, relu_before, relu_after,
                        drop_scale, dx, grad_weight, grad_bias):
    """Gradients of batch_norm_forward. dx = weight * invstd * (dy - mean(dy) - xhat *
    mean(dy * xhat)) per channel, xhat = (max?(x, 0) - mean) * invstd, when mean and invstd
    are the batch's (batch_stats); dx = weight * invstd * dy for fixed ones (eval mode,
    batch_norm_affine's gradient). dy is first masked
    by out > 0 (relu_after; and scaled by drop_scale when not 0: the dropout's) and dx by
    x > 0 (relu_before). Writes dx (when it has channels), grad_weight = sum dy * xhat and
    grad_bias = sum dy.
    """
    channels, rows, lanes = x.shape
    count = rows * lanes
    drop_scale = x.dtype.type(drop_scale)
    for c in prange(channels):
        m, residual = _split(mean[c], x.dtype)
        sum_dy = np.zeros(lanes, dtype=np.float64)
        sum_dy_centred = np.zeros(lanes, dtype=np.float64)
        for r in range(rows):
            for n in range(lanes):
                g = dy[c, r, n]
                if relu_after and out[c, r, n] <= 0:
                    g = 0
                elif drop_scale != 0:
                    g = g * drop_scale
                v = x[c, r, n]
                if relu_before and v < 0:
                    v = 0
                sum_dy[n] += g
                sum_dy_centred[n] += np.float64(g) * np.float64(v - m)
        total_dy = sum_dy.sum()
        total_dy_xhat = (sum_dy_centred.sum() - np.float64(residual) * total_dy) * invstd[c]
        grad_bias[c], grad_weight[c] = total_dy, total_dy_xhat
        if dx.shape[0] == 0:
            continue
        inv = x.dtype.type(invstd[c])
        scale = inv * weight[c]
        mean_dy = x.dtype.type(total_dy / count if batch_stats else 0.0)
        xhat_coeff = x.dtype.type(total_dy_xhat / count if batch_stats else 0.0)
        for r in range(rows):
            for n in range(lanes):
                g = dy[c, r, n]
                if relu_after and out[c, r, n] <= 0:
                    g = 0
                elif drop_scale != 0:
                    g = g * drop_scale
                v = x[c, r, n]
                if relu_before and v < 0:
                    v = 0
                d = scale * (g - mean_dy - ((v - m) - residual) * inv * xhat_coeff)
                if relu_before and x[c, r, n] <= 0:
                    d = 0
                dx[c, r, n] = d


@serialised
@njit(parallel=True, cache=True)
def batch_norm_affine(x, scale, shift, relu_before, relu_after, out):
    """out = max?(max?(x, 0) * scale + shift, 0) per channel: eval mode, with the running
    statistics folded into scale and shift. A product, then a sum (no FMA): the same
    bits as NumPy's two passes. x, out: (C, R, L); scale, shift: (C,) of x's dtype."""
    channels, rows, lanes = x.shape
    zero = x.dtype.type(0)
    for c in prange(channels):
        for r in range(rows):
            xs, outs = x[c, r], out[c, r]
            for n in range(lanes):
                v = xs[n]
                if relu_before and v < zero:
                    v = zero
                y = v * scale[c] + shift[c]
                if relu_after and y < zero:
                    y = zero
                outs[n] = y


@njit(inline="always")
def _split(mu, dtype):
    """float64 mu -> (m, r): m = mu in dtype, r = mu - m in dtype."""
    m = dtype.type(mu)
    return m, dtype.type(mu - np.float64(m))
