"""The transpose of an (N, C, H, W) batch into the (C, H, W, N) memory the kernels work in.

NumPy makes it a copy with a stride of N values on the write side, channel by channel, and
runs several times slower than the memory allows. Here one parallel task takes a (c, h)
row: its W x N block of output stays in L1 while the N input rows of W values are read.
"""
from __future__ import annotations

from numba import njit, prange

from . import serialised


@serialised
@njit(parallel=True, cache=True)
def nchw_to_chwn(x, out):
    """out[c, h, w, n] = x[n, c, h, w]; x: (N, C, H, W) C-ordered, out: (C, H, W, N), which
    may be a view (the inside of a padded array)."""
    batch, channels, height, width = x.shape
    for task in prange(channels * height):
        c, h = task // height, task % height
        block = out[c, h]
        for n in range(batch):
            row = x[n, c, h]
            for w in range(width):
                block[w, n] = row[w]
