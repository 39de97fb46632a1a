"""Training-step time of minivgg under each candidate threading policy, alternated.

A policy is a set of environment variables for the child process: Numba's threading layer
(GNU OpenMP or its own workqueue), OpenMP's wait policy, OpenBLAS's thread count. Each
child times `--steps` training steps of one model (speed.py's step) after a warm-up and
reports the median wall time and the median CPU time of all its threads per step: on two
cores, a pool that spins while the other works shows up as CPU time above wall time. The
policies take turns, `--rounds` times; medians over rounds are printed, written to
benchmarks/results/speed/threading_policy.json and rendered, with cold_start.py's figures,
into BENCHMARKS.md ("Threading policy and start-up"). Usage:

    python benchmarks/threading_policy.py mnist_5k 128 [--rounds 5]
    python benchmarks/threading_policy.py --render-only
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

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULT = HERE / "results" / "speed" / "threading_policy.json"
COLD_START = HERE / "results" / "speed" / "cold_start.json"
BENCHMARKS = ROOT / "BENCHMARKS.md"
BEGIN, END = "<!-- threads-startup:begin -->", "<!-- threads-startup:end -->"

POLICIES = {
    "omp (Numba's default here)": {"NUMBA_THREADING_LAYER": "omp"},
    "omp, OMP_WAIT_POLICY=passive": {"NUMBA_THREADING_LAYER": "omp", "OMP_WAIT_POLICY": "passive"},
    "workqueue": {"NUMBA_THREADING_LAYER": "workqueue"},
}

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


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("model", nargs="?", default="mnist_5k")
    p.add_argument("batch", type=int, nargs="?", default=128)
    p.add_argument("--render-only", action="store_true")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    if args.render_only:
        render()
        return 0
    results = {name: [] for name in POLICIES}
    for round_ in range(args.rounds):
        for name, variables in POLICIES.items():
            env = dict(os.environ, OPENBLAS_NUM_THREADS=str(args.threads),
                       NUMBA_NUM_THREADS=str(args.threads), **variables)
            done = subprocess.run([sys.executable, "-c", CHILD, str(ROOT), str(HERE), args.model,
                                   str(args.batch), str(args.steps)],
                                  capture_output=True, text=True, env=env, check=True)
            results[name].append(json.loads(done.stdout.strip().splitlines()[-1]))
        print(f"round {round_ + 1}: " + "; ".join(
            f"{n}: {r[-1]['wall']:.1f} ms wall, {r[-1]['cpu']:.1f} ms CPU"
            for n, r in results.items()), flush=True)
    print(f"{args.model} batch {args.batch}, {args.threads} threads, medians of {args.rounds} rounds:")
    medians = {}
    for name, rounds in results.items():
        medians[name] = {"wall_ms": statistics.median(r["wall"] for r in rounds),
                         "cpu_ms": statistics.median(r["cpu"] for r in rounds)}
        print(f"  {name:<32} {medians[name]['wall_ms']:7.1f} ms wall "
              f"{medians[name]['cpu_ms']:7.1f} ms CPU per step")
    command = f"python benchmarks/threading_policy.py {args.model} {args.batch} --rounds {args.rounds}"
    RESULT.write_text(json.dumps({
        "command": command, "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "commit": subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                                 capture_output=True, text=True).stdout.strip(),
        "model": args.model, "batch": args.batch, "threads": args.threads, "rounds": results,
        "medians": medians, "load_average_at_end": os.getloadavg()[0],
        "cores": os.cpu_count()}, indent=1) + "\n")
    render()
    return 0


def render() -> None:
    """Write BENCHMARKS.md's "Threading policy and start-up" part from the two JSON files."""
    lines = [BEGIN, "", "### Threading policy and start-up", ""]
    if RESULT.is_file():
        r = json.loads(RESULT.read_text())
        lines += [f"Produced by `{r['command']}` on {r['date']} (commit {r['commit']}), "
                  f"{r['cores']} cores, load average {r['load_average_at_end']:.1f} from other "
                  f"jobs at the end: {r['model']} training step at batch {r['batch']}, "
                  f"{r['threads']} threads, median over rounds.", "",
                  "| Numba threading policy | wall ms/step | CPU ms/step (all threads) |",
                  "|---|---:|---:|"]
        lines += [f"| {name} | {m['wall_ms']:.1f} | {m['cpu_ms']:.1f} |"
                  for name, m in r["medians"].items()]
        lines.append("")
    if COLD_START.is_file():
        c = json.loads(COLD_START.read_text())
        lines += [f"Produced by `{c['command']}` on {c['date']} (commit {c['commit']}), "
                  f"{c['cores']} cores, load average {c['load_average_at_end']:.1f} at the end: "
                  f"`minivgg train --recipe {c['recipe']}` from launch to the end of its first "
                  f"training step, median of {len(c['cold_s'])}: cold (empty kernel cache) "
                  f"{c['cold_median_s']:.1f} s, warm {c['warm_median_s']:.1f} s "
                  f"(targets: 30 s and 3 s).", ""]
    lines.append(END)
    text = BENCHMARKS.read_text()
    section = "\n".join(lines)
    if BEGIN in text:
        head, rest = text.split(BEGIN, 1)
        text = head + section + rest.split(END, 1)[1]
    else:
        # after the section speed.py generates (which it rewrites whole)
        at = text.index("<!-- speed:end -->") + len("<!-- speed:end -->")
        text = text[:at] + "\n\n" + section + text[at:]
    BENCHMARKS.write_text(text)


if __name__ == "__main__":
    sys.exit(main())
