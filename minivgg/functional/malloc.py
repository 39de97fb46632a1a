"""Working memory for the kernels: arrays that start on a cache line, and glibc malloc
settings that keep freed memory in the process for a training loop.

`empty` is np.empty whose data starts on a 64-byte boundary. malloc gives 16-byte
alignment, so three arrays in four would start inside a cache line: then every 64-byte
(AVX-512) load of the compiled kernels straddles two lines, and the direct convolution
kernels run markedly slower (the figures are in the commit that aligned them). Every
array a kernel streams through is allocated with it; with a batch that is a multiple of
16, each run those kernels read starts on a line as well.

A training step allocates and frees the same few hundred arrays every step, many of them
megabytes. With glibc's defaults the largest are mmapped fresh every time and the heap's
free top is trimmed back to the system, so every step (or every other step) page-faults
its working set in again, thousands of page faults per step. Serving every allocation
from the heap (M_MMAP_MAX = 0) and never trimming it (M_TRIM_THRESHOLD) lets each step
reuse the previous step's pages (BENCHMARKS.md, "Why the targets are missed", has the
time with and without). Peak memory stays about the same (the same arrays are live at the
peak); the process keeps its peak heap until it exits.

Applied once per process, when the first conv2d runs (importing minivgg changes nothing),
and only on glibc; it changes the allocator of the whole process. Set
MINIVGG_MALLOC=default to leave glibc's settings alone; any MALLOC_*_ tuning variable in
the environment is respected as well (then nothing is changed).
"""
from __future__ import annotations

import ctypes
import ctypes.util
import functools
import math
import os

import numpy as np

# from glibc's malloc.h
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4
KEEP_BYTES = 2**31 - 1  # the largest value mallopt's int argument takes: never trim

ALIGNMENT = 64  # bytes: a cache line, one AVX-512 register


def empty(shape, dtype) -> np.ndarray:
    """np.empty(shape, dtype), C order, its data starting on an ALIGNMENT-byte boundary."""
    dtype = np.dtype(dtype)
    shape = (shape,) if isinstance(shape, (int, np.integer)) else shape
    nbytes = math.prod(shape) * dtype.itemsize
    raw = np.empty(nbytes + ALIGNMENT, np.uint8)
    start = -raw.ctypes.data % ALIGNMENT
    return raw[start:start + nbytes].view(dtype).reshape(shape)


_ENVIRONMENT_TUNING = ("MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_MAX_", "MALLOC_MMAP_THRESHOLD_",
                       "MALLOC_TOP_PAD_", "MALLOC_ARENA_MAX")


@functools.lru_cache(maxsize=None)  # once per process: later calls return the first answer
def keep_freed_memory() -> bool:
    """Set glibc's malloc to serve and keep everything on the heap; True if it was set."""
    if os.environ.get("MINIVGG_MALLOC") == "default":
        return False
    if any(name in os.environ for name in _ENVIRONMENT_TUNING):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False  # not glibc (macOS, musl, Windows): nothing to tune
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    return bool(mallopt(M_MMAP_MAX, 0)) and bool(mallopt(M_TRIM_THRESHOLD, KEEP_BYTES))
