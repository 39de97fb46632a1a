"""Elementwise kernels: ReLU, ELU (in float32 with an exponential of its own, in float64
around NumPy's) and inverted dropout with counter-based random bits.

Each works on flat views of arrays that share one memory order (functional/layout.py's
`elementwise` provides them, conv2d's (C, H, W, N) included), so every pass is one plain
sweep whatever the layout. Each parallel iteration owns one chunk. The selections are
written as selects, not branches, so that LLVM vectorises them.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from . import serialised

CHUNK = 16384


@serialised
@njit(parallel=True, cache=True)
def relu(x, out):
    """out = x where x >= 0 (NaN kept, as np.maximum does), else 0."""
    for chunk in prange((x.size + CHUNK - 1) // CHUNK):
        start, stop = chunk * CHUNK, min(x.size, (chunk + 1) * CHUNK)
        xs, outs = x[start:stop], out[start:stop]
        zero = xs.dtype.type(0)
        for i in range(stop - start):
            outs[i] = zero if xs[i] < zero else xs[i]


@serialised
@njit(parallel=True, cache=True)
def relu_backward(grad, out, dx):
    """dx = grad where the ReLU's output is positive, else 0."""
    for chunk in prange((grad.size + CHUNK - 1) // CHUNK):
        start, stop = chunk * CHUNK, min(grad.size, (chunk + 1) * CHUNK)
        gs, outs, dxs = grad[start:stop], out[start:stop], dx[start:stop]
        zero = gs.dtype.type(0)
        for i in range(stop - start):
            dxs[i] = gs[i] if outs[i] > zero else zero


# ELU's exponential for float32: exp(t) = exp(t / 1024) ** 1024, a Taylor polynomial of
# degree 7 on [-0.1, 0] (truncation under 3e-13) and ten squarings, in float64, so that
# the float32 result is within a unit in the last place (NumPy's float32 expm1 and exp are
# vectorised, Numba's libm calls are not; this one is plain arithmetic that LLVM vectorises).
_TAYLOR = (1.0, 1.0, 1 / 2, 1 / 6, 1 / 24, 1 / 120, 1 / 720, 1 / 5040)  # 1 / k!
_EXP_UNDERFLOW = -104.0  # exp of anything below rounds to 0 in float32


@njit(inline="always")
def _exp_nonpositive(t):
    """exp(t) for a float64 t in [_EXP_UNDERFLOW, 0]."""
    y = t * (1.0 / 1024.0)
    p = _TAYLOR[7]
    for k in range(6, -1, -1):
        p = p * y + _TAYLOR[k]
    for _ in range(10):
        p = p * p
    return p


@njit(inline="always")
def _nonpositive_part(v):
    """min(v, 0) as float64 (-0.0 kept), no lower than _EXP_UNDERFLOW; 0 for NaN (its
    caller's select keeps the NaN)."""
    t = np.float64(v)
    t = t if t <= 0.0 else 0.0
    return t if t > _EXP_UNDERFLOW else _EXP_UNDERFLOW


@njit(inline="always")
def _expm1_nonpositive(t):
    """exp(t) - 1 for a float64 t in [_EXP_UNDERFLOW, 0]: a short series near 0, where the
    subtraction would cancel."""
    series = t * (1.0 + t * (0.5 + t * (1.0 / 6.0 + t * (1.0 / 24.0))))
    return series if t > -1e-3 else _exp_nonpositive(t) - 1.0


@serialised
@njit(parallel=True, cache=True, fastmath={"contract"})
def elu_float32(x, alpha, out):
    """out = x where x > 0 (NaN kept), else alpha * expm1(x); x, out float32."""
    for chunk in prange((x.size + CHUNK - 1) // CHUNK):
        start, stop = chunk * CHUNK, min(x.size, (chunk + 1) * CHUNK)
        xs, outs = x[start:stop], out[start:stop]
        zero = xs.dtype.type(0)
        for i in range(stop - start):
            v = xs[i]
            negative = alpha * np.float32(_expm1_nonpositive(_nonpositive_part(v)))
            outs[i] = v if (v > zero or v != v) else negative


@serialised
@njit(parallel=True, cache=True, fastmath={"contract"})
def elu_backward_float32(grad, x, alpha, dx):
    """dx = grad where x > 0, else (alpha * exp(x)) * grad (NaN where x is); float32."""
    for chunk in prange((x.size + CHUNK - 1) // CHUNK):
        start, stop = chunk * CHUNK, min(x.size, (chunk + 1) * CHUNK)
        gs, xs, dxs = grad[start:stop], x[start:stop], dx[start:stop]
        zero = xs.dtype.type(0)
        for i in range(stop - start):
            v = xs[i]
            negative = (alpha * np.float32(_exp_nonpositive(_nonpositive_part(v)))) * gs[i]
            negative = negative if v == v else v
            dxs[i] = gs[i] if v > zero else negative


@serialised
@njit(parallel=True, cache=True)
def elu(x, expm1_negative, alpha, out):
    """out = x where x > 0, else alpha * expm1(x); expm1_negative = expm1(min(x, 0)) comes
    from NumPy, so the values are NumPy's to the bit."""
    for chunk in prange((x.size + CHUNK - 1) // CHUNK):
        start, stop = chunk * CHUNK, min(x.size, (chunk + 1) * CHUNK)
        xs, es, outs = x[start:stop], expm1_negative[start:stop], out[start:stop]
        zero = xs.dtype.type(0)
        for i in range(stop - start):
            outs[i] = xs[i] if xs[i] > zero else alpha * es[i]


@serialised
@njit(parallel=True, cache=True)
def elu_backward(grad, x, exp_negative, alpha, dx):
    """dx = grad where x > 0, else (alpha * exp(x)) * grad; exp_negative = exp(min(x, 0))
    comes from NumPy."""
    for chunk in prange((x.size + CHUNK - 1) // CHUNK):
        start, stop = chunk * CHUNK, min(x.size, (chunk + 1) * CHUNK)
        gs, xs, es, dxs = grad[start:stop], x[start:stop], exp_negative[start:stop], dx[start:stop]
        zero = xs.dtype.type(0)
        for i in range(stop - start):
            dxs[i] = gs[i] if xs[i] > zero else (alpha * es[i]) * gs[i]


# SplitMix64's constants (Steele, Lea and Flood, "Fast splittable pseudorandom number
# generators", 2014): the counter's step (the golden ratio) and the output function's mixers.
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1, _MIX2 = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)
_SHIFT1, _SHIFT2, _SHIFT3, _HIGH = np.uint64(30), np.uint64(27), np.uint64(31), np.uint64(32)


@njit(cache=True, inline="always")
def random_bits(key, index):
    """32 uniform random bits for element `index` of the stream `key`: SplitMix64's output
    function on the counter key + index * golden ratio. A counter-based generator: each
    element's bits depend on (key, index) alone, so any thread can draw any element."""
    z = key + np.uint64(index) * _GOLDEN
    z = (z ^ (z >> _SHIFT1)) * _MIX1
    z = (z ^ (z >> _SHIFT2)) * _MIX2
    return np.uint32((z ^ (z >> _SHIFT3)) >> _HIGH)


@serialised
@njit(parallel=True, cache=True)
def dropout(x, key, threshold, scale, out):
    """out[i] = x[i] * (scale if random_bits(key, i) >= threshold else 0); key uint64,
    threshold uint32. Backward calls it again on the gradient, with the same key."""
    for chunk in prange((x.size + CHUNK - 1) // CHUNK):
        start, stop = chunk * CHUNK, min(x.size, (chunk + 1) * CHUNK)
        xs, outs = x[start:stop], out[start:stop]
        for i in range(stop - start):
            keep = random_bits(key, start + i) >= threshold
            outs[i] = xs[i] * (scale * keep)  # a product, not a branch
