"""Where a training step's time goes: per-op self time of minivgg, beside PyTorch's profiler.

Every Function subclass's forward and backward, and conv2d's unfolding helpers they
call, are wrapped with timers that record self time (a helper's time is taken out of the
op that calls it); the optimizer step and zero_grad are timed too, and `other` is what is
left of the step: Python, autograd bookkeeping and Module overhead. The same step in
PyTorch is profiled with torch.profiler (self CPU time per aten op). Usage:

    python benchmarks/profile_step.py --model minivggnet --batch-size 128
    python benchmarks/profile_step.py --model mnist_5k --batch-size 64 --no-torch --steps 20

Writes benchmarks/results/speed/profile_<model>_b<batch>.json (which speed.py renders into
BENCHMARKS.md) and prints the tables.
"""
from __future__ import annotations

import argparse
import importlib
import os
import pkgutil
import shlex
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import common  # noqa: E402

if __name__ == "__main__":
    common.pin_threads(sys.argv[1:])  # before NumPy loads OpenBLAS

import minivgg.functional  # noqa: E402
from minivgg.autograd import Function  # noqa: E402
from minivgg.functional.gemm import blas_threads  # noqa: E402
from minivgg.models.zoo import MODELS  # noqa: E402
from minivgg.summary import count_flops  # noqa: E402

RESULTS = HERE / "results" / "speed"   # speed.json, and the profile_*.json that speed.py renders

# Helpers whose time is split out of the op that calls them, by module of minivgg.functional.
HELPERS = {"conv": ("_unfold", "_fold")}


class SelfTimer:
    """Self time per name: a wrapped call's time minus that of the wrapped calls inside it."""

    def __init__(self):
        self.ms = defaultdict(float)
        self.calls = defaultdict(int)
        self._stack = []  # [name, start, time spent in wrapped children]

    def wrap(self, name, fn, label=None):
        """fn timed under (name, label(args)); label=None: (name, "")."""
        def timed(*args, **kwargs):
            key = (name, "" if label is None else label(args))
            self._stack.append([key, time.perf_counter(), 0.0])
            try:
                return fn(*args, **kwargs)
            finally:
                key, start, children = self._stack.pop()
                elapsed = time.perf_counter() - start
                self.ms[key] += 1e3 * (elapsed - children)
                self.calls[key] += 1
                if self._stack:
                    self._stack[-1][2] += elapsed
        timed.__wrapped__ = fn
        return timed

    def reset(self):
        self.ms.clear()
        self.calls.clear()


def _all_subclasses(cls):
    for sub in cls.__subclasses__():
        yield sub
        yield from _all_subclasses(sub)


def _shape_label(args):
    """The shape of a Function call's first array argument (after self), e.g. (128, 32, 32, 32)."""
    for a in args[1:]:
        if hasattr(a, "shape"):
            return str(tuple(a.shape)).replace(" ", "")
    return ""


def instrument(timer: SelfTimer, by_shape: bool) -> list:
    """Wrap every Function's forward/backward and the helpers; returns what to undo."""
    modules = [importlib.import_module(f"minivgg.functional.{info.name}")  # every Function defined
               for info in pkgutil.iter_modules(minivgg.functional.__path__)]
    undo = []
    label = _shape_label if by_shape else None
    for cls in set(_all_subclasses(Function)):
        for phase in ("forward", "backward"):
            if phase in cls.__dict__:
                original = cls.__dict__[phase]
                setattr(cls, phase, timer.wrap(f"{cls.__name__}.{phase}", original, label))
                undo.append((cls, phase, original))
    for owner, names in HELPERS.items():
        home = importlib.import_module(f"minivgg.functional.{owner}")
        for name in names:
            original = getattr(home, name, None)
            if original is None:
                continue  # renamed or removed: its time stays in the op that calls it
            wrapped = timer.wrap(f"{owner}.{name}", original)
            for module in modules:  # every module that imported it by name
                if getattr(module, name, None) is original:
                    setattr(module, name, wrapped)
                    undo.append((module, name, original))
    return undo


