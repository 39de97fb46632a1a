"""Matrix products on every core without a second spinning thread pool.

OpenBLAS's idle worker threads spin for a while after each multithreaded product; on two
cores they then take a core from the Numba kernels that run next, and both slow down
(BENCHMARKS.md, "Threading policy"). So minivgg runs OpenBLAS single-threaded and splits a
large product itself: `gemm` cuts the output into one band of rows (or columns) per
thread, the calling thread computes the first band and a small pool of Python threads the
others (NumPy releases the GIL inside BLAS). Those threads sleep on a queue between
products. Each output value is computed whole by one thread with OpenBLAS's own order of
additions.
"""
from __future__ import annotations

import concurrent.futures
import ctypes
import functools
import os

import numpy as np

from .malloc import empty

# Products below this many multiply-adds run on the calling thread alone: handing a band to
# another thread costs tens of microseconds.
MIN_SPLIT_MACS = 10_000_000


@functools.lru_cache(maxsize=None)
def _blas_single_threaded() -> bool:
    """Set OpenBLAS to one thread, once; MINIVGG_OPENBLAS=keep leaves its thread count alone
    (then OpenBLAS threads each product itself, and minivgg does not split them)."""
    return os.environ.get("MINIVGG_OPENBLAS") != "keep" and set_blas_threads(1)


@functools.lru_cache(maxsize=None)
def _pool() -> concurrent.futures.ThreadPoolExecutor:
    import numba
    return concurrent.futures.ThreadPoolExecutor(
        max_workers=max(1, numba.config.NUMBA_NUM_THREADS - 1), thread_name_prefix="minivgg-gemm")


def blas_threads() -> int | None:
    """The thread count of the OpenBLAS that NumPy loaded, or None where there is none."""
    getter = _openblas("get_num_threads")
    return None if getter is None else int(getter())


def set_blas_threads(count: int) -> bool:
    """Set the thread count of the OpenBLAS that NumPy loaded; False where there is none."""
    setter = _openblas("set_num_threads")
    if setter is not None:
        setter.argtypes = [ctypes.c_int]
        setter(count)
    return setter is not None


def _openblas(name: str):
    """OpenBLAS's function `name`, from the library NumPy loaded (symbol names differ
    between builds), or None."""
    try:
        with open("/proc/self/maps") as maps:
            paths = {line.split()[-1] for line in maps if "openblas" in line.lower()}
    except OSError:
        return None
    for path in sorted(paths):
        try:
            library = ctypes.CDLL(path)
        except OSError:
            continue
        for symbol in (f"scipy_openblas_{name}64_", f"openblas_{name}64_", f"openblas_{name}"):
            function = getattr(library, symbol, None)
            if function is not None:
                function.restype = ctypes.c_int
                return function
    return None


def split(task, length: int, work: int) -> None:
    """task(lo, hi) over [0, length), cut into one range per thread (the calling thread takes
    the first); task(0, length) alone when `work` (multiply-adds) is too little to share."""
    import numba

    from ..kernels import start_threads
    single_threaded_blas = _blas_single_threaded()
    start_threads()
    parts = min(numba.get_num_threads(), length)  # the threads the Numba kernels use
    if parts <= 1 or work < MIN_SPLIT_MACS or not single_threaded_blas:
        task(0, length)
        return
    edges = [length * i // parts for i in range(parts + 1)]
    others = [_pool().submit(task, edges[i], edges[i + 1]) for i in range(1, parts)]
    task(edges[0], edges[1])
    for future in others:
        future.result()


def gemm(a: np.ndarray, b: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """a @ b into `out` (new when None): for (M, K) @ (K, N), the longer of M and N is split
    across threads; for stacks (B, M, K) @ (B, K, N), the B products. Other shapes: np.matmul."""
    if a.ndim not in (2, 3) or b.ndim != a.ndim:
        return np.matmul(a, b, out=out)
    if out is None:
        out = empty(a.shape[:-1] + b.shape[-1:], np.result_type(a, b))
    work = out.size * a.shape[-1]
    if a.ndim == 3:
        split(lambda lo, hi: np.matmul(a[lo:hi], b[lo:hi], out=out[lo:hi]), len(out), work)
    elif out.shape[0] >= out.shape[1]:
        split(lambda lo, hi: np.matmul(a[lo:hi], b, out=out[lo:hi]), out.shape[0], work)
    else:
        split(lambda lo, hi: np.matmul(a, b[:, lo:hi], out=out[:, lo:hi]), out.shape[1], work)
    return out
