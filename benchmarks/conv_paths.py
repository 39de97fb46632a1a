"""Which conv2d path is fastest for each 3x3 and 5x5 stride-1 layer of the zoo: the direct kernels,
im2col + one GEMM, or the row GEMMs (functional/conv.py's DIRECT_MAX_CO and ROW_GEMM_MIN_K
rules are read off this table).

Each case is forward + backward (input gradient unless it is a first layer) at one batch
size, one thread for BLAS and Numba, timed by the process's CPU time (all its threads: Numba runs
its kernels on a worker thread even with one thread, which the calling thread's own CPU
time would miss), so that other processes on a shared machine disturb it little. The paths take turns, and each figure is the median of the
repetitions. Usage:

    python benchmarks/conv_paths.py [--batch 128] [--repeat 7]   # measure, write JSON, render
    python benchmarks/conv_paths.py --render-only                 # or --check: is it stale?

Writes benchmarks/results/speed/conv_paths.json and the "Convolution paths" part of
BENCHMARKS.md's speed section.
"""
from __future__ import annotations

import argparse
import datetime
import os
import statistics
import sys
import time

from common import THREAD_VARIABLES

for _name in THREAD_VARIABLES:
    os.environ[_name] = "1"  # before NumPy and Numba load their thread pools

import common  # noqa: E402
import numpy as np  # noqa: E402

import minivgg  # noqa: E402
import minivgg.functional as F  # noqa: E402
from minivgg.functional import conv as conv_module  # noqa: E402
from minivgg.functional.layout import from_chwn  # noqa: E402
from minivgg.functional.malloc import empty  # noqa: E402
from minivgg.run_record import cpu_name  # noqa: E402

RESULT = common.ROOT / "benchmarks" / "results" / "speed" / "conv_paths.json"

# (in channels, out channels, kernel size, input side, padding, where it occurs)
LAYERS = [
    (1, 6, 3, 28, 0, "mnist_5k 1st"), (1, 8, 3, 28, 0, "mnist_7k, mnist_20k 1st"),
    (1, 10, 3, 28, 0, "mnist_8k_a 1st"), (1, 20, 3, 28, 0, "mnist_8k_b 1st"),
    (1, 32, 3, 28, 1, "minivgg_fashion 1st"), (3, 32, 3, 32, 1, "minivggnet 1st"),
    (6, 12, 3, 26, 0, "mnist_5k 2nd"), (12, 12, 3, 12, 0, "mnist_5k 3rd"),
    (8, 16, 3, 26, 0, "mnist_20k 2nd"), (16, 16, 3, 10, 0, "mnist_20k"),
    (10, 20, 3, 24, 0, "mnist_8k_b"), (32, 32, 3, 28, 1, "minivgg_fashion 2nd"),
    (32, 64, 3, 14, 1, "minivgg_fashion 3rd"), (64, 64, 3, 14, 1, "minivgg_fashion 4th"),
    (32, 32, 3, 32, 1, "minivggnet 2nd"), (64, 64, 3, 16, 1, "minivggnet 4th"),
    (32, 64, 3, 8, 0, "vgg_v1, vgg_v2 2nd"), (24, 64, 3, 31, 1, "airbench94 1st 3x3"),
    (64, 64, 3, 15, 1, "airbench94 2nd 3x3"), (64, 256, 3, 15, 1, "airbench94 3rd 3x3"),
    (1, 32, 5, 28, 0, "vgg_v1, vgg_v2 1st"), (1, 6, 5, 28, 2, "lenet5 1st"),
    (6, 16, 5, 14, 0, "lenet5 2nd"),
]
PATHS = {"direct": {"DIRECT_MAX_CO": 10 ** 9, "DIRECT_MIN_SPAN": 0},
         "im2col": {"DIRECT_MAX_CO": 0, "ROW_GEMM_MIN_K": 10 ** 9},
         "rows": {"DIRECT_MAX_CO": 0, "ROW_GEMM_MIN_K": 0, "ROW_GEMM_MIN_OH": 0}}


def step(path, x, w, grad, first, padding):
    saved = {name: getattr(conv_module, name) for name in PATHS[path]}
    for name, value in PATHS[path].items():
        setattr(conv_module, name, value)
    try:
        xt = minivgg.Tensor(x, requires_grad=not first)
        wt = minivgg.Tensor(w, requires_grad=True)
        F.conv2d(xt, wt, padding=padding).backward(grad)
    finally:
        for name, value in saved.items():
            setattr(conv_module, name, value)


