"""Our compiled loops (Numba @njit) for the hot paths; the functional ops call them by name.

Kernels here are plain loops over arrays whose innermost axis is contiguous in memory, and
they read like the maths they compute. Each parallel kernel (`prange`) gives every output
value one owner and a fixed order of additions: the same bits for any number of threads.

Threads, in one place:
- One pool does the parallel work: Numba's, one thread per core (NUMBA_NUM_THREADS
  overrides; numba.set_num_threads lowers it for the calling thread). OpenBLAS is set to
  one thread the first time minivgg multiplies matrices: its idle workers spin after each
  multithreaded product and, on two cores, take a core from the Numba kernel that runs
  next. Large products are split across threads by minivgg itself instead
  (functional/gemm.py), on Python threads that sleep between products.
- Numba's pool is its own `workqueue` layer, whose threads sleep between kernels instead
  of spinning (GNU OpenMP, Numba's default where installed, spins and then competes with
  OpenBLAS's threads for the two cores; benchmarks/threading_policy.py compares them, and
  the figures are in BENCHMARKS.md). NUMBA_THREADING_LAYER overrides the choice.
- Kernels are launched only from the thread that trains or evaluates; the data loader's
  prefetch thread converts and augments batches with NumPy alone. The workqueue layer
  aborts the process if two threads launch at once, so every kernel is `serialised`: a
  lock makes a launch from any other thread (a user's, a server's) wait its turn.

Compiled code is cached on disk (`cache=True`, in __pycache__ beside this package, or
NUMBA_CACHE_DIR): the first run compiles each kernel once per argument type, later runs
load it. Numba writes each cache file under a temporary name and renames it, so processes
that start together do not corrupt it; at worst both compile.
"""
from __future__ import annotations

import functools
import os
import threading

import numba

if "NUMBA_THREADING_LAYER" not in os.environ:
    numba.config.THREADING_LAYER = "workqueue"

_LAUNCH = threading.Lock()


def serialised(kernel):
    """The compiled `kernel`, callable from any thread: one launch at a time."""
    @functools.wraps(kernel)
    def launch(*args):
        with _LAUNCH:
            return kernel(*args)
    launch.kernel = kernel  # the Numba dispatcher itself
    return launch
