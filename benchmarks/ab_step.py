"""Before/after timing of one training step (or inference): two versions of minivgg, alternated.

    python benchmarks/ab_step.py minivggnet 64                   # HEAD against the working tree
    python benchmarks/ab_step.py mnist_8k_a 512 --a HEAD~3 --b HEAD --rounds 9
    python benchmarks/ab_step.py mnist_5k 128 --b /tmp/experiment     # a copy with a change
    python benchmarks/ab_step.py mnist_5k 128 --threads 1 --clock cpu  # on a busy machine
    python benchmarks/ab_step.py mnist_5k 128 --infer                   # a forward pass instead

Each version runs in its own child process (a git worktree under the system temp folder
for a revision, the checkout itself for the working tree), so both get a fresh allocator
and BLAS. The children alternate A, B, A, B, ... and each reports the median ms/step of
its block; the medians over rounds and their ratio are printed. The step is the one
speed.py times (forward, backward, SGD update on random data). Run it on a quiet machine:
other processes slow one side's blocks and not the other's.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
WORKING_TREE = "."

CHILD = r"""
import json, statistics, sys, time
tree, model, batch, steps, warmup = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
clock = time.process_time if sys.argv[7] == "cpu" else time.perf_counter
sys.path.insert(0, tree)
import minivgg  # this version's package; speed.py below then reuses it
sys.path.insert(0, sys.argv[6])
from speed import Case
case = Case(model, batch)
case.set_training(sys.argv[8] != "infer")  # inference in eval mode, as speed.py times it
step = case.minivgg_infer if sys.argv[8] == "infer" else case.minivgg_train
for _ in range(warmup):
    step()
times = []
for _ in range(steps):
    start = clock()
    step()
    times.append(clock() - start)
print(json.dumps({"ms": 1000 * statistics.median(times), "package": minivgg.__file__}))
"""


def tree_for(rev: str) -> Path:
    """The checkout for the working tree, a directory holding a minivgg package as it is,
    else a detached worktree at `rev` (made once)."""
    if rev == WORKING_TREE:
        return ROOT
    if (Path(rev) / "minivgg" / "__init__.py").is_file():
        return Path(rev).resolve()
    sha = subprocess.run(["git", "rev-parse", "--verify", rev + "^{commit}"], cwd=ROOT,
                         capture_output=True, text=True)
    if sha.returncode != 0:
        raise SystemExit(f"ab_step.py: {rev!r} is not a revision of this repository "
                         f"({sha.stderr.strip()}); give a commit, branch or '.' for the working tree")
    path = Path(tempfile.gettempdir()) / f"minivgg-ab-{sha.stdout.strip()[:12]}"
    if not (path / "minivgg").is_dir():
        subprocess.run(["git", "worktree", "add", "--detach", str(path), sha.stdout.strip()],
                       cwd=ROOT, check=True, capture_output=True)
    return path


def time_block(tree: Path, args) -> float:
    env = dict(os.environ, OPENBLAS_NUM_THREADS=str(args.threads),
               OMP_NUM_THREADS=str(args.threads), NUMBA_NUM_THREADS=str(args.threads))
    done = subprocess.run([sys.executable, "-c", CHILD, str(tree), args.model, str(args.batch),
                           str(args.steps), str(args.warmup), str(HERE), args.clock,
                           "infer" if args.infer else "train"],
                          capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise SystemExit(f"ab_step.py: the child for {tree} failed:\n{done.stderr.strip()}")
    return json.loads(done.stdout.strip().splitlines()[-1])["ms"]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("model")
    p.add_argument("batch", type=int)
    p.add_argument("--a", default="HEAD", help="revision A (default HEAD; '.' = the working tree; or a directory "
                   "holding a minivgg package)")
    p.add_argument("--b", default=WORKING_TREE, help="revision B (default: the working tree)")
    p.add_argument("--rounds", type=int, default=5, help="A/B block pairs (default 5)")
    p.add_argument("--steps", type=int, default=10, help="timed steps per block (default 10)")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps per block (default 3)")
    p.add_argument("--threads", type=int, default=2, help="BLAS and Numba threads (default 2)")
    p.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                   help="wall: elapsed time (default); cpu: the process's CPU time, all threads "
                        "summed, which other processes on a busy machine disturb far less "
                        "(with --threads 1 it is the step time a quiet machine would show)")
    p.add_argument("--infer", action="store_true",
                   help="time inference (speed.py's forward pass in eval mode) instead of a "
                        "training step")
    args = p.parse_args(argv)
    trees = {"A": tree_for(args.a), "B": tree_for(args.b)}
    results = {"A": [], "B": []}
    for round_ in range(args.rounds):
        for side in "AB":
            results[side].append(time_block(trees[side], args))
        print(f"round {round_ + 1}: A {results['A'][-1]:.2f} ms  B {results['B'][-1]:.2f} ms",
              flush=True)
    a, b = statistics.median(results["A"]), statistics.median(results["B"])
    what = "inference" if args.infer else "training"
    print(f"{args.model} {what} batch {args.batch}, {args.threads} threads: A ({args.a}) {a:.2f} ms/step, "
          f"B ({args.b}) {b:.2f} ms/step, B/A time {b / a:.3f} (speed-up {a / b:.2f}x)"
          + ("; process CPU time" if args.clock == "cpu" else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
