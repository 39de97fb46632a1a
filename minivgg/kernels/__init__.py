"""Our compiled loops (Numba @njit) for the hot paths; the functional ops call them by name.

Kernels here are plain loops over arrays whose innermost axis is contiguous in memory, and
they read like the maths they compute. Each parallel kernel (`prange`) gives every output
value one owner and a fixed order of additions: the same bits for any number of threads.

Threads, in one place:
- Numba's pool and OpenBLAS's pool each have one thread per core (NUMBA_NUM_THREADS and
  OPENBLAS_NUM_THREADS override). The ops alternate between them on the training thread
  and never overlap, so only one pool works at a time.
- Kernels are launched only from the thread that trains or evaluates. The data loader's
  prefetch thread converts and augments batches with NumPy alone and never calls a kernel:
  two threads launching parallel kernels at once would contend for the same pool (and
  Numba's workqueue layer does not allow it at all).

Compiled code is cached on disk (`cache=True`, in __pycache__ beside this package, or
NUMBA_CACHE_DIR): the first run compiles each kernel once per argument type, later runs
load it. Numba writes each cache file under a temporary name and renames it, so processes
that start together do not corrupt it; at worst both compile.
"""
