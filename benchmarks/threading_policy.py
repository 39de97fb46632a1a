"""Training-step time of minivgg under each candidate threading policy, alternated.

A policy is a set of environment variables for the child process: Numba's threading layer
(GNU OpenMP or its own workqueue), OpenMP's wait policy, and whether OpenBLAS keeps its
threads (MINIVGG_OPENBLAS=keep) or minivgg sets it to one and splits products itself. Each
child times `--steps` training steps of one model (speed.py's step) after a warm-up and
reports the median wall time and the median CPU time of all its threads per step: on two
cores, a pool that spins while the other works shows up as CPU time above wall time. The
policies take turns, `--rounds` times; medians over rounds are printed, written to
benchmarks/results/speed/threading_policy.json and rendered, with cold_start.py's figures,
into BENCHMARKS.md ("Threading policy and start-up"). Usage:

    python benchmarks/threading_policy.py mnist_5k 128 [--rounds 5]
    python benchmarks/threading_policy.py --render-only    # or --check: is the section stale?
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

import common

HERE = common.ROOT / "benchmarks"
RESULT = HERE / "results" / "speed" / "threading_policy.json"
COLD_START = HERE / "results" / "speed" / "cold_start.json"   # written by cold_start.py

KEEP_BLAS = {"MINIVGG_OPENBLAS": "keep"}
POLICIES = {
    "workqueue, OpenBLAS on every thread": {"NUMBA_THREADING_LAYER": "workqueue", **KEEP_BLAS},
    "omp, libgomp's spin, OpenBLAS on every thread": {
        "NUMBA_THREADING_LAYER": "omp", "GOMP_SPINCOUNT": "300000", **KEEP_BLAS},
    "workqueue, OpenBLAS single-threaded": {"NUMBA_THREADING_LAYER": "workqueue"},
    "omp, libgomp's spin, OpenBLAS single-threaded": {"NUMBA_THREADING_LAYER": "omp",
                                                      "GOMP_SPINCOUNT": "300000"},
    "omp, OMP_WAIT_POLICY=passive, OpenBLAS single-threaded": {
        "NUMBA_THREADING_LAYER": "omp", "OMP_WAIT_POLICY": "passive"},
    "omp, GOMP_SPINCOUNT=20000, OpenBLAS single-threaded (minivgg's policy)": {},
}

POLICY_VARIABLES = {name for variables in POLICIES.values() for name in variables}

CHILD = r"""
import json, statistics, sys, time
sys.path.insert(0, sys.argv[1]); sys.path.insert(0, sys.argv[2])
from speed import Case
case = Case(sys.argv[3], int(sys.argv[4]))
for _ in range(3):
    case.minivgg_train()
wall, cpu = [], []
for _ in range(int(sys.argv[5])):
    w, c = time.perf_counter(), time.process_time()
    case.minivgg_train()
    wall.append(time.perf_counter() - w); cpu.append(time.process_time() - c)
print(json.dumps({"wall": 1e3 * statistics.median(wall), "cpu": 1e3 * statistics.median(cpu)}))
"""


def measure(model: str, batch: int, rounds: int, steps: int, threads: int) -> dict:
    results = {name: [] for name in POLICIES}
    for round_ in range(rounds):
        for name, variables in POLICIES.items():
            env = {k: v for k, v in os.environ.items() if k not in POLICY_VARIABLES}
            env.update(OPENBLAS_NUM_THREADS=str(threads), NUMBA_NUM_THREADS=str(threads),
                       **variables)
            done = subprocess.run([sys.executable, "-c", CHILD, str(common.ROOT), str(HERE), model,
                                   str(batch), str(steps)],
                                  capture_output=True, text=True, env=env, check=True)
            results[name].append(json.loads(done.stdout.strip().splitlines()[-1]))
        print(f"round {round_ + 1}: " + "; ".join(
            f"{n}: {r[-1]['wall']:.1f} ms wall, {r[-1]['cpu']:.1f} ms CPU"
            for n, r in results.items()), flush=True)
    print(f"{model} batch {batch}, {threads} threads, medians of {rounds} rounds:")
    medians = {}
    for name, per_round in results.items():
        medians[name] = {"wall_ms": statistics.median(r["wall"] for r in per_round),
                         "cpu_ms": statistics.median(r["cpu"] for r in per_round)}
        print(f"  {name:<32} {medians[name]['wall_ms']:7.1f} ms wall "
              f"{medians[name]['cpu_ms']:7.1f} ms CPU per step")
    return {"command": f"python benchmarks/threading_policy.py {model} {batch} --rounds {rounds}",
            "date": datetime.datetime.now().isoformat(timespec="seconds"),
            "commit": common.short_commit(), "model": model, "batch": batch, "threads": threads,
            "rounds": results, "medians": medians, "load_average_at_end": os.getloadavg()[0],
            "cores": os.cpu_count()}


def render(result: Path = RESULT, cold_start: Path = COLD_START) -> str:
    """BENCHMARKS.md's "Threading policy and start-up" part, from the two JSON files."""
    lines = ["", "### Threading policy and start-up", ""]
    if result.is_file():
        r = json.loads(result.read_text())
        lines += [f"Produced by `{r['command']}` on {r['date']} (commit {r['commit']}), "
                  f"{r['cores']} cores, load average {r['load_average_at_end']:.1f} from other "
                  f"jobs at the end: {r['model']} training step at batch {r['batch']}, "
                  f"{r['threads']} threads, median over rounds.", "",
                  "| threading policy | wall ms/step | CPU ms/step (all threads) |",
                  "|---|---:|---:|"]
        lines += [f"| {name} | {m['wall_ms']:.1f} | {m['cpu_ms']:.1f} |"
                  for name, m in r["medians"].items()]
        lines.append("")
    if cold_start.is_file():
        c = json.loads(cold_start.read_text())
        lines += [f"Produced by `{c['command']}` on {c['date']} (commit {c['commit']}), "
                  f"{c['cores']} cores, load average {c['load_average_at_end']:.1f} at the end: "
                  f"`minivgg train --recipe {c['recipe']}` from launch to the end of its first "
                  f"training step, median of {len(c['cold_s'])}: cold (empty kernel cache) "
                  f"{c['cold_median_s']:.1f} s, warm {c['warm_median_s']:.1f} s "
                  f"(targets: 30 s and 3 s).", ""]
    return "\n" + "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("model", nargs="?", default="mnist_5k")
    p.add_argument("batch", type=int, nargs="?", default=128)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", type=Path, default=RESULT)
    p.add_argument("--markdown", type=Path, default=common.BENCHMARKS_MD)
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--render-only", action="store_true", help="rewrite the section from the JSON")
    mode.add_argument("--check", action="store_true", help="exit 1 if the section is stale")
    args = p.parse_args(argv)
    section = common.MarkedSection("threads-startup", args.markdown)
    if args.check:
        return section.check(render(args.json), "python benchmarks/threading_policy.py --render-only")
    if not args.render_only:
        result = measure(args.model, args.batch, args.rounds, args.steps, args.threads)
        args.json.write_text(json.dumps(result, indent=1) + "\n")
    section.write(render(args.json))
    return 0


if __name__ == "__main__":
    sys.exit(main())
