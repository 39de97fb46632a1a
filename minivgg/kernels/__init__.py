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
- Numba's pool is GNU OpenMP's where Numba finds it (else its own `workqueue` layer),
  with a short spin: an idle OpenMP thread spins GOMP_SPINCOUNT = 20,000 times before it
  sleeps, long enough to catch the next kernel of a step, short enough to leave the core
  to the threads of a matrix product. libgomp's default spin (300,000) takes the core from
  those threads; the workqueue layer's launches cost more than OpenMP's
  (BENCHMARKS.md, "Threading policy", has the measurements).
  NUMBA_THREADING_LAYER and GOMP_SPINCOUNT / OMP_WAIT_POLICY in the environment override;
  the short spin is set only while Numba's pool starts (`start_threads`), so PyTorch's own
  OpenMP in the same process keeps its default.
- Parallel kernels are launched only from the thread that trains or evaluates. The data
  loader makes each batch (NumPy and one compiled kernel, the warp in warp.py, which is
  single-threaded, releases the GIL and never enters the pool) in the training thread
  itself when the pool has every core, and in a prefetch thread only when a core is left
  for it (`spare_core`): a prefetch thread working beside two compute threads on two cores
  stalls each parallel kernel at its barrier, and the steps come out slower than with the
  batches made in line (BENCHMARKS.md, the speed analysis). Every parallel kernel is
  `serialised`: a lock makes a launch from any other thread (a user's, a server's) wait its
  turn, so two launches never share the cores (the workqueue layer would abort).

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
    numba.config.THREADING_LAYER_PRIORITY = ["omp", "workqueue", "tbb"]

_LAUNCH = threading.Lock()


@functools.lru_cache(maxsize=None)
def start_threads() -> int:
    """Start Numba's thread pool, once, and return its size. libgomp reads its spin count
    from the environment when it starts: GOMP_SPINCOUNT is set for that moment only (unless
    the environment sets a wait policy itself), so another OpenMP runtime loaded later in
    the process (PyTorch's) keeps its own default."""
    short_spin = "OMP_WAIT_POLICY" not in os.environ and "GOMP_SPINCOUNT" not in os.environ
    if short_spin:
        os.environ["GOMP_SPINCOUNT"] = "20000"
    try:
        return numba.get_num_threads()  # starts the threading layer
    finally:
        if short_spin:
            del os.environ["GOMP_SPINCOUNT"]


def spare_core() -> bool:
    """Whether Numba's pool leaves a core of this process's CPUs free for other work."""
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return start_threads() < (usable or 1)


def serialised(kernel):
    """The compiled `kernel`, callable from any thread: one launch at a time."""
    @functools.wraps(kernel)
    def launch(*args):
        with _LAUNCH:
            start_threads()
            return kernel(*args)
    launch.kernel = kernel  # the Numba dispatcher itself
    return launch