def chwn_array(rng, shape: tuple) -> np.ndarray:
    """Random (N, C, H, W) values over aligned (C, H, W, N) memory, as conv2d returns them."""
    batch, channels, height, width = shape
    chwn = empty((channels, height, width, batch), np.float32)
    chwn[...] = rng.standard_normal(chwn.shape, dtype=np.float32)
    return from_chwn(chwn)


def measure(batch: int, repeat: int) -> list:
    rng = np.random.default_rng(0)
    rows = []
    for channels, out_channels, size, side, padding, where in LAYERS:
        # input and gradient laid out as inside a net, in conv2d's (C, H, W, N) memory
        # (a first layer's input comes from the data loader, in NCHW order)
        first = channels <= 3
        x = (rng.standard_normal((batch, channels, side, side), dtype=np.float32) if first
             else chwn_array(rng, (batch, channels, side, side)))
        w = rng.standard_normal((out_channels, channels, size, size), dtype=np.float32) * 0.3
        out_side = side + 2 * padding - size + 1
        grad = chwn_array(rng, (batch, out_channels, out_side, out_side))
        times = {path: [] for path in PATHS}
        for path in PATHS:
            step(path, x, w, grad, first, padding)  # warm-up (and compilation)
        for _ in range(repeat):
            for path in PATHS:
                start = time.process_time()
                step(path, x, w, grad, first, padding)
                times[path].append(1e3 * (time.process_time() - start))
        ms = {path: statistics.median(t) for path, t in times.items()}
        rows.append({"in": channels, "out": out_channels, "kernel": size, "side": side,
                     "padding": padding,
                     "where": where, "ms": ms})
        print(f"{channels:>3} -> {out_channels:<3} {side}x{side}: " + ", ".join(
            f"{p} {v:.2f} ms" for p, v in ms.items()), flush=True)
    return rows


def render(result: dict) -> str:
    """The text between the conv-paths markers of BENCHMARKS.md."""
    lines = ["", "### Convolution paths (3x3 and 5x5 stride-1 layers, forward + backward)", "",
             f"Produced by `{result['command']}` on {result['date']} (commit {result['commit']}): "
             f"batch {result['batch']}, 1 thread, the process's CPU time, median of "
             f"{result['repeat']}. {result['machine']}. The path conv2d takes is in bold.", "",
             "| layer | in -> out | kernel | map | direct ms | im2col ms | row GEMMs ms | direct vs best GEMM |",
             "|---|---|---|---:|---:|---:|---:|---:|"]
    for row in result["rows"]:
        ms = row["ms"]
        size = row.get("kernel", 3)
        out_side = row["side"] + 2 * row["padding"] - size + 1
        direct = conv_module.use_direct(row["in"], row["out"], (size, size), (1, 1),
                                        (row["padding"],) * 4, out_side * result["batch"])
        rows_path = conv_module.use_row_gemms(row["in"], (size, size), (1, 1), out_side)
        taken = "direct" if direct else ("rows" if rows_path else "im2col")
        cells = [f"**{ms[p]:.2f}**" if p == taken else f"{ms[p]:.2f}" for p in PATHS]
        best_gemm = min(ms["im2col"], ms["rows"])
        lines.append(f"| {row['where']} | {row['in']} -> {row['out']} | {size}x{size} | "
                     f"{row['side']}x{row['side']} | " + " | ".join(cells)
                     + f" | {best_gemm / ms['direct']:.2f}x |")
    return "\n" + "\n".join(lines) + "\n\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--repeat", type=int, default=7)
    common.add_section_options(parser, RESULT)
    args = parser.parse_args(argv)

    def run() -> dict:
        return {"command": "python benchmarks/conv_paths.py"
                + (f" --batch {args.batch}" if args.batch != 128 else ""),
                "date": datetime.datetime.now().isoformat(timespec="seconds"),
                "commit": common.short_commit(), "batch": args.batch, "repeat": args.repeat,
                "machine": f"{cpu_name()}, {os.cpu_count()} cores, load average at start "
                           f"{os.getloadavg()[0]:.1f}",
                "rows": measure(args.batch, args.repeat)}

    return common.section_main(args, "conv-paths", "conv_paths.py", render, run)


if __name__ == "__main__":
    sys.exit(main())
