"""Training and inference throughput of every zoo model: minivgg against the same model in PyTorch.

For each model and batch size, both frameworks train the same architecture from the same
weights (minivgg.interop.to_torch) on the same random batch with the same optimizer (SGD,
momentum 0.9), on the CPU with the same number of threads (OpenBLAS and Numba for minivgg,
torch.set_num_threads for PyTorch). Each framework runs in a worker process of its own (in
one process the two thread pools stall each other); the workers take turns (AB, BA, AB,
...: a block of minivgg steps, then a block of PyTorch steps, each lasting at least
--min-time seconds) after a warm-up, so both see the same machine, and a pair of blocks
during which other processes took CPU time is measured again (see `alternate`).
Throughputs are the medians over the blocks. Peak memory is measured per configuration in
a fresh child process. The same run measures the float32 GEMM ceiling and counts each
model's FLOPs. Usage:

    python benchmarks/speed.py                       # everything; writes the JSON and BENCHMARKS.md
    python benchmarks/speed.py --models mnist_5k --batch-sizes 64 --reps 3 --no-memory
    python benchmarks/speed.py --render-only         # regenerate the BENCHMARKS.md section from the JSON
    python benchmarks/speed.py --check               # CI: is the section what the JSON generates?

A ratio above 1 means minivgg is faster than PyTorch (or, for memory, uses more).
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime as _dt
import gc
import json
import math
import os
import platform
import re
import resource
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
DEFAULT_JSON = HERE / "results" / "speed" / "speed.json"
DEFAULT_MARKDOWN = ROOT / "BENCHMARKS.md"
BEGIN, END = "<!-- speed:begin -->", "<!-- speed:end -->"
LEARNING_RATE, MOMENTUM = 0.01, 0.9


if __name__ == "__main__":
    from common import pin_threads  # before NumPy loads OpenBLAS
    pin_threads(sys.argv[1:])

import numpy as np  # noqa: E402

sys.path.insert(0, str(ROOT))
import minivgg.functional as F  # noqa: E402
from minivgg import optim  # noqa: E402
from minivgg.autograd import Tensor, no_grad  # noqa: E402
from minivgg.data import get_dataset_info  # noqa: E402
from minivgg.models import build  # noqa: E402
from minivgg.models.zoo import MODELS  # noqa: E402
from minivgg.run_record import cpu_name, git_state  # noqa: E402
from minivgg.summary import count_flops  # noqa: E402


# ---- what is benchmarked ---------------------------------------------------------------------

def default_batch_sizes(model_name: str) -> list:
    """The batch sizes the issue's targets name."""
    return [64, 128]


def input_shape(model_name: str) -> tuple:
    """(C, H, W) of the model's default dataset."""
    return tuple(get_dataset_info(MODELS[model_name].default_dataset).shape)


# The VGG-width nets (32-64 channels and up) whose wide layers BLAS serves on both sides
WIDE_MODELS = ("minivggnet", "minivggnet_light", "minivgg_fashion", "minivgg_fashion_light")


def training_target(model_name: str, batch: int) -> float | None:
    """The issue's target for the training-throughput ratio minivgg/PyTorch, or None."""
    if batch not in (64, 128) or model_name == "airbench94":
        return None
    return 1.0 if model_name in WIDE_MODELS else 1.5


def inference_target(model_name: str, batch: int) -> float | None:
    """The issue's target for the inference-throughput ratio minivgg/PyTorch, or None."""
    return 1.5 if batch == 128 and model_name != "airbench94" else None


MEMORY_TARGET = 1.2  # peak memory minivgg / PyTorch at most this
TIME_TO_ACCURACY_TARGET_S = 90.0  # minivgg to 99.4% MNIST test accuracy with < 8k parameters


# ---- FLOPs -----------------------------------------------------------------------------------

