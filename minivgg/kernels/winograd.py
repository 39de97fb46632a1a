"""Winograd F(2x2, 3x3): a 3x3 stride-1 convolution with 16 multiplications per 2x2 outputs.

Lavin & Gray (2016), "Fast Algorithms for Convolutional Neural Networks". Split the output
into 2x2 tiles; each reads a 4x4 tile d of the padded input. Then

    out tile = A^T [ sum over c of (G g G^T) * (B^T d B) ] A        (* elementwise, 4x4)

with g the 3x3 kernel and

    B^T = [1  0 -1  0]     G = [1    0    0 ]     A^T = [1  1  1  0]
          [0  1  1  0]         [1/2  1/2  1/2]           [0  1 -1 -1]
          [0 -1  1  0]         [1/2 -1/2  1/2]
          [0  1  0 -1]         [0    0    1 ]

For each of the 16 positions e of the 4x4 transformed tile, the sum over c is a matrix
product: M_e (O, tiles) = U_e (O, C) @ V_e (C, tiles), with U = G g G^T computed once per
call (`winograd_weights`) and V = B^T d B. 16 products of C multiply-adds per tile and
output channel, against the direct kernel's 36 (9 per output): 2.25 times fewer, for two
cheap transforms (adds only) whose cost is shared by all O (input) or all C (output)
channels. The rounding differs from the direct sum's by a few units in the last place.

Everything is fused per block of tiles (one parallel task: a row of tiles, a run of
tile columns, every sample): the transformed inputs V of the block stay in the core's
caches, the products of four output channels in L1, and each output value is written
once, bias added (or, when a 2x2 max pool follows, only the maximum of each tile, which
is exactly that pool's window). Unfused, the transformed arrays would be 4x the
activations and their traffic to memory would cost more than the multiplications saved.

The layout is conv3x3's (C, H, W, N), batch innermost, so every loop runs along whole
runs of samples. The padded input comes with its columns split by parity
(`pad_parity`): then the four input columns 2t..2t+3 of every tile t of a block are four
contiguous runs, and each transform is a few long loops instead of one short loop per
tile. Forward only: minivgg uses it where no gradient is needed (inference).
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from . import serialised
from .conv import FASTMATH

# Input channels multiplied per pass of the product: 4 output channels x 8 input channels
# = 32 weights held in registers, each transformed input loaded feeding 4 multiply-adds.
CHUNK = 8


@njit(cache=True)
def winograd_weights(weight):
    """U[e, o, c] = (G g G^T)[e // 4, e % 4] for g = weight[o, c] (O, C, 3, 3): (16, O, C).
    Computed in float64, stored in the weight's dtype."""
    out_channels, channels = weight.shape[0], weight.shape[1]
    u = np.empty((16, out_channels, channels), weight.dtype)
    gg = np.empty((4, 3))  # G g
    for o in range(out_channels):
        for c in range(channels):
            for j in range(3):
                g0, g1, g2 = np.float64(weight[o, c, 0, j]), np.float64(weight[o, c, 1, j]), np.float64(weight[o, c, 2, j])
                gg[0, j] = g0
                gg[1, j] = 0.5 * (g0 + g1 + g2)
                gg[2, j] = 0.5 * (g0 - g1 + g2)
                gg[3, j] = g2
            for a in range(4):  # (G g) G^T, row a
                u[4 * a, o, c] = gg[a, 0]
                u[4 * a + 1, o, c] = 0.5 * (gg[a, 0] + gg[a, 1] + gg[a, 2])
                u[4 * a + 2, o, c] = 0.5 * (gg[a, 0] - gg[a, 1] + gg[a, 2])
                u[4 * a + 3, o, c] = gg[a, 2]
    return u


@serialised
@njit(parallel=True, cache=True)
def pad_parity(x, top, left, xq):
    """xq[c, r, s, k, n] = x[c, r - top, 2k + s - left, n], zero outside x.

    x: (C, H, W, N); xq: (C, Hp, 2, Wp / 2, N), overwritten: the padded input with its
    even columns (s = 0) before its odd ones (s = 1)."""
    channels, height, width, batch = x.shape
    padded_h, half = xq.shape[1], xq.shape[3]
    for task in prange(channels * padded_h):
        c, r = task // padded_h, task % padded_h
        h = r - top
        for s in range(2):
            for k in range(half):
                w = 2 * k + s - left
                dst = xq[c, r, s, k]
                if h < 0 or h >= height or w < 0 or w >= width:
                    dst[:] = 0.0
                else:
                    src = x[c, h, w]
                    for n in range(batch):
                        dst[n] = src[n]


@serialised
@njit(parallel=True, cache=True, fastmath=FASTMATH)
def winograd3x3(xq, u, bias, relu, scale, shift, batch, tiles_per_block, pool, out):
    """out[o, y, x, n] = bias[o] + sum over c, i, j of weight[o, c, i, j] * xp[c, y + i, x + j, n],
    then rectified if relu (max(out, 0), NaN kept), then out * scale[o] + shift[o], then,
    if pool, the maximum of each 2x2 tile (a 2x2 stride-2 max pool, NaN winning as in
    max_pool), so that the full-size map is never written

    xq: the padded input xp split by column parity (pad_parity), (C, OH + 2, 2, OW/2 + 1, N);
    u: winograd_weights(weight), (16, O, C); bias: (O,); scale, shift: (O,), or empty for
    none; out: (O, OH, OW * N), or (O, OH/2, OW/2 * N) if pool, overwritten; OH and OW
    even. One parallel task per block of tiles_per_block tiles of one tile row.
    """
    channels = xq.shape[0]
    out_channels, out_h, span = out.shape
    tile_rows, tile_cols = (out_h, span // batch) if pool else (out_h // 2, span // batch // 2)
    blocks = (tile_cols + tiles_per_block - 1) // tiles_per_block
    room = tiles_per_block * batch
    affine = scale.shape[0] > 0
    one, zero = out.dtype.type(1), out.dtype.type(0)
    for task in prange(tile_rows * blocks):
        ty, first_tile = task // blocks, (task % blocks) * tiles_per_block
        tiles = min(tiles_per_block, tile_cols - first_tile)
        size = tiles * batch  # positions (tile, sample) of the block
        v = np.empty((16, channels, room), xq.dtype)  # B^T d B of every input channel
        scratch = np.empty((4, 2, room + batch), xq.dtype)
        m = np.empty((4, 16, room), xq.dtype)  # the 16 products of four output channels
        window = np.empty((4, batch), xq.dtype)  # one tile's outputs, when pooled
        for c in range(channels):
            _input_transform(xq, c, 2 * ty, first_tile, tiles, batch, scratch, v)
        for first in range(0, out_channels, 4):
            group = min(4, out_channels - first)
            for e in range(16):
                _products(u, v, e, first, group, m, size)
            for k in range(group):
                o = first + k
                _output_transform(m, k, tiles, batch, bias[o], relu, affine,
                                  scale[o] if affine else one, shift[o] if affine else zero,
                                  pool, scratch, window, out[o], ty, first_tile)


@njit(inline="always")
def _input_transform(xq, c, row, first_tile, tiles, batch, scratch, v):
    """v[e, c, :tiles*N] = (B^T d B)[e] of each tile of the block, d from the padded rows
    row..row+3 of channel c: B^T down the rows (both column parities at once), then B
    along the columns 2t, 2t+1 (the parity-1 run), 2t+2 and 2t+3 of every tile t."""
    span, start = (tiles + 1) * batch, first_tile * batch
    for s in range(2):
        d0 = xq[c, row, s].reshape(-1)[start:start + span]
        d1 = xq[c, row + 1, s].reshape(-1)[start:start + span]
        d2 = xq[c, row + 2, s].reshape(-1)[start:start + span]
        d3 = xq[c, row + 3, s].reshape(-1)[start:start + span]
        t0, t1, t2, t3 = scratch[0, s, :span], scratch[1, s, :span], scratch[2, s, :span], scratch[3, s, :span]
        for p in range(span):
            t0[p] = d0[p] - d2[p]
            t1[p] = d1[p] + d2[p]
            t2[p] = d2[p] - d1[p]
            t3[p] = d1[p] - d3[p]
    size = tiles * batch
    for a in range(4):
        c0, c1 = scratch[a, 0, :size], scratch[a, 1, :size]  # columns 2t, 2t + 1
        c2, c3 = scratch[a, 0, batch:batch + size], scratch[a, 1, batch:batch + size]  # 2t+2, 2t+3
        v0, v1 = v[4 * a, c, :size], v[4 * a + 1, c, :size]
        v2, v3 = v[4 * a + 2, c, :size], v[4 * a + 3, c, :size]
        for p in range(size):
            v0[p] = c0[p] - c2[p]
            v1[p] = c1[p] + c2[p]
            v2[p] = c2[p] - c1[p]
            v3[p] = c1[p] - c3[p]


@njit(inline="always")
def _products(u, v, e, first, group, m, size):
    """m[k, e, :size] = sum over c of u[e, first + k, c] * v[e, c, :size] for the group of
    output channels first..first+group-1 (up to four)."""
    channels = v.shape[1]
    first_single = 0
    if group == 4 and channels >= CHUNK:
        _four_by_eight(u, v, e, first, 0, m, size, True)
        first_single = CHUNK
        while first_single + CHUNK <= channels:
            _four_by_eight(u, v, e, first, first_single, m, size, False)
            first_single += CHUNK
    else:
        for k in range(group):
            m[k, e, :size] = 0.0
    for k in range(group):  # input channels left over, one at a time
        acc = m[k, e, :size]
        for c in range(first_single, channels):
            weight, row = u[e, first + k, c], v[e, c, :size]
            for p in range(size):
                acc[p] += weight * row[p]


@njit(inline="always")
def _four_by_eight(u, v, e, first, c, m, size, overwrite):
    """m[k, e, :size] (+)= sum over the eight input channels c..c+7 of u[e, first + k, c] *
    v[e, c, :size], k = 0..3: each value of v loaded feeds four multiply-adds, the 32
    weights stay in registers."""
    w0, w1 = u[e, first, c:c + 8], u[e, first + 1, c:c + 8]
    w2, w3 = u[e, first + 2, c:c + 8], u[e, first + 3, c:c + 8]
    a0, a1, a2, a3, a4, a5, a6, a7 = w0[0], w0[1], w0[2], w0[3], w0[4], w0[5], w0[6], w0[7]
    b0, b1, b2, b3, b4, b5, b6, b7 = w1[0], w1[1], w1[2], w1[3], w1[4], w1[5], w1[6], w1[7]
    d0, d1, d2, d3, d4, d5, d6, d7 = w2[0], w2[1], w2[2], w2[3], w2[4], w2[5], w2[6], w2[7]
    e0, e1, e2, e3, e4, e5, e6, e7 = w3[0], w3[1], w3[2], w3[3], w3[4], w3[5], w3[6], w3[7]
    v0, v1, v2, v3 = v[e, c, :size], v[e, c + 1, :size], v[e, c + 2, :size], v[e, c + 3, :size]
    v4, v5, v6, v7 = v[e, c + 4, :size], v[e, c + 5, :size], v[e, c + 6, :size], v[e, c + 7, :size]
    m0, m1, m2, m3 = m[0, e, :size], m[1, e, :size], m[2, e, :size], m[3, e, :size]
    zero = v.dtype.type(0)
    for p in range(size):
        if overwrite:
            s0 = s1 = s2 = s3 = zero
        else:
            s0, s1, s2, s3 = m0[p], m1[p], m2[p], m3[p]
        x = v0[p]; s0 += a0 * x; s1 += b0 * x; s2 += d0 * x; s3 += e0 * x  # noqa: E702
        x = v1[p]; s0 += a1 * x; s1 += b1 * x; s2 += d1 * x; s3 += e1 * x  # noqa: E702
        x = v2[p]; s0 += a2 * x; s1 += b2 * x; s2 += d2 * x; s3 += e2 * x  # noqa: E702
        x = v3[p]; s0 += a3 * x; s1 += b3 * x; s2 += d3 * x; s3 += e3 * x  # noqa: E702
        x = v4[p]; s0 += a4 * x; s1 += b4 * x; s2 += d4 * x; s3 += e4 * x  # noqa: E702
        x = v5[p]; s0 += a5 * x; s1 += b5 * x; s2 += d5 * x; s3 += e5 * x  # noqa: E702
        x = v6[p]; s0 += a6 * x; s1 += b6 * x; s2 += d6 * x; s3 += e6 * x  # noqa: E702
        x = v7[p]; s0 += a7 * x; s1 += b7 * x; s2 += d7 * x; s3 += e7 * x  # noqa: E702
        m0[p], m1[p], m2[p], m3[p] = s0, s1, s2, s3


@njit(inline="always")
def _output_transform(m, k, tiles, batch, bias, relu, affine, scale, shift, pool, scratch,
                      window, out, tile_row, first_tile):
    """The 2x2 outputs (A^T m_k A) + bias, through the epilogue, of each tile t of the block
    (tile column first_tile + t): into out (OH, OW * N) at rows 2 * tile_row + i, columns
    2 * (first_tile + t) + j, or, if pool, through `window` (4, N) to their maximum in out
    (OH/2, OW/2 * N) at row tile_row, column first_tile + t. A along the columns of each
    row of m[k] (long loops), then A^T down the rows, one tile column j at a time."""
    size = tiles * batch
    for a in range(4):
        m0, m1 = m[k, 4 * a, :size], m[k, 4 * a + 1, :size]
        m2, m3 = m[k, 4 * a + 2, :size], m[k, 4 * a + 3, :size]
        z0, z1 = scratch[a, 0, :size], scratch[a, 1, :size]
        for p in range(size):
            z0[p] = m0[p] + m1[p] + m2[p]
            z1[p] = m1[p] - m2[p] - m3[p]
    zero = out.dtype.type(0)
    for t in range(tiles):
        q = t * batch
        for j in range(2):
            z0, z1 = scratch[0, j, q:q + batch], scratch[1, j, q:q + batch]
            z2, z3 = scratch[2, j, q:q + batch], scratch[3, j, q:q + batch]
            if pool:  # window rows: taps (0, 0), (0, 1), (1, 0), (1, 1)
                y0, y1 = window[j], window[2 + j]
            else:
                s = (2 * (first_tile + t) + j) * batch
                y0, y1 = out[2 * tile_row, s:s + batch], out[2 * tile_row + 1, s:s + batch]
            for n in range(batch):
                top, bottom = z0[n] + z1[n] + z2[n] + bias, z1[n] - z2[n] - z3[n] + bias
                if relu:
                    top, bottom = zero if top < zero else top, zero if bottom < zero else bottom
                if affine:
                    top, bottom = top * scale + shift, bottom * scale + shift
                y0[n], y1[n] = top, bottom
        if pool:  # max_pool's rule, taps in row-major order: a NaN wins
            s = (first_tile + t) * batch
            pooled = out[tile_row, s:s + batch]
            w0, w1, w2, w3 = window[0], window[1], window[2], window[3]
            for n in range(batch):
                best = w0[n]
                y = w1[n]
                if y > best or y != y:
                    best = y
                y = w2[n]
                if y > best or y != y:
                    best = y
                y = w3[n]
                if y > best or y != y:
                    best = y
                pooled[n] = best
