"""Elementwise kernels: ReLU, ELU, LeakyReLU and GELU (for float32 with exponentials of
their own: see below) and inverted dropout with counter-based random bits.

Each works on flat views of arrays that share one memory order (functional/layout.py's
`elementwise` provides them, conv2d's (C, H, W, N) included), so every pass is one plain
sweep whatever the layout. Each parallel iteration owns one chunk. The selections are
written as selects, not branches, so that LLVM vectorises them.
"""
from __future__ import annotations

import math

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


# Exponentials for float32 results: exp(t) = exp(t / 1024) ** 1024, a Taylor polynomial of
# degree 7 on [-0.1, 0] (truncation under 3e-13) and ten squarings, in float64, so that
# the float32 result is within a unit in the last place (NumPy's float32 expm1 and exp are
# vectorised, Numba's libm calls are not; this one is plain arithmetic that LLVM vectorises).
# float64 arrays (gradient checks) take libm's functions: the branch on the itemsize is
# decided when a kernel is compiled for a dtype.
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


@njit(inline="always")
def _exp(t, exact):
    """exp(t) for a float64 t <= 0: libm's when exact, else the vectorisable one."""
    return math.exp(t) if exact else _exp_nonpositive(max(t, _EXP_UNDERFLOW))


@serialised
@njit(parallel=True, cache=True, fastmath={"contract"})
def elu(x, alpha, out):
    """out = x where x > 0 (NaN kept), else alpha * expm1(x)."""
    exact = x.itemsize == 8
    for chunk in prange((x.size + CHUNK - 1) // CHUNK):
        start, stop = chunk * CHUNK, min(x.size, (chunk + 1) * CHUNK)
        xs, outs = x[start:stop], out[start:stop]
        for i in range(stop - start):
            v, t = xs[i], _nonpositive_part(xs[i])
            negative = alpha * xs.dtype.type(math.expm1(t) if exact else _expm1_nonpositive(t))
            outs[i] = v if (v > 0 or v != v) else negative


@serialised
@njit(parallel=True, cache=True, fastmath={"contract"})
def elu_backward(grad, x, alpha, dx):
    """dx = grad where x > 0, else (alpha * exp(x)) * grad (NaN where x is)."""
    exact = x.itemsize == 8
    for chunk in prange((x.size + CHUNK - 1) // CHUNK):
        start, stop = chunk * CHUNK, min(x.size, (chunk + 1) * CHUNK)
        gs, xs, dxs = grad[start:stop], x[start:stop], dx[start:stop]
        for i in range(stop - start):
            v = xs[i]
            negative = (alpha * xs.dtype.type(_exp(_nonpositive_part(v), exact))) * gs[i]
            negative = negative if v == v else v
            dxs[i] = gs[i] if v > 0 else negative


@serialised
@njit(parallel=True, cache=True)
def leaky_relu(x, slope, out):
    """out = x where x > 0 (NaN kept), else slope * x."""
    for chunk in prange((x.size + CHUNK - 1) // CHUNK):
        start, stop = chunk * CHUNK, min(x.size, (chunk + 1) * CHUNK)
        xs, outs = x[start:stop], out[start:stop]
        for i in range(stop - start):
            outs[i] = xs[i] if xs[i] > 0 else xs[i] * slope


@serialised
@njit(parallel=True, cache=True)
def leaky_relu_backward(grad, x, slope, dx):
    """dx = grad where x > 0, else slope * grad."""
    for chunk in prange((x.size + CHUNK - 1) // CHUNK):
        start, stop = chunk * CHUNK, min(x.size, (chunk + 1) * CHUNK)
        gs, xs, dxs = grad[start:stop], x[start:stop], dx[start:stop]
        for i in range(stop - start):
            dxs[i] = gs[i] if xs[i] > 0 else gs[i] * slope


# GELU: x * Phi(x), Phi(x) = erfc(-x / sqrt(2)) / 2 the standard normal CDF (erfc keeps the
# left tail accurate), or the tanh form 0.5 * x * (1 + tanh(beta * (x + kappa * x^3))).
# For float32, erfc(z) = t * exp(-z^2 + P(t)), t = 1 / (1 + |z| / 2), reflected for z < 0
# (Numerical Recipes' Chebyshev fit: relative error under 1.2e-7, a float32 unit), and
# the exponential above; float64 takes libm's erfc and exp.
_ERFC_FIT = (-1.26551223, 1.00002368, 0.37409196, 0.09678418, -0.18628806,
             0.27886807, -1.13520398, 1.48851587, -0.82215223, 0.17087277)
_SQRT_HALF, _INV_SQRT_2PI = math.sqrt(0.5), 1 / math.sqrt(2 * math.pi)
_TANH_BETA, _TANH_KAPPA = math.sqrt(2 / math.pi), 0.044715


@njit(inline="always")
def _erfc(z, exact):
    if exact:
        return math.erfc(z)
    t = 1.0 / (1.0 + 0.5 * abs(z))
    p = _ERFC_FIT[9]
    for k in range(8, -1, -1):
        p = p * t + _ERFC_FIT[k]
    tail = t * _exp(p - z * z, False)
    return tail if z >= 0 else 2.0 - tail


@njit(inline="always")
def _gelu_parts(v, tanh_form, exact):
    """(Phi(v), or the tanh form's (1 + tanh(u)) / 2; the derivative of v times it), float64.
    (1 + tanh(u)) / 2 = 1 / (1 + e) for u >= 0, e / (1 + e) below, e = exp(-2|u|): no
    cancellation in the left tail, and its derivative has the factor both terms make."""
    if tanh_form:
        u = _TANH_BETA * (v + _TANH_KAPPA * v * v * v)
        e = _exp(-2.0 * abs(u), exact)
        big, small = 1.0 / (1.0 + e), e / (1.0 + e)
        cdf = big if u >= 0 else small
        return cdf, cdf + 2.0 * v * big * small * _TANH_BETA * (1.0 + 3.0 * _TANH_KAPPA * v * v)
    cdf = 0.5 * _erfc(-_SQRT_HALF * v, exact)
    return cdf, cdf + v * _INV_SQRT_2PI * _exp(-0.5 * v * v, exact)


@serialised
@njit(parallel=True, cache=True, fastmath={"contract"})
def gelu(x, tanh_form, out):
    """out = x * Phi(x) (or the tanh form), computed in float64."""
    exact = x.itemsize == 8
    for chunk in prange((x.size + CHUNK - 1) // CHUNK):
        start, stop = chunk * CHUNK, min(x.size, (chunk + 1) * CHUNK)
        xs, outs = x[start:stop], out[start:stop]
        for i in range(stop - start):
            v = np.float64(xs[i])
            outs[i] = v * _gelu_parts(v, tanh_form, exact)[0]


@serialised
@njit(parallel=True, cache=True, fastmath={"contract"})
def gelu_backward(grad, x, tanh_form, dx):
    """dx = grad * d(x * Phi(x)) / dx (or the tanh form's), computed in float64."""
    exact = x.itemsize == 8
    for chunk in prange((x.size + CHUNK - 1) // CHUNK):
        start, stop = chunk * CHUNK, min(x.size, (chunk + 1) * CHUNK)
        gs, xs, dxs = grad[start:stop], x[start:stop], dx[start:stop]
        for i in range(stop - start):
            dxs[i] = gs[i] * _gelu_parts(np.float64(xs[i]), tanh_form, exact)[1]


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
