"""Forward+backward time of minivgg's conv2d and max_pool2d against torch.nn.functional.

Both run on the CPU with 2 threads (OpenBLAS for NumPy, intra-op threads for PyTorch), on
the same data in the same process, taking turns step by step after a warm-up; each time is
the median (and the minimum) over the repetitions. A step builds fresh leaf tensors, runs
the op and backpropagates a fixed random output gradient. Usage:

    python benchmarks/bench_conv_ops.py [--repeat 11]

A ratio below 1 means minivgg is faster than PyTorch.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "2"  # before NumPy loads OpenBLAS, which reads it only then

import numpy as np  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import minivgg  # noqa: E402
import minivgg.functional as F  # noqa: E402


def time_ms(steps, repeat: int) -> list:
    """(median, min) wall time of each step in ms; the steps take turns so both see the
    same machine load. The min is the better estimate on a machine shared with other work."""
    for step in steps:
        step()  # warm-up: first-touch allocations, BLAS thread start
    times = [[] for _ in steps]
    for _ in range(repeat):
        for step, record in zip(steps, times):
            start = time.perf_counter()
            step()
            record.append(time.perf_counter() - start)
    return [(1e3 * statistics.median(record), 1e3 * min(record)) for record in times]


def minivgg_step(op, arrays, needs_grad, grad):
    def step():
        tensors = [minivgg.Tensor(a, requires_grad=n) for a, n in zip(arrays, needs_grad)]
        op(*tensors).backward(grad)
    return step


def torch_step(torch, op, arrays, needs_grad, grad):
    grad = torch.from_numpy(grad)

    def step():
        tensors = [torch.from_numpy(a).requires_grad_(n) for a, n in zip(arrays, needs_grad)]
        op(*tensors).backward(grad)
    return step


def cases(rng):
    """(name, minivgg op, torch op name and kwargs, arrays, which need a gradient)."""
    def normal(*shape):
        return rng.standard_normal(shape, dtype=np.float32)

    return [
        ("(a) conv2d N=128 C=32->32 32x32 3x3 same",
         lambda x, w, b: F.conv2d(x, w, b, padding="same"), ("conv2d", {"padding": "same"}),
         [normal(128, 32, 32, 32), normal(32, 32, 3, 3) * 0.1, normal(32)], [True, True, True]),
        ("(b) conv2d N=128 C=1->6 28x28 3x3 valid (input needs no grad)",
         lambda x, w, b: F.conv2d(x, w, b), ("conv2d", {}),
         [normal(128, 1, 28, 28), normal(6, 1, 3, 3) * 0.3, normal(6)], [False, True, True]),
        ("(c) max_pool2d 2x2 on (128, 32, 32, 32)",
         lambda x: F.max_pool2d(x, 2), ("max_pool2d", {"kernel_size": 2}),
         [np.maximum(normal(128, 32, 32, 32), 0)], [True]),
        ("(d) max_pool2d 3x3 stride 2 pad 1 on (128, 32, 32, 32)",
         lambda x: F.max_pool2d(x, 3, 2, 1),
         ("max_pool2d", {"kernel_size": 3, "stride": 2, "padding": 1}),
         [np.maximum(normal(128, 32, 32, 32), 0)], [True]),
        ("(e) conv2d N=128 C=256->256 4x4 3x3 same",
         lambda x, w, b: F.conv2d(x, w, b, padding=1), ("conv2d", {"padding": 1}),
         [normal(128, 256, 4, 4), normal(256, 256, 3, 3) * 0.02, normal(256)],
         [True, True, True]),
    ]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=11, help="timed repetitions per case")
    args = parser.parse_args()

    import torch  # the reference only; minivgg itself never imports it
    torch.set_num_threads(2)
    rng = np.random.default_rng(0)
    print(f"numpy {np.__version__}, torch {torch.__version__}, 2 threads, "
          f"median of {args.repeat}")
    print(f"{'case (median / min of the runs)':<62} {'minivgg ms':>13} {'torch ms':>13} "
          f"{'ratio':>11}")
    for name, op, (torch_name, torch_kwargs), arrays, needs_grad in cases(rng):
        out_shape = op(*arrays).shape
        grad = rng.standard_normal(out_shape, dtype=np.float32)
        torch_op = getattr(torch.nn.functional, torch_name)
        ours, theirs = time_ms(
            [minivgg_step(op, arrays, needs_grad, grad),
             torch_step(torch, lambda *t: torch_op(*t, **torch_kwargs), arrays, needs_grad,
                        grad)],
            args.repeat)
        print(f"{name:<62} {ours[0]:>6.1f} /{ours[1]:>5.1f} {theirs[0]:>6.1f} /{theirs[1]:>5.1f} "
              f"{ours[0] / theirs[0]:>5.2f} /{ours[1] / theirs[1]:>4.2f}")


if __name__ == "__main__":
    main()
