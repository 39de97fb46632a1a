"""Training and inference throughput of every zoo model: minivgg against the same model in PyTorch.

Each framework runs in a worker process of its own, the two taking turns (`alternate`); peak
memory comes from fresh child processes (`memory_child`). The section this renders into
BENCHMARKS.md states the method (`method`). Usage:

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
import resource
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

sys.path.insert(0, str(Path(__file__).resolve().parent))   # common, also when a test loads this by path
import common  # noqa: E402

if __name__ == "__main__":
    common.pin_threads(sys.argv[1:])  # before NumPy loads OpenBLAS

import numpy as np  # noqa: E402

import minivgg.functional as F  # noqa: E402
from minivgg import optim  # noqa: E402
from minivgg.autograd import Tensor, no_grad  # noqa: E402
from minivgg.data import get_dataset_info  # noqa: E402
from minivgg.models import build  # noqa: E402
from minivgg.models.zoo import MODELS  # noqa: E402
from minivgg import run_record  # noqa: E402
from minivgg.summary import count_flops  # noqa: E402

DEFAULT_JSON = common.ROOT / "benchmarks" / "results" / "speed" / "speed.json"
SECTION = "speed"  # the BENCHMARKS.md section this script owns
LEARNING_RATE, MOMENTUM = 0.01, 0.9


# ---- what is benchmarked, and the targets ---------------------------------------------

DEFAULT_BATCH_SIZES = [64, 128]  # the batch sizes the targets name

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


def input_shape(model_name: str) -> tuple:
    """(C, H, W) of the model's default dataset."""
    return tuple(get_dataset_info(MODELS[model_name].default_dataset).shape)


# ---- one configuration: both frameworks on the same weights and data -------------------------

class Case:
    """A zoo model and its PyTorch twin at one batch size, with step functions for each."""

    def __init__(self, model_name: str, batch: int, torch=None, seed: int = 0):
        self.model_name, self.batch = model_name, batch
        self.shape = input_shape(model_name)
        rng = np.random.default_rng(seed)
        self.x = rng.standard_normal((batch,) + self.shape, dtype=np.float32)  # (N, C, H, W)
        self.y = rng.integers(0, 10, size=batch).astype(np.int64)
        self.model = build(model_name, seed=seed)
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