def gemm_gflops(n: int = 2048, repeat: int = 5, torch=None) -> dict:
    """Median float32 GEMM rate of NumPy (and PyTorch when given) on n x n matrices."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    flops = 2.0 * n ** 3
    out = np.empty_like(a)

    def rate(fn):
        fn()
        times = []
        for _ in range(repeat):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
        return flops / statistics.median(times) / 1e9

    result = {"n": n, "repeat": repeat, "numpy": rate(lambda: np.matmul(a, b, out=out))}
    if torch is not None:
        ta, tb = torch.from_numpy(a), torch.from_numpy(b)
        tout = torch.empty_like(ta)
        result["torch"] = rate(lambda: torch.mm(ta, tb, out=tout))
    return result


# ---- one configuration: both frameworks on the same weights and data -------------------------

class Case:
    """A zoo model and its PyTorch twin at one batch size, with step functions for each."""

    def __init__(self, model_name: str, batch: int, torch=None, seed: int = 0):
        self.model_name, self.batch = model_name, batch
        self.shape = input_shape(model_name)
        rng = np.random.default_rng(seed)
        self.x = rng.standard_normal((batch,) + self.shape, dtype=np.float32)  # (N, C, H, W)
        self.y = rng.integers(0, 10, size=batch).astype(np.int64)
        c, h, _ = self.shape
        self.model = build(model_name, in_channels=c, image_size=h, seed=seed)
        self.num_parameters = self.model.num_parameters()
        self.optimizer = optim.SGD(self.model.parameters(), lr=LEARNING_RATE, momentum=MOMENTUM)
        self.torch = torch
        if torch is not None:
            from minivgg.interop import to_torch
            self.twin = to_torch(self.model)
            self.torch_optimizer = torch.optim.SGD(self.twin.parameters(), lr=LEARNING_RATE,
                                                   momentum=MOMENTUM)
            self.tx, self.ty = torch.from_numpy(self.x.copy()), torch.from_numpy(self.y.copy())

    # minivgg
    def minivgg_train(self):
        loss = F.cross_entropy(self.model(Tensor(self.x)), self.y)
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()

    def minivgg_infer(self):
        with no_grad():
            self.model(Tensor(self.x))

    # PyTorch, the same step written the usual way
    def torch_train(self):
        loss = self.torch.nn.functional.cross_entropy(self.twin(self.tx), self.ty)
        self.torch_optimizer.zero_grad()
        loss.backward()
        self.torch_optimizer.step()

    def torch_infer(self):
        with self.torch.no_grad():
            self.twin(self.tx)

    def set_training(self, mode: bool):
        self.model.train(mode)
        if self.torch is not None:
            self.twin.train(mode)


# ---- other processes' load: the two cores are shared --------------------------------------------

class OtherLoad:
    """How many cores other processes kept busy since `start()`: the machine's busy time from
    /proc/stat minus this process's own CPU time (all its threads), over the wall time."""

    def start(self):
        self.t0, self.busy0, self.own0 = time.perf_counter(), _machine_busy_s(), _own_cpu_s()
        return self

    def cores(self) -> float | None:
        busy = _machine_busy_s()
        if busy is None or self.busy0 is None:
            return None
        elapsed = time.perf_counter() - self.t0
        return max(0.0, (busy - self.busy0) - (_own_cpu_s() - self.own0)) / max(elapsed, 1e-9)


def _machine_busy_s() -> float | None:
    try:
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:9]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + fields[4]  # idle + iowait
    return (sum(fields) - idle) / os.sysconf("SC_CLK_TCK")


def _own_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def wait_for_quiet(max_wait: float, threshold: float, window: float = 1.0) -> dict:
    """Sleep in `window`-second probes until other processes use under `threshold` cores,
    for at most `max_wait` seconds; returns the last probe and the time waited."""
    waited, cores = 0.0, None
    while max_wait > 0:
        probe = OtherLoad().start()
        time.sleep(window)
        waited += window
        cores = probe.cores()
        if cores is None or cores < threshold or waited >= max_wait:
            break
    return {"waited_s": waited, "other_cores": cores}


@dataclasses.dataclass
class Timing:
    """How blocks are timed (see `alternate`)."""
    reps: int = 5                  # clean pairs of blocks per configuration (training)
    infer_reps: int = 3            # the same for inference
    min_time: float = 0.3          # seconds per block at least
    pause: float = 0.15            # idle seconds before each block
    quiet_threshold: float = 0.15  # other processes' cores above which a pair is retried
    max_wait: float = 60.0         # seconds of retrying per configuration before accepting noise
    warmup: int = 2
    slow_step: float = 0.5         # a step slower than this (s) ...
    slow_reps: int = 3             # ... gets at most this many pairs


# ---- one worker process per framework ----------------------------------------------------------

class Worker:
    """A child process that runs one framework's steps on request (see `serve_worker`), so
    that each framework has the process, allocator and thread pools to itself."""

    def __init__(self, framework: str, threads: int):
        self.framework = framework
        command = [sys.executable, str(Path(__file__).resolve()), "--worker", framework,
                   "--threads", str(threads)]
        self.process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        text=True, bufsize=1)

    def ask(self, **request) -> dict:
        self.process.stdin.write(json.dumps(request) + "\n")
        line = self.process.stdout.readline()
        if not line:
            code = self.process.wait()
            raise RuntimeError(f"the {self.framework} worker exited (code {code}) on {request}; "
                               f"its error is above")
        reply = json.loads(line)
        if "error" in reply:
            raise RuntimeError(f"the {self.framework} worker failed on {request}:\n{reply['error']}")
        return reply

    def close(self):
        if self.process.poll() is None:
            self.process.stdin.close()
            self.process.wait(timeout=30)


