"""Pin every BLAS/OpenMP/Numba thread pool of a benchmark to --threads threads (default 2).

Imported by the benchmark scripts before NumPy: OpenBLAS reads its thread count only when
it loads, and the comparison is only fair with the same count on both sides whatever the
environment says. Imports nothing heavy itself.
"""
from __future__ import annotations

import argparse
import os

THREAD_VARIABLES = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS")


def pin_threads(argv) -> int:
    """Read --threads from argv and set every thread-count variable to it; returns it."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--threads", type=int, default=2)
    threads = pre.parse_known_args(argv)[0].threads
    for name in THREAD_VARIABLES:
        os.environ[name] = str(threads)
    return threads
