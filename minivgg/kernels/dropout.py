"""Inverted dropout from uniform draws, one pass each way.

out = x * scale where u >= p, else 0, with scale = 1 / (1 - p) in x's dtype: forward
applies it to the input, backward to the gradient, so the draws u are kept instead of a
mask. The arrays are flat views of the same memory order; each parallel iteration owns
one chunk of them.
"""
from __future__ import annotations

from numba import njit, prange

from . import serialised

CHUNK = 16384


@serialised
@njit(parallel=True, cache=True)
def dropout_apply(x, u, p, scale, out):
    """out[i] = x[i] * (scale if u[i] >= p else 0); x, u, out flat, u float32, p float32."""
    size = x.size
    for chunk in prange((size + CHUNK - 1) // CHUNK):
        start, stop = chunk * CHUNK, min(size, (chunk + 1) * CHUNK)
        xs, us, outs = x[start:stop], u[start:stop], out[start:stop]
        for i in range(stop - start):
            outs[i] = xs[i] * (scale * (us[i] >= p))  # a product, not a branch: vectorised