def serve_worker(framework: str, threads: int) -> None:
    """The worker's loop: one JSON request per line on stdin, one JSON reply per line on stdout.

    Requests: {"op": "info"}; {"op": "gemm", "n", "repeat"}; {"op": "steps", "model", "batch",
    "mode" ("train" or "infer"), "calls"}, which times `calls` steps and replies with the
    seconds and this process's CPU seconds (all threads) they took.
    """
    import traceback

    import minivgg.functional.gemm as minivgg_gemm
    torch = None
    if framework == "torch":
        import torch
        torch.set_num_threads(threads)
    case = None
    reply_to = sys.stdout
    sys.stdout = sys.stderr  # anything the libraries print must not corrupt the replies
    for line in sys.stdin:
        request = json.loads(line)
        try:
            if request["op"] == "info":
                if torch is None:  # minivgg's threading policy, as its first product sets it
                    minivgg_gemm.gemm(np.ones((1, 1), np.float32), np.ones((1, 1), np.float32))
                reply = {"openblas_threads": minivgg_gemm.blas_threads()}
                if torch is not None:
                    reply.update(torch_threads=torch.get_num_threads(), torch=torch.__version__)
            elif request["op"] == "gemm":  # the machine's ceiling: BLAS on every thread
                minivgg_gemm.set_blas_threads(threads)
                reply = gemm_gflops(request["n"], request["repeat"], torch=torch)
                if torch is None:
                    minivgg_gemm.set_blas_threads(1)
            else:
                key = (request["model"], request["batch"])
                if case is None or (case.model_name, case.batch) != key:
                    case = None
                    gc.collect()
                    case = Case(*key, torch=torch)
                case.set_training(request["mode"] == "train")
                step = getattr(case, f"{framework}_{request['mode']}")
                cpu, start = _own_cpu_s(), time.perf_counter()
                for _ in range(request["calls"]):
                    step()
                reply = {"seconds": time.perf_counter() - start, "cpu_s": _own_cpu_s() - cpu}
        except Exception:
            reply = {"error": traceback.format_exc()}
        reply_to.write(json.dumps(reply) + "\n")
        reply_to.flush()


def alternate(workers: dict, request: dict, images: int, timing: Timing, reps: int) -> dict:
    """Time blocks of the workers' steps in turn; per framework, the images/s of each block.

    After `timing.warmup` steps each, one timed step sizes a block to last at least
    `min_time`. The pairs alternate their order (AB, BA, AB, ...). Each block starts after a
    `pause`: idle BLAS and OpenMP threads spin for a while after their last call and would
    otherwise take cycles from the other worker's block. The two cores are shared with
    other processes, and either library slows down several-fold when another process takes
    a core, so a pair during which other processes (all but the worker timed) used more
    than `quiet_threshold` cores is thrown away and measured again, for up to `max_wait`
    seconds; after that the noisy pairs are kept and counted in "noisy_pairs".
    """
    names = list(workers)
    calls, slowest = {}, 0.0
    for name, worker in workers.items():
        worker.ask(op="steps", calls=timing.warmup, **request)
        elapsed = worker.ask(op="steps", calls=1, **request)["seconds"]
        slowest = max(slowest, elapsed)
        calls[name] = max(1, math.ceil(timing.min_time / max(elapsed, 1e-6)))
    reps = min(reps, timing.slow_reps) if slowest > timing.slow_step else reps

    def block(name):
        time.sleep(timing.pause)
        busy = _machine_busy_s()
        timed = workers[name].ask(op="steps", calls=calls[name], **request)
        after = _machine_busy_s()
        other = None if busy is None or after is None else \
            max(0.0, after - busy - timed["cpu_s"]) / max(timed["seconds"], 1e-9)
        return images * calls[name] / timed["seconds"], other or 0.0

    samples = {name: [] for name in names}
    others, retried, noisy = [], 0, 0
    deadline = time.perf_counter() + timing.max_wait
    while len(others) < reps:
        order = names if len(others) % 2 == 0 else names[::-1]
        pair = {name: block(name) for name in order}
        load = max(cores for _, cores in pair.values())
        if load > timing.quiet_threshold:
            if time.perf_counter() < deadline:
                retried += 1
                wait_for_quiet(max(0.0, deadline - time.perf_counter()), timing.quiet_threshold)
                continue
            noisy += 1
        for name, (rate, _) in pair.items():
            samples[name].append(rate)
        others.append(load)
    result = {name: {"median": statistics.median(s), "samples": s, "calls_per_block": calls[name]}
              for name, s in samples.items()}
    result.update(other_cores=max(others), retried_pairs=retried, noisy_pairs=noisy)
    return result


def measure_case(workers: dict, model_name: str, batch: int, timing: Timing) -> dict:
    request = {"model": model_name, "batch": batch}
    train = alternate(workers, {**request, "mode": "train"}, batch, timing, timing.reps)
    infer = alternate(workers, {**request, "mode": "infer"}, batch, timing, timing.infer_reps)
    return {"train": _with_ratio(train), "infer": _with_ratio(infer)}


def _with_ratio(timed: dict) -> dict:
    return {"minivgg": timed["minivgg"], "torch": timed["torch"],
            "ratio": timed["minivgg"]["median"] / timed["torch"]["median"],
            **{k: timed[k] for k in ("other_cores", "retried_pairs", "noisy_pairs")}}


# ---- peak memory, in a fresh child process per configuration --------------------------------