def gemm_gflops(n: int = 2048, repeat: int = 5, torch=None) -> dict:
    """Median float32 GEMM rate of NumPy (and PyTorch when given) on n x n matrices."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    out = np.empty_like(a)

    def rate(fn):
        fn()
        times = []
        for _ in range(repeat):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
        return 2.0 * n ** 3 / statistics.median(times) / 1e9

    result = {"n": n, "repeat": repeat, "numpy": rate(lambda: np.matmul(a, b, out=out))}
    if torch is not None:
        ta, tb = torch.from_numpy(a), torch.from_numpy(b)
        tout = torch.empty_like(ta)
        result["torch"] = rate(lambda: torch.mm(ta, tb, out=tout))
    return result


# ---- one worker process per framework, taking turns --------------------------------------------

def _option(default, help: str):
    return dataclasses.field(default=default, metadata={"help": help})


@dataclasses.dataclass
class Timing:
    """How blocks are timed (see `alternate`); the fields with a help text are options."""
    reps: int = _option(7, "timed training blocks per framework")
    infer_reps: int = _option(5, "timed inference blocks per framework")
    visits: int = _option(3, "sweeps over the configurations, each taking its share of a "
                             "configuration's pairs")
    min_time: float = _option(0.3, "seconds per timed block at least")
    pause: float = _option(0.15, "idle seconds before each block")
    quiet_threshold: float = _option(0.15, "retry a pair of blocks during which other "
                                           "processes used more cores than this")
    max_wait: float = _option(60.0, "seconds of retries per configuration before noisy "
                                    "pairs are kept")
    warmup: int = 2
    slow_step: float = 0.5         # a step slower than this (s) ...
    slow_reps: int = 3             # ... gets at most this many pairs


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
                cpu, start = common.own_cpu_s(), time.perf_counter()
                for _ in range(request["calls"]):
                    step()
                reply = {"seconds": time.perf_counter() - start, "cpu_s": common.own_cpu_s() - cpu}
        except Exception:
            reply = {"error": traceback.format_exc()}
        reply_to.write(json.dumps(reply) + "\n")
        reply_to.flush()


# ---- the machine's slow phases -----------------------------------------------------------
# For seconds at a time the host can slow this machine's two virtual CPUs: no process here
# shows it (other_cores stays near 0), one thread runs at full speed, and a two-thread step
# barely beats one thread, as if both virtual CPUs ran on one physical core's two hardware
# threads. Before each pair of blocks, a fixed two-thread probe checks that both cores
# compute; if not, the pair waits (within --max-wait). The probe must compete for what two
# hardware threads of a core share: sixteen independent chains of multiplies and adds per
# thread keep a core's floating-point units busy (one chain per thread, latency-bound, ran
# twice as fast on two threads during such phases too and missed them).
TWO_CORE_SPEEDUP = 1.6  # two threads on the probe at least this much faster than one


# The probe's ratio alone misses a phase that slows both virtual CPUs alike (one thread
# and two equally slower); its two-thread time is also compared with the fastest one seen
# in this run.
PROBE_SLOWDOWN = 1.4  # two-thread probe time at most this many times the fastest seen
_FASTEST_PROBE = []


def two_thread_speedup(iterations: int = 1_000_000) -> float:
    """How much faster the probe (16 independent chains of multiply-adds per thread, no
    memory traffic) runs on two threads than on one: about 2 when both cores compute.
    Returns 0 when the two-thread run took over PROBE_SLOWDOWN times the fastest one so
    far (the machine slower than it can be)."""
    import numba
    kernel = _probe_kernel()
    chains = np.zeros(2)
    kernel(10, chains)  # compiled once
    seconds = {}
    try:
        for threads in (1, 2):
            numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
            start = time.perf_counter()
            kernel(iterations, chains)
            seconds[threads] = time.perf_counter() - start
    finally:
        numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
    fastest = min(_FASTEST_PROBE + [seconds[2]])
    _FASTEST_PROBE[:] = [fastest]
    if seconds[2] > PROBE_SLOWDOWN * fastest:
        return 0.0
    return seconds[1] / seconds[2]


_PROBE = []


def _probe_kernel():
    if not _PROBE:
        from numba import njit, prange

        @njit(parallel=True)
        def sixteen_chains_of_multiply_adds(iterations, out):
            for chain in prange(out.size):
                a0 = a1 = a2 = a3 = a4 = a5 = a6 = a7 = 0.0
                b0 = b1 = b2 = b3 = b4 = b5 = b6 = b7 = 0.0
                for _ in range(iterations):
                    a0, a1, a2, a3 = a0 * 0.9 + 1.0, a1 * 0.8 + 1.0, a2 * 0.7 + 1.0, a3 * 0.6 + 1.0
                    a4, a5, a6, a7 = a4 * 0.5 + 1.0, a5 * 0.4 + 1.0, a6 * 0.3 + 1.0, a7 * 0.2 + 1.0
                    b0, b1, b2, b3 = b0 * 0.9 + 2.0, b1 * 0.8 + 2.0, b2 * 0.7 + 2.0, b3 * 0.6 + 2.0
                    b4, b5, b6, b7 = b4 * 0.5 + 2.0, b5 * 0.4 + 2.0, b6 * 0.3 + 2.0, b7 * 0.2 + 2.0
                out[chain] = (a0 + a1 + a2 + a3 + a4 + a5 + a6 + a7
                              + b0 + b1 + b2 + b3 + b4 + b5 + b6 + b7)
        _PROBE.append(sixteen_chains_of_multiply_adds)
    return _PROBE[0]


def wait_for_two_cores(max_wait: float) -> bool:
    """Probe until both cores compute (True), for at most `max_wait` seconds (False)."""
    deadline = time.perf_counter() + max_wait
    while True:
        if two_thread_speedup() >= TWO_CORE_SPEEDUP:
            return True
        if time.perf_counter() >= deadline:
            return False
        time.sleep(0.5)


def alternate(workers: dict, request: dict, images: int, timing: Timing, reps: int) -> dict:
    """Time `reps` pairs of blocks of the workers' steps, taking turns (one visit of a
    configuration); per framework, the images/s of each block, and each pair's ratio.
    Method's second point: alternating pairs, a pause before each block, and a pair that other
    processes disturbed (over `quiet_threshold` cores) measured again for up to `max_wait` s."""
    names = list(workers)
    calls, slowest = {}, 0.0
    for name, worker in workers.items():
        worker.ask(op="steps", calls=timing.warmup, **request)
        elapsed = worker.ask(op="steps", calls=1, **request)["seconds"]
        slowest = max(slowest, elapsed)
        calls[name] = max(1, math.ceil(timing.min_time / max(elapsed, 1e-6)))
    if slowest > timing.slow_step:
        reps = min(reps, math.ceil(timing.slow_reps / timing.visits))

    def block(name):
        time.sleep(timing.pause)
        load = common.OtherLoad().start()
        timed = workers[name].ask(op="steps", calls=calls[name], **request)
        return images * calls[name] / timed["seconds"], load.cores(timed["cpu_s"]) or 0.0

    samples = {name: [] for name in names}
    pair_ratios, others, retried, noisy, slow_phase = [], [], 0, 0, 0
    deadline = time.perf_counter() + timing.max_wait
    while len(others) < reps:
        if timing.max_wait > 0 and not wait_for_two_cores(0.0):
            slow_phase += 1
            wait_for_two_cores(max(0.0, deadline - time.perf_counter()))
        order = names if len(others) % 2 == 0 else names[::-1]
        pair = {name: block(name) for name in order}
        load = max(cores for _, cores in pair.values())
        if load > timing.quiet_threshold:
            if time.perf_counter() < deadline:
                retried += 1
                common.wait_for_quiet(max(0.0, deadline - time.perf_counter()),
                                      timing.quiet_threshold)
                continue
            noisy += 1
        for name, (rate, _) in pair.items():
            samples[name].append(rate)
        pair_ratios.append(pair["minivgg"][0] / pair["torch"][0])
        others.append(load)
    return {"samples": samples, "pair_ratios": pair_ratios, "others": others, "calls": calls,
            "retried_pairs": retried, "noisy_pairs": noisy, "slow_phase_waits": slow_phase}


def summarise(visits: list) -> dict:
    """A configuration's figures from its visits: per framework the median images/s of all
    its blocks; the ratio is the median of all pairs' ratios (method's first point)."""
    result = {}
    for name in visits[0]["samples"]:
        samples = [rate for visit in visits for rate in visit["samples"][name]]
        result[name] = {"median": statistics.median(samples), "samples": samples,
                        "calls_per_block": [visit["calls"][name] for visit in visits]}
    # the ratio within each pair: its two blocks run back to back, so a slow phase of the
    # machine that lasts several pairs touches both sides of the ratios it spans
    pair_ratios = [ratio for visit in visits for ratio in visit["pair_ratios"]]
    result.update(ratio=statistics.median(pair_ratios), pair_ratios=pair_ratios,
                  ratio_of_medians=result["minivgg"]["median"] / result["torch"]["median"],
                  pairs_per_visit=[len(visit["pair_ratios"]) for visit in visits],
                  other_cores=max(load for visit in visits for load in visit["others"]))
    for counter in ("retried_pairs", "noisy_pairs", "slow_phase_waits"):
        result[counter] = sum(visit[counter] for visit in visits)
    return result


def visit_share(pairs: int, visit: int, visits: int) -> int:
    """How many of a configuration's `pairs` the visit-th of `visits` visits takes."""
    return pairs // visits + (1 if visit < pairs % visits else 0)