def uninstrument(undo: list) -> None:
    for owner, name, original in reversed(undo):
        setattr(owner, name, original)


def time_step(step, steps: int) -> float:
    """Median ms of `steps` calls of step."""
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def profile_minivgg(case, steps: int, by_shape: bool) -> dict:
    timer = SelfTimer()
    optimizer = case.optimizer
    undo = instrument(timer, by_shape)
    step_fn, zero_fn = optimizer.step, optimizer.zero_grad
    optimizer.step = timer.wrap("optimizer.step (SGD)", step_fn)
    optimizer.zero_grad = timer.wrap("optimizer.zero_grad", zero_fn)
    try:
        case.minivgg_train()  # warm the wrappers
        timer.reset()
        start = time.perf_counter()
        for _ in range(steps):
            case.minivgg_train()
        total_ms = 1e3 * (time.perf_counter() - start) / steps
    finally:
        uninstrument(undo)
        del optimizer.step, optimizer.zero_grad  # back to the class's methods
    by_shape = [{"name": f"{name} {shape}".strip(), "ms": ms / steps,
                 "calls": timer.calls[(name, shape)] // steps}
                for (name, shape), ms in timer.ms.items()]
    by_op = defaultdict(lambda: [0.0, 0])
    for (name, shape), ms in timer.ms.items():
        by_op[name][0] += ms / steps
        by_op[name][1] += timer.calls[(name, shape)] // steps
    ops = [{"name": name, "ms": ms, "calls": calls} for name, (ms, calls) in by_op.items()]
    other = {"name": "other (Python, autograd, Module overhead)",
             "ms": max(total_ms - sum(op["ms"] for op in ops), 0.0), "calls": 1}
    return {"profiled_step_ms": total_ms, "ops": _by_time(ops + [other]),
            "by_shape": _by_time(by_shape + [other])}


def _by_time(rows: list) -> list:
    return sorted(rows, key=lambda row: -row["ms"])


def profile_torch(case, steps: int) -> dict:
    from torch.profiler import ProfilerActivity, profile
    case.torch_train()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            case.torch_train()
    ops = [{"name": event.key, "ms": event.self_cpu_time_total / 1e3 / steps,
            "calls": event.count // steps}
           for event in prof.key_averages() if event.self_cpu_time_total > 0]
    # Self times sum to more than the unprofiled step (the profiler's own cost): shares use this sum.
    return {"ops": _by_time(ops), "profiled_ms": sum(op["ms"] for op in ops)}


def quietly(fn, max_wait: float, threshold: float):
    """fn() measured while other processes use at most `threshold` cores, retried until then
    for up to `max_wait` seconds; returns (its result, the other load it saw)."""
    deadline = time.perf_counter() + max_wait
    while True:
        common.wait_for_quiet(max(0.0, deadline - time.perf_counter()), threshold)
        load = common.OtherLoad().start()
        result = fn()
        cores = load.cores() or 0.0
        if cores <= threshold or time.perf_counter() >= deadline:
            return result, cores


def run(model_name: str, batch: int, steps: int, with_torch: bool, threads: int,
        max_wait: float = 120.0, threshold: float = 0.15) -> dict:
    from speed import Case  # the step speed.py times

    torch = None
    if with_torch:
        import torch
        torch.set_num_threads(threads)
    case = Case(model_name, batch, torch=torch)
    case.set_training(True)
    for _ in range(2):
        case.minivgg_train()
    flops = count_flops(case.model, case.shape)

    def measure():
        return time_step(case.minivgg_train, steps), profile_minivgg(case, steps, by_shape=True)

    (step_ms, detailed), other = quietly(measure, max_wait, threshold)
    result = {"model": model_name, "batch": batch, "steps": steps, "threads": threads,
              "openblas_threads": blas_threads(),
              "step_ms": step_ms, "images_per_s": 1e3 * batch / step_ms,
              "train_gflops": flops["train"] * batch / step_ms / 1e6,
              "profiled_step_ms": detailed["profiled_step_ms"], "other_cores": other,
              "ops": detailed["ops"], "by_shape": detailed["by_shape"]}
    if with_torch:
        for _ in range(2):
            case.torch_train()
        time.sleep(0.2)  # let OpenBLAS's spinning threads go idle (see speed.alternate)

        def measure_torch():
            return time_step(case.torch_train, steps), profile_torch(case, steps)

        (torch_ms, profile), other = quietly(measure_torch, max_wait, threshold)
        result["torch"] = {"step_ms": torch_ms, "images_per_s": 1e3 * batch / torch_ms,
                           "train_gflops": flops["train"] * batch / torch_ms / 1e6,
                           "other_cores": other, **profile}
    return result


def print_report(result: dict, top: int) -> None:
    sides = [("minivgg", result)] + ([("PyTorch", result["torch"])] if "torch" in result else [])
    for name, side in sides:
        print(f"{name}: {side['step_ms']:.1f} ms/step, {side['images_per_s']:.0f} img/s, "
              f"{side['train_gflops']:.1f} GFLOP/s; other processes used "
              f"{side['other_cores']:.2f} cores")
    print("\n".join(render_profile(result, top)[2:]))
    print()
    print("\n".join(op_table([("minivgg op and input shape", result["by_shape"][:top],
                                result["profiled_step_ms"])])))


def render_profile(profile: dict, top: int = 12) -> list:
    """A markdown table of a profile_step.py JSON: where a training step's time goes."""
    step_ms = profile["step_ms"]
    torch = profile.get("torch")
    lines = [f"### Profile: {profile['model']}, batch {profile['batch']}", "",
             f"`{profile['command']}`: minivgg training step {step_ms:.1f} ms"
             + (f", PyTorch {torch['step_ms']:.1f} ms (ratio {torch['step_ms'] / step_ms:.2f})"
                if torch else "")
             + ". Self time of each op per step, with its share of the profiled step; helpers "
               "such as im2col are split out of the op that calls them, `other` is Python, "
               "autograd and Module overhead. PyTorch: self CPU time per aten op "
               "(torch.profiler).", ""]
    columns = [("minivgg op", profile["ops"][:top], profile.get("profiled_step_ms", step_ms))]
    if torch:
        torch_total = torch.get("profiled_ms") or sum(op["ms"] for op in torch["ops"])
        columns.append(("PyTorch op", torch["ops"][:top], torch_total))
    return lines + op_table(columns)


def op_table(columns: list) -> list:
    """Markdown rows of (title, ops, total ms) columns side by side: name, ms, share of total."""
    header = " | ".join(f"{name} | ms | share" for name, _, _ in columns)
    lines = [f"| {header} |", "|" + "---|---:|---:|" * len(columns)]
    for i in range(max(len(ops) for _, ops, _ in columns)):
        cells = [f"{ops[i]['name']} | {ops[i]['ms']:.2f} | {100 * ops[i]['ms'] / total:.0f}%"
                 if i < len(ops) else " | | " for _, ops, total in columns]
        lines.append(f"| {' | '.join(cells)} |")
    return lines


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", choices=list(MODELS), required=True)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--steps", type=int, default=10, help="profiled steps (default 10)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--no-torch", action="store_true", help="skip the PyTorch profile")
    p.add_argument("--max-wait", type=float, default=120.0,
                   help="seconds to wait for other processes to leave the cores idle (default 120)")
    p.add_argument("--top", type=int, default=15, help="rows printed per table")
    p.add_argument("--json", type=Path, help="default benchmarks/results/speed/profile_<model>_b<batch>.json")
    args = p.parse_args(argv)
    result = run(args.model, args.batch_size, args.steps, not args.no_torch, args.threads,
                 args.max_wait)
    result["command"] = " ".join(["python benchmarks/profile_step.py", *map(shlex.quote, argv)])
    result["loadavg"] = list(os.getloadavg())
    print_report(result, args.top)
    path = args.json or RESULTS / f"profile_{args.model}_b{args.batch_size}.json"
    common.write_json(path, result)
    print(f"\nwrote {path}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