def _status_kib(key: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            match = re.search(rf"^{key}:\s+(\d+) kB", f.read(), re.MULTILINE)
        return int(match.group(1)) if match else None
    except OSError:
        return None


def _reset_peak_rss() -> bool:
    """Reset the kernel's RSS high-water mark (VmHWM) of this process; False where impossible."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def memory_child(framework: str, model_name: str, batch: int, steps: int) -> dict:
    """Run `steps` training steps of one framework and report its resident-memory peak.

    The baseline is the resident set after imports, one training step at batch 2 (which
    loads what each library loads once), and data, model and optimizer creation;
    the peak is the high-water mark of the resident set during the steps (VmHWM after
    resetting it, else ru_maxrss). Their difference is what training the model costs:
    activations, gradients, optimizer state, library workspaces and allocator caches.
    """
    torch = None
    if framework == "torch":
        import torch
        torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
    # One step at batch 2 first: each library's one-off start-up (minivgg's compiled kernels
    # loading, PyTorch's oneDNN primitives) belongs to the baseline, not to training.
    warm = Case(model_name, 2, torch=torch)
    (warm.torch_train if framework == "torch" else warm.minivgg_train)()
    del warm
    case = Case(model_name, batch, torch=torch)
    step = case.torch_train if framework == "torch" else case.minivgg_train
    if framework == "torch":  # only the twin trains; drop minivgg's copy of the weights
        del case.model, case.optimizer
    gc.collect()
    baseline = _status_kib("VmRSS")
    reset = _reset_peak_rss()
    if baseline is None or not reset:
        baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        method = "ru_maxrss"
    else:
        method = "VmHWM"
    for _ in range(steps):
        step()
    peak = _status_kib("VmHWM") if method == "VmHWM" else \
        resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"baseline_kib": baseline, "peak_kib": peak, "delta_mib": (peak - baseline) / 1024,
            "method": method, "steps": steps}


def measure_memory(model_name: str, batch: int, steps: int = 3) -> dict:
    result = {}
    for framework in ("minivgg", "torch"):
        command = [sys.executable, str(Path(__file__).resolve()), "--memory-child", framework,
                   model_name, str(batch), str(steps)]
        done = subprocess.run(command, capture_output=True, text=True, env=os.environ.copy())
        if done.returncode != 0:
            raise RuntimeError(f"memory child {framework} {model_name} batch {batch} failed:\n"
                               f"{done.stderr[-2000:]}")
        result[framework] = json.loads(done.stdout.strip().splitlines()[-1])
    result["ratio"] = result["minivgg"]["delta_mib"] / max(result["torch"]["delta_mib"], 1e-9)
    return result


# ---- the machine -----------------------------------------------------------------------------

def git_commit() -> str | None:
    """The short commit the workers import, marked when tracked files differ from it."""
    state = git_state()
    if state["git_commit"] is None:
        return None
    return state["git_commit"][:7] + ("+local changes" if state["git_dirty"] else "")


def machine_info(torch_info: dict, threads: int) -> dict:
    return {
        "cpu": cpu_name(), "cpu_count": os.cpu_count(), "threads": threads,
        "openblas_threads": None, "torch_threads": torch_info["torch_threads"],
        "python": platform.python_version(), "numpy": np.__version__,
        "torch": torch_info["torch"], "platform": platform.platform(),
    }


# ---- the BENCHMARKS.md section ---------------------------------------------------------------

def _fmt_rate(x: float) -> str:
    return f"{x:,.0f}"


def _ratio(value: float, target: float | None) -> str:
    """Two decimals, three where two would print the target itself (1.502 misses 1.5)."""
    text = f"{value:.2f}"
    if target is not None and text == f"{target:.2f}" and value != target:
        text = f"{value:.3f}"
    return text


def _load(timed: dict) -> str:
    """Other processes' cores during the kept blocks (the most of any pair), noisy pairs flagged."""
    cores = timed.get("other_cores")
    text = "?" if cores is None else f"{cores:.2f}"
    if timed.get("noisy_pairs"):
        text += f" ({timed['noisy_pairs']} noisy)"
    return text


def _mark(value: float, target: float | None, higher_is_better: bool = True) -> str:
    if target is None:
        return "–"
    ok = value >= target if higher_is_better else value <= target
    return f"{'✓' if ok else '✗'} {'≥' if higher_is_better else '≤'} {target:g}"


def render_section(data: dict, profiles: list = (), analysis: str | None = None,
                   time_to_accuracy: dict | None = None) -> str:
    """The markdown between the speed markers, from a speed JSON (and profile JSONs, an
    analysis text and a time_to_accuracy.py JSON)."""
    meta, machine, gemm = data["meta"], data["machine"], data["gemm"]
    ceiling = data["ceiling_gflops"]
    lines = [BEGIN, "<!-- generated by `python benchmarks/speed.py` (or `--render-only`) from "
                    "benchmarks/results/speed/*.json: do not edit by hand -->", "",
             "minivgg against the same architecture in PyTorch, same weights, same CPU, same "
             "number of threads.", ""]
    lines += [f"Produced by `{meta['command']}` on {meta['date']} (commit {meta['commit']}), "
              f"{meta['wall_s']:.0f} s. Machine: {machine['cpu']}, {machine['cpu_count']} cores; "
              f"{machine['threads']} threads on each side (minivgg: Numba's pool and its own "
              f"GEMM splits, OpenBLAS set to {machine['openblas_threads']}; PyTorch: "
              f"torch.set_num_threads {machine['torch_threads']}); "
              f"Python {machine['python']}, NumPy {machine['numpy']}, PyTorch {machine['torch']}. "
              f"Load average (1 min) at start {meta['loadavg_start'][0]:.2f}, at end "
              f"{meta['loadavg_end'][0]:.2f}.", ""]
    torch_gemm = f", PyTorch {gemm['torch']:.1f} GFLOP/s" if "torch" in gemm else ""
    lines += [f"**Ceiling**: float32 GEMM ({gemm['n']}x{gemm['n']}, median of {gemm['repeat']}): "
              f"NumPy/OpenBLAS {gemm['numpy']:.1f} GFLOP/s{torch_gemm}. The percentages below "
              f"are of the faster, {ceiling:.1f} GFLOP/s.", ""]

    results = data["results"]
    lines += ["### Training step (forward, cross-entropy, backward, SGD momentum step)", "",
              "| model | params | batch | minivgg img/s | PyTorch img/s | ratio | target | "
              "minivgg GFLOP/s (% of ceiling) | PyTorch GFLOP/s (% of ceiling) | other load |",
              "|---|---:|---:|---:|---:|---:|:---:|---:|---:|---:|"]
    for r in results:
        t, flops = r["train"], r["flops"]["train"]
        ours, theirs = t["minivgg"]["median"], t["torch"]["median"]
        g_ours, g_theirs = flops * ours / 1e9, flops * theirs / 1e9
        lines.append(f"| {r['model']} | {r['params']:,} | {r['batch']} | {_fmt_rate(ours)} | "
                     f"{_fmt_rate(theirs)} | {_ratio(t['ratio'], r['target'])} | "
                     f"{_mark(t['ratio'], r['target'])} | "
                     f"{g_ours:.1f} ({100 * g_ours / ceiling:.0f}%) | "
                     f"{g_theirs:.1f} ({100 * g_theirs / ceiling:.0f}%) | {_load(t)} |")
    lines += ["", "### Inference (eval mode, no graph)", "",
              "| model | batch | minivgg img/s | PyTorch img/s | ratio | target | other load |",
              "|---|---:|---:|---:|---:|:---:|---:|"]
    for r in results:
        i, target = r["infer"], r.get("infer_target")
        lines.append(f"| {r['model']} | {r['batch']} | {_fmt_rate(i['minivgg']['median'])} | "
                     f"{_fmt_rate(i['torch']['median'])} | {_ratio(i['ratio'], target)} | "
                     f"{_mark(i['ratio'], target)} | {_load(i)} |")
    with_memory = [r for r in results if r.get("memory")]
    if with_memory:
        lines += ["", "### Peak memory of training steps (MiB above the set-up baseline)", "",
                  "| model | batch | minivgg MiB | PyTorch MiB | ratio | target |",
                  "|---|---:|---:|---:|---:|:---:|"]
        for r in with_memory:
            m = r["memory"]
            lines.append(f"| {r['model']} | {r['batch']} | {m['minivgg']['delta_mib']:.1f} | "
                         f"{m['torch']['delta_mib']:.1f} | {_ratio(m['ratio'], MEMORY_TARGET)} | "
                         f"{_mark(m['ratio'], MEMORY_TARGET, higher_is_better=False)} |")

    lines += ["", "### Targets", "", *target_summary(data)]
    if time_to_accuracy:
        lines += ["", *render_time_to_accuracy(time_to_accuracy)]
    lines += ["", "### Method", "",
              "- Same weights (`minivgg.interop.to_torch`), same random batch (standard normal "
              "images, random labels), same optimizer (SGD, lr 0.01, momentum 0.9), default "
              "`zero_grad` on both sides. Each framework runs in a worker process of its own "
              "and the two take turns (AB, BA, AB, ...), each block of steps lasting at least "
              "`--min-time` seconds after a warm-up; the figures are medians over "
              f"{meta['timing']['reps']} pairs of training blocks and "
              f"{meta['timing']['infer_reps']} of inference blocks (at most "
              f"{meta['timing']['slow_reps']} for configurations whose step takes over "
              f"{meta['timing']['slow_step']} s). Ratio = minivgg / PyTorch.",
              "- The two cores are shared: when another process takes one core, both libraries "
              "slow down several-fold (their 2-thread pools wait on each other), so each block "
              "records the cores other processes used during it (from /proc/stat minus this "
              "timed worker's CPU time) and a pair with more than `--quiet-threshold` cores of "
              "other load is measured again (up to `--max-wait` seconds per configuration; "
              "pairs kept after that are counted as noisy). `other load` is the most any kept "
              "pair saw. Each block starts after a short pause (`--pause`) so that one "
              "worker's idle BLAS or OpenMP threads, which spin for a while after their last "
              "call, do not run into the other worker's block.",
              "- FLOPs count the multiply-adds of convolutions and linear layers (2 per "
              "multiply-add): forward, plus weight gradients and input gradients (none for the "
              "first layer, whose input is the image) for a training step. GFLOP/s = FLOPs per "
              "image x images/s.",
              "- Peak memory: each configuration in a fresh process per framework; the resident "
              "set after imports, one training step at batch 2 (what each library loads once: "
              "minivgg's compiled kernels, PyTorch's oneDNN primitives), data, model and "
              "optimizer is the baseline, then the kernel's high-water mark (VmHWM, reset "
              "before the steps) over 3 training steps; the difference is what training costs "
              "(activations, gradients, optimizer state, library workspaces, allocator caches).",
              "- Targets (issue 18): training ratio ≥ 1.5 for the 28x28 zoo models and ≥ 1.0 "
              "for minivggnet and minivgg_fashion (and their light variants) at batch 64 and "
              "128; inference ratio ≥ 1.5 for every zoo model at batch 128; memory ratio ≤ "
              f"{MEMORY_TARGET:g}. airbench94 has its own benchmark (benchmarks/airbench94.py)."]
    for profile in profiles:
        lines += ["", *render_profile(profile)]
    if analysis:
        lines += ["", analysis.strip()]
    lines.append(END)
    return "\n".join(lines) + "\n"


def render_profile(profile: dict, top: int = 12) -> list:
    """A markdown table of a profile_step.py JSON: where a training step's time goes."""
    step_ms = profile["step_ms"]
    ours_total = profile.get("profiled_step_ms", step_ms)
    torch = profile.get("torch")
    lines = [f"### Profile: {profile['model']}, batch {profile['batch']}", "",
             f"`{profile['command']}`: minivgg training step {step_ms:.1f} ms"
             + (f", PyTorch {torch['step_ms']:.1f} ms (ratio {torch['step_ms'] / step_ms:.2f})"
                if torch else "")
             + ". Self time of each op per step, with its share of the profiled step; helpers "
               "such as im2col are split out of the op that calls them, `other` is Python, "
               "autograd and Module overhead. PyTorch: self CPU time per aten op "
               "(torch.profiler).", ""]
    rows = [("minivgg op", profile["ops"][:top], ours_total)]
    if torch:
        torch_total = torch.get("profiled_ms") or sum(op["ms"] for op in torch["ops"])
        rows.append(("PyTorch op", torch["ops"][:top], torch_total))
    depth = max(len(ops) for _, ops, _ in rows)
    header = " | ".join(f"{name} | ms | share" for name, _, _ in rows)
    lines += [f"| {header} |", "|" + "---|---:|---:|" * len(rows)]
    for i in range(depth):
        cells = []
        for _, ops, total in rows:
            if i < len(ops):
                cells.append(f"{ops[i]['name']} | {ops[i]['ms']:.2f} | {100 * ops[i]['ms'] / total:.0f}%")
            else:
                cells.append(" | | ")
        lines.append(f"| {' | '.join(cells)} |")
    return lines


# Each target of a result row: (name, the row's ratio, its target or None, higher is better)
TARGET_CHECKS = [
    ("training", lambda r: r["train"]["ratio"], lambda r: r["target"], True),
    ("inference", lambda r: r["infer"]["ratio"], lambda r: r.get("infer_target"), True),
    ("memory", lambda r: r["memory"]["ratio"],
     lambda r: MEMORY_TARGET if r.get("memory") else None, False),
]


def _misses(ratio: float, target: float, higher: bool) -> bool:
    return ratio < target if higher else ratio > target


def target_summary(data: dict) -> list:
    """One line per model: met/missed counts and the missed configurations."""
    lines, met, checked = [], 0, 0
    by_model = {}
    for r in data["results"]:
        by_model.setdefault(r["model"], []).append(r)
    for model, rows in by_model.items():
        parts = []
        for name, ratio, target, higher in TARGET_CHECKS:
            judged = [r for r in rows if target(r) is not None]
            if not judged:
                continue
            missed = [r for r in judged if _misses(ratio(r), target(r), higher)]
            checked += len(judged)
            met += len(judged) - len(missed)
            parts.append(f"{name} {'≥' if higher else '≤'} {target(judged[0]):g}: "
                         + (", ".join(f"✗ {_ratio(ratio(r), target(r))} at batch {r['batch']}"
                                      for r in missed) if missed else "✓ at every batch"))
        lines.append(f"- {model}: " + "; ".join(parts))
    return [f"{met} of {checked} targets met.", "", *lines]


def render_time_to_accuracy(tta: dict) -> list:
    """The time-to-accuracy figure of a time_to_accuracy.py JSON."""
    recipe = tta["recipe"]
    lines = [f"### Time to {100 * tta['target']:.1f}% MNIST test accuracy", "",
             f"`{tta['command']}` on {tta['date']}: recipe `{recipe['name']}` (model "
             f"{recipe['model']}, batch {recipe['batch_size']}, at most {tta['max_epochs']} "
             f"epochs, {tta['threads']} threads; {tta['train_images']:,} training and "
             f"{tta['test_images']:,} test images). Wall time from the start of training to the "
             f"end of the first epoch whose test accuracy reaches the target, evaluation "
             f"included; the same recipe, initial weights and batches in a plain PyTorch loop. "
             f"Target: under {TIME_TO_ACCURACY_TARGET_S:.0f} s for minivgg.", "",
             "| framework | parameters | reached at epoch | test accuracy | wall time | target |",
             "|---|---:|---:|---:|---:|:---:|"]
    for framework, result in tta["results"].items():
        reached = result["reached"]
        if reached:
            cells = (f"{reached['epoch']} | {reached['test_acc']:.4f} | "
                     f"{reached['elapsed_s']:.1f} s")
            ok = reached["elapsed_s"] < TIME_TO_ACCURACY_TARGET_S
        else:
            best = max((e["test_acc"] for e in result["epochs"]), default=float("nan"))
            cells = f"not reached | best {best:.4f} | {result['wall_s']:.1f} s"
            ok = False
        mark = ("✓" if ok else "✗") if framework == "minivgg" else "–"
        lines.append(f"| {framework} | {result['parameters']:,} | {cells} | {mark} |")
    if tta.get("figure"):
        lines += ["", f"Figure: [test accuracy against wall time, both frameworks]({tta['figure']})."]
    return lines


def missed_targets(data: dict) -> list:
    return [f"{name} {r['model']} batch {r['batch']}: ratio {ratio(r):.2f} "
            f"{'<' if higher else '>'} {target(r):g}"
            for r in data["results"] for name, ratio, target, higher in TARGET_CHECKS
            if target(r) is not None and _misses(ratio(r), target(r), higher)]


def update_markdown(path: Path, section: str) -> None:
    """Replace what lies between the speed markers of `path` (created with just them if absent)."""
    path = Path(path)
    text = path.read_text() if path.exists() else f"{BEGIN}\n{END}\n"
    start, end = text.find(BEGIN), text.find(END)
    if start < 0 or end < start:
        raise ValueError(f"{path} has no '{BEGIN}' ... '{END}' markers; add them where the speed "
                         f"section belongs")
    new = text[:start] + section.rstrip("\n") + text[end + len(END):]
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(new)
    tmp.replace(path)


def load_profiles(folder: Path) -> list:
    return [json.loads(p.read_text()) for p in sorted(Path(folder).glob("profile_*.json"))]


def section_from_files(json_path: Path) -> str:
    """The section for a speed JSON, the profile_*.json beside it and its analysis.md."""
    data = json.loads(Path(json_path).read_text())
    folder = Path(json_path).parent
    analysis_path = folder / "analysis.md"
    analysis = analysis_path.read_text() if analysis_path.exists() else None
    tta_path = folder / "time_to_accuracy.json"
    tta = json.loads(tta_path.read_text()) if tta_path.exists() else None
    figure = tta_path.with_suffix(".png").resolve()
    if tta is not None and figure.exists():
        # BENCHMARKS.md sits at the repository root: link relative to it where possible
        link = figure.relative_to(ROOT) if figure.is_relative_to(ROOT) else figure
        tta = {**tta, "figure": link.as_posix()}
    return render_section(data, load_profiles(folder), analysis, tta)


def render_from_files(json_path: Path, markdown: Path) -> None:
    update_markdown(markdown, section_from_files(json_path))


def check_markdown(json_path: Path, markdown: Path) -> bool:
    """Whether the section in `markdown` is what the files would generate now."""
    text = Path(markdown).read_text()
    start, end = text.find(BEGIN), text.find(END)
    if start < 0 or end < start:
        return False
    return text[start:end + len(END)] == section_from_files(json_path).rstrip("\n")


# ---- main ------------------------------------------------------------------------------------

def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", nargs="+", choices=list(MODELS), default=list(MODELS))
    p.add_argument("--batch-sizes", nargs="+", type=int,
                   help="default: 16 64 128, and 512 for the 28x28 grayscale models")
    p.add_argument("--reps", type=int, default=5,
                   help="timed training blocks per framework (default 5)")
    p.add_argument("--infer-reps", type=int, default=3,
                   help="timed inference blocks per framework (default 3)")
    p.add_argument("--min-time", type=float, default=0.3, help="seconds per timed block (default 0.3)")
    p.add_argument("--pause", type=float, default=0.15,
                   help="idle seconds before each block (default 0.15)")
    p.add_argument("--quiet-threshold", type=float, default=0.15,
                   help="retry a pair of blocks during which other processes used more cores "
                        "than this (default 0.15)")
    p.add_argument("--max-wait", type=float, default=60.0,
                   help="seconds of retries per configuration before noisy pairs are kept")
    p.add_argument("--threads", type=int, default=2, help="threads on each side (default 2)")
    p.add_argument("--gemm-size", type=int, default=2048, help="matrix size of the GEMM ceiling")
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory children")
    p.add_argument("--json", type=Path, default=DEFAULT_JSON, help=f"default {DEFAULT_JSON}")
    p.add_argument("--markdown", type=Path, default=DEFAULT_MARKDOWN,
                   help="file whose speed section is regenerated (default BENCHMARKS.md)")
    p.add_argument("--no-markdown", action="store_true", help="do not touch the markdown file")
    p.add_argument("--render-only", action="store_true",
                   help="only regenerate the markdown section from --json")
    p.add_argument("--check", action="store_true",
                   help="exit 1 if the markdown section differs from what --json generates")
    p.add_argument("--worker", choices=("minivgg", "torch"), help=argparse.SUPPRESS)
    p.add_argument("--memory-child", nargs=4, metavar=("FRAMEWORK", "MODEL", "BATCH", "STEPS"),
                   help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    if args.worker:
        serve_worker(args.worker, args.threads)
        return 0
    if args.memory_child:
        framework, model_name, batch, steps = args.memory_child
        print(json.dumps(memory_child(framework, model_name, int(batch), int(steps))))
        return 0
    if args.check:
        if check_markdown(args.json, args.markdown):
            print(f"the speed section of {args.markdown} matches {args.json}")
            return 0
        print(f"the speed section of {args.markdown} is not what {args.json} generates; run "
              f"python benchmarks/speed.py --render-only")
        return 1
    if args.render_only:
        render_from_files(args.json, args.markdown)
        print(f"regenerated the speed section of {args.markdown} from {args.json}")
        return 0

    started = time.perf_counter()
    loadavg_start = list(os.getloadavg())
    commit = git_commit()  # what is measured: the tree as the workers import it now
    workers = {name: Worker(name, args.threads) for name in ("minivgg", "torch")}
    try:
        machine = machine_info(workers["torch"].ask(op="info"), args.threads)
        machine["openblas_threads"] = workers["minivgg"].ask(op="info")["openblas_threads"]
        print(f"{machine['cpu']}, {machine['cpu_count']} cores; threads: OpenBLAS "
              f"{machine['openblas_threads']}, torch {machine['torch_threads']}; load "
              f"{loadavg_start}")
        timing = Timing(reps=args.reps, infer_reps=args.infer_reps, min_time=args.min_time,
                        pause=args.pause, quiet_threshold=args.quiet_threshold,
                        max_wait=args.max_wait)
        wait_for_quiet(args.max_wait, args.quiet_threshold)
        gemm = {**workers["minivgg"].ask(op="gemm", n=args.gemm_size, repeat=5),
                "torch": workers["torch"].ask(op="gemm", n=args.gemm_size, repeat=5)["torch"]}
        ceiling = max(gemm["numpy"], gemm["torch"])
        print(f"float32 GEMM {gemm['n']}x{gemm['n']}: NumPy {gemm['numpy']:.1f} GFLOP/s, "
              f"PyTorch {gemm['torch']:.1f} GFLOP/s")

        results = []
        for model_name in args.models:
            for batch in args.batch_sizes or default_batch_sizes(model_name):
                shape = input_shape(model_name)
                model = build(model_name, in_channels=shape[0], image_size=shape[1], seed=0)
                flops, params = count_flops(model, shape), model.num_parameters()
                timed = measure_case(workers, model_name, batch, timing)
                memory = None if args.no_memory else measure_memory(model_name, batch)
                row = {"model": model_name, "dataset": MODELS[model_name].default_dataset,
                       "params": params, "batch": batch,
                       "target": training_target(model_name, batch),
                       "infer_target": inference_target(model_name, batch),
                       "flops": {"forward": flops["forward"], "train": flops["train"]},
                       **timed, "memory": memory, "loadavg": list(os.getloadavg())}
                results.append(row)
                t, i = row["train"], row["infer"]
                mem = (f"  mem {memory['minivgg']['delta_mib']:.0f}/"
                       f"{memory['torch']['delta_mib']:.0f} MiB ({memory['ratio']:.2f})"
                       if memory else "")
                print(f"{model_name:16s} b{batch:<4d} train {t['minivgg']['median']:8.0f} vs "
                      f"{t['torch']['median']:8.0f} img/s ({t['ratio']:.2f})  infer "
                      f"{i['minivgg']['median']:8.0f} vs {i['torch']['median']:8.0f} "
                      f"({i['ratio']:.2f}){mem}  other load {_load(t)} / {_load(i)}, retried "
                      f"{t['retried_pairs'] + i['retried_pairs']}", flush=True)
    finally:
        for worker in workers.values():
            worker.close()

    data = {
        "meta": {"command": " ".join(["python benchmarks/speed.py", *map(shlex.quote, argv)]),
                 "date": _dt.datetime.now().isoformat(timespec="seconds"), "commit": commit,
                 "timing": dataclasses.asdict(timing),
                 "loadavg_start": loadavg_start, "loadavg_end": list(os.getloadavg()),
                 "wall_s": time.perf_counter() - started},
        "machine": machine, "gemm": gemm, "ceiling_gflops": ceiling, "results": results,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.json.with_name(args.json.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1) + "\n")
    tmp.replace(args.json)
    print(f"wrote {args.json}")
    if not args.no_markdown:
        render_from_files(args.json, args.markdown)
        print(f"regenerated the speed section of {args.markdown}")
    for line in missed_targets(data):
        print(f"target missed: {line}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