# ---- peak memory, in a fresh child process per configuration --------------------------------

def _reset_peak_rss() -> bool:
    """Reset the kernel's RSS high-water mark (VmHWM) of this process; False where impossible."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def memory_child(framework: str, model_name: str, batch: int, steps: int) -> dict:
    """Run `steps` training steps of one framework and report its resident-memory peak above
    the baseline (the method's fourth point): VmHWM after resetting it, else ru_maxrss."""
    torch = None
    if framework == "torch":
        import torch
        torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
    # One step at batch 2 first: each library's one-off start-up (minivgg's compiled kernels
    # loading, PyTorch's oneDNN primitives) belongs to the baseline, not to training.
    warm = Case(model_name, 2, torch=torch)
    getattr(warm, f"{framework}_train")()
    del warm
    case = Case(model_name, batch, torch=torch)
    step = getattr(case, f"{framework}_train")
    if framework == "torch":  # only the twin trains; drop minivgg's copy of the weights
        del case.model, case.optimizer
    gc.collect()
    baseline = common.status_kib("VmRSS")
    if baseline is not None and _reset_peak_rss():
        method, peak_kib = "VmHWM", lambda: common.status_kib("VmHWM")
    else:
        method, peak_kib = "ru_maxrss", lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        baseline = peak_kib()
    for _ in range(steps):
        step()
    peak = peak_kib()
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


# ---- a whole run -------------------------------------------------------------------------------

def measure(args, argv: list) -> dict:
    """Every configuration of `args`, in one speed JSON."""
    started, loadavg_start = time.perf_counter(), list(os.getloadavg())
    commit = common.short_commit()  # what is measured: the tree as the workers import it now
    timing = Timing(**{f.name: getattr(args, f.name) for f in dataclasses.fields(Timing)
                       if "help" in f.metadata})
    workers = {name: Worker(name, args.threads) for name in ("minivgg", "torch")}
    try:
        info = {**workers["torch"].ask(op="info"), **workers["minivgg"].ask(op="info")}
        machine = {**run_record.machine(), "threads": args.threads, **info}
        print(f"{machine['cpu']}, {machine['cpu_count']} cores; threads: OpenBLAS "
              f"{machine['openblas_threads']}, torch {machine['torch_threads']}; load "
              f"{loadavg_start}")
        common.wait_for_quiet(args.max_wait, args.quiet_threshold)
        gemm = {**workers["minivgg"].ask(op="gemm", n=args.gemm_size, repeat=5),
                "torch": workers["torch"].ask(op="gemm", n=args.gemm_size, repeat=5)["torch"]}
        print(f"float32 GEMM {gemm['n']}x{gemm['n']}: NumPy {gemm['numpy']:.1f} GFLOP/s, "
              f"PyTorch {gemm['torch']:.1f} GFLOP/s")
        configurations = [(model_name, batch) for model_name in args.models
                          for batch in args.batch_sizes]
        visits = {key: {"train": [], "infer": []} for key in configurations}
        for visit in range(timing.visits):  # a slow phase of the machine meets one visit
            for model_name, batch in configurations:
                request = {"model": model_name, "batch": batch}
                for mode, pairs in (("train", timing.reps), ("infer", timing.infer_reps)):
                    share = visit_share(pairs, visit, timing.visits)
                    if share:
                        done = alternate(workers, {**request, "mode": mode}, batch, timing, share)
                        visits[model_name, batch][mode].append(done)
                        print(f"visit {visit + 1}: {model_name} b{batch} {mode} pair ratios "
                              + " ".join(f"{r:.2f}" for r in done["pair_ratios"]), flush=True)
        results = [measure_row(model_name, batch, visits[model_name, batch], not args.no_memory)
                   for model_name, batch in configurations]
    finally:
        for worker in workers.values():
            worker.close()
    return {"meta": {"command": " ".join(["python benchmarks/speed.py", *map(shlex.quote, argv)]),
                     "date": _dt.datetime.now().isoformat(timespec="seconds"), "commit": commit,
                     "timing": dataclasses.asdict(timing), "loadavg_start": loadavg_start,
                     "loadavg_end": list(os.getloadavg()), "wall_s": time.perf_counter() - started},
            "machine": machine, "gemm": gemm, "ceiling_gflops": max(gemm["numpy"], gemm["torch"]),
            "results": results}


def measure_row(model_name: str, batch: int, visits: dict, memory: bool) -> dict:
    """One model at one batch size: the figures of its training and inference visits, then
    its peak memory."""
    model = build(model_name, seed=0)
    flops = count_flops(model, input_shape(model_name))
    train, infer = summarise(visits["train"]), summarise(visits["infer"])
    row = {"model": model_name, "dataset": MODELS[model_name].default_dataset,
           "params": model.num_parameters(), "batch": batch,
           "target": training_target(model_name, batch),
           "infer_target": inference_target(model_name, batch),
           "flops": {"forward": flops["forward"], "train": flops["train"]},
           "train": train, "infer": infer,
           "memory": measure_memory(model_name, batch) if memory else None,
           "loadavg": list(os.getloadavg())}
    m = row["memory"]
    print(f"{model_name:16s} b{batch:<4d} train {train['minivgg']['median']:8.0f} vs "
          f"{train['torch']['median']:8.0f} img/s ({train['ratio']:.2f})  infer "
          f"{infer['minivgg']['median']:8.0f} vs {infer['torch']['median']:8.0f} "
          f"({infer['ratio']:.2f})"
          + (f"  mem {m['minivgg']['delta_mib']:.0f}/{m['torch']['delta_mib']:.0f} MiB "
             f"({m['ratio']:.2f})" if m else "")
          + f"  other load {_load(train)} / {_load(infer)}, retried "
            f"{train['retried_pairs'] + infer['retried_pairs']}, slow-phase waits "
            f"{train['slow_phase_waits'] + infer['slow_phase_waits']}", flush=True)
    return row


# ---- the BENCHMARKS.md section ---------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Target:
    """One of a result row's targets: its ratio, the target (None: not judged), which way is good."""
    name: str
    ratio: Callable[[dict], float]
    target: Callable[[dict], float | None]
    higher_is_better: bool = True

    def judged(self, row) -> bool:
        return self.target(row) is not None

    def missed(self, row) -> bool:
        ratio, target = self.ratio(row), self.target(row)
        return ratio < target if self.higher_is_better else ratio > target

    def ratio_text(self, row) -> str:
        """Two decimals, three where two would print the target itself (1.502 misses 1.5)."""
        value, target = self.ratio(row), self.target(row)
        text = f"{value:.2f}"
        if target is not None and text == f"{target:.2f}" and value != target:
            text = f"{value:.3f}"
        return text

    def mark(self, row) -> str:
        if not self.judged(row):
            return "–"
        sign = "≥" if self.higher_is_better else "≤"
        return f"{'✗' if self.missed(row) else '✓'} {sign} {self.target(row):g}"


TRAINING = Target("training", lambda r: r["train"]["ratio"], lambda r: r["target"])
INFERENCE = Target("inference", lambda r: r["infer"]["ratio"], lambda r: r.get("infer_target"))
MEMORY = Target("memory", lambda r: r["memory"]["ratio"],
                lambda r: MEMORY_TARGET if r.get("memory") else None, higher_is_better=False)
TARGETS = (TRAINING, INFERENCE, MEMORY)


def _load(timed: dict) -> str:
    """Other processes' cores during the kept blocks (the most of any pair), noisy pairs flagged."""
    cores = timed.get("other_cores")
    text = "?" if cores is None else f"{cores:.2f}"
    if timed.get("noisy_pairs"):
        text += f" ({timed['noisy_pairs']} noisy)"
    return text


def _row(*cells) -> str:
    return "| " + " | ".join(map(str, cells)) + " |"


def training_table(results: list, ceiling: float) -> list:
    lines = ["### Training step (forward, cross-entropy, backward, SGD momentum step)", "",
             "| model | params | batch | minivgg img/s | PyTorch img/s | ratio | target | "
             "minivgg GFLOP/s (% of ceiling) | PyTorch GFLOP/s (% of ceiling) | other load |",
             "|---|---:|---:|---:|---:|---:|:---:|---:|---:|---:|"]
    for r in results:
        t = r["train"]
        gflops = [r["flops"]["train"] * t[side]["median"] / 1e9 for side in ("minivgg", "torch")]
        lines.append(_row(r["model"], f"{r['params']:,}", r["batch"],
                          f"{t['minivgg']['median']:,.0f}", f"{t['torch']['median']:,.0f}",
                          TRAINING.ratio_text(r), TRAINING.mark(r),
                          *(f"{g:.1f} ({100 * g / ceiling:.0f}%)" for g in gflops), _load(t)))
    return lines


def inference_table(results: list) -> list:
    lines = ["### Inference (eval mode, no graph)", "",
             "| model | batch | minivgg img/s | PyTorch img/s | ratio | target | other load |",
             "|---|---:|---:|---:|---:|:---:|---:|"]
    for r in results:
        i = r["infer"]
        lines.append(_row(r["model"], r["batch"], f"{i['minivgg']['median']:,.0f}",
                          f"{i['torch']['median']:,.0f}", INFERENCE.ratio_text(r),
                          INFERENCE.mark(r), _load(i)))
    return lines


def memory_table(results: list) -> list:
    lines = ["### Peak memory of training steps (MiB above the set-up baseline)", "",
             "| model | batch | minivgg MiB | PyTorch MiB | ratio | target |",
             "|---|---:|---:|---:|---:|:---:|"]
    for r in results:
        m = r["memory"]
        lines.append(_row(r["model"], r["batch"], f"{m['minivgg']['delta_mib']:.1f}",
                          f"{m['torch']['delta_mib']:.1f}", MEMORY.ratio_text(r), MEMORY.mark(r)))
    return lines


def target_summary(data: dict) -> list:
    """One line per model: met/missed counts and the missed configurations."""
    lines, met, checked = [], 0, 0
    by_model = {}
    for r in data["results"]:
        by_model.setdefault(r["model"], []).append(r)
    for model, rows in by_model.items():
        parts = []
        for target in TARGETS:
            judged = [r for r in rows if target.judged(r)]
            if not judged:
                continue
            missed = [r for r in judged if target.missed(r)]
            checked += len(judged)
            met += len(judged) - len(missed)
            sign = "≥" if target.higher_is_better else "≤"
            parts.append(f"{target.name} {sign} {target.target(judged[0]):g}: "
                         + (", ".join(f"✗ {target.ratio_text(r)} at batch {r['batch']}"
                                      for r in missed) if missed else "✓ at every batch"))
        lines.append(f"- {model}: " + "; ".join(parts))
    return [f"{met} of {checked} targets met.", "", *lines]


def render_section(data: dict, time_to_accuracy: list = (), appendices: list = ()) -> str:
    """The markdown between the speed markers, from a speed JSON; `time_to_accuracy` (before
    the method) and `appendices` (after it) are parts rendered elsewhere, each a list of lines."""
    meta, machine, gemm = data["meta"], data["machine"], data["gemm"]
    ceiling = data["ceiling_gflops"]
    lines = ["<!-- generated by `python benchmarks/speed.py` (or `--render-only`) from "
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
    lines += [*training_table(results, ceiling), "", *inference_table(results)]
    with_memory = [r for r in results if r.get("memory")]
    if with_memory:
        lines += ["", *memory_table(with_memory)]
    lines += ["", "### Targets", "", *target_summary(data)]
    for part in time_to_accuracy:
        lines += ["", *part]
    lines += ["", *method(meta["timing"])]
    for part in appendices:
        lines += ["", *part]
    return "\n" + "\n".join(lines) + "\n"


def method(timing: dict) -> list:
    """How the figures are made, with the run's timing settings."""
    return ["### Method", "",
            "- Same weights (`minivgg.interop.to_torch`), same random batch (standard normal "
            "images, random labels), same optimizer (SGD, lr 0.01, momentum 0.9), default "
            "`zero_grad` on both sides. Each framework runs in a worker process of its own "
            "and the two take turns (AB, BA, AB, ...), each block of steps lasting at least "
            "`--min-time` seconds after a warm-up; the figures are medians over "
            f"{timing['reps']} pairs of training blocks and {timing['infer_reps']} of inference "
            f"blocks (at most {math.ceil(timing['slow_reps'] / timing.get('visits', 1))} per "
            f"sweep for configurations whose step takes over {timing['slow_step']} s), taken "
            f"in {timing.get('visits', 1)} sweeps over all "
            "configurations, each sweep taking its share of each configuration's pairs, so "
            "that a slow phase of the machine lasting minutes meets one share, fewer than half "
            "of the pairs. Ratio = the median over the pairs of minivgg / "
            "PyTorch within the pair (the img/s columns are each framework's median): the two "
            "blocks of a pair run back to back, so a slow phase of the machine (below) that "
            "spans several pairs weighs on both sides of their ratios, where a ratio of the "
            "two medians could pair one side's slow blocks with the other's fast ones.",
            "- The two cores are shared: when another process takes one core, both libraries "
            "slow down several-fold (their 2-thread pools wait on each other), so each block "
            "records the cores other processes used during it (from /proc/stat minus this "
            "timed worker's CPU time) and a pair with more than `--quiet-threshold` cores of "
            "other load is measured again (up to `--max-wait` seconds per configuration; "
            "pairs kept after that are counted as noisy). `other load` is the most any kept "
            "pair saw. Each block starts after a short pause (`--pause`) so that one "
            "worker's idle BLAS or OpenMP threads, which spin for a while after their last "
            "call, do not run into the other worker's block.",
            "- The host can also slow the two virtual CPUs for seconds at a time (two "
            "threads then barely beat one), which no process here shows. Before each pair, "
            "a fixed two-thread probe (16 independent chains of multiply-adds per thread, "
            "enough to keep a core's floating-point units busy) must run at least "
            f"{TWO_CORE_SPEEDUP:g}x faster than on one thread, and within {PROBE_SLOWDOWN:g}x "
            "of its fastest two-thread time in the run; until it does, the pair waits "
            "(within `--max-wait`).",
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


def section_from_files(json_path: Path) -> str:
    """The section for a speed JSON and what lies beside it: time_to_accuracy.json (and its
    figure), the profile_*.json of profile_step.py, and analysis.md, hand-written."""
    import profile_step
    import time_to_accuracy

    data = json.loads(Path(json_path).read_text())
    folder = Path(json_path).parent
    tta_path, analysis_path = folder / "time_to_accuracy.json", folder / "analysis.md"
    tta = []
    if tta_path.exists():
        tta_json = json.loads(tta_path.read_text())
        if tta_path.with_suffix(".png").exists():
            tta_json["figure"] = common.relative(tta_path.with_suffix(".png"))
        tta = [time_to_accuracy.render(tta_json)]
    appendices = [profile_step.render_profile(json.loads(p.read_text()))
                  for p in sorted(folder.glob("profile_*.json"))]
    if analysis_path.exists():
        appendices.append([analysis_path.read_text().strip()])
    return render_section(data, tta, appendices)


# ---- main ------------------------------------------------------------------------------------

def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", nargs="+", choices=list(MODELS), default=list(MODELS))
    p.add_argument("--batch-sizes", nargs="+", type=int, default=DEFAULT_BATCH_SIZES,
                   help=f"default {' '.join(map(str, DEFAULT_BATCH_SIZES))}")
    for field in dataclasses.fields(Timing):
        if "help" in field.metadata:
            p.add_argument("--" + field.name.replace("_", "-"), type=type(field.default),
                           default=field.default,
                           help=f"{field.metadata['help']} (default {field.default:g})")
    p.add_argument("--threads", type=int, default=2, help="threads on each side (default 2)")
    p.add_argument("--gemm-size", type=int, default=2048, help="matrix size of the GEMM ceiling")
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory children")
    common.add_section_options(p, DEFAULT_JSON)
    p.add_argument("--no-markdown", action="store_true", help="do not touch the markdown file")
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
    section = common.MarkedSection(SECTION, args.markdown)
    if args.check:
        return section.check(section_from_files(args.json), "python benchmarks/speed.py --render-only")
    if not args.render_only:
        data = measure(args, argv)
        common.write_json(args.json, data)
        print(f"wrote {args.json}")
        print("\n".join(target_summary(data)))
        if args.no_markdown:
            return 0
    section.write(section_from_files(args.json))
    print(f"regenerated the speed section of {args.markdown} from {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
