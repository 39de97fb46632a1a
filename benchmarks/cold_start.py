"""Time from launching `python -m minivgg train` to the end of its first training step,
with an empty kernel cache (cold: what the first run after `pip install` pays, compiling
every kernel it uses) and with the cache that run left (warm).

Each run is a fresh process with NUMBA_CACHE_DIR pointing at the round's cache directory;
its first logged iteration line marks the end of the first step. Cold and warm runs
alternate, `--rounds` times; medians are printed and written to
benchmarks/results/speed/cold_start.json. Needs MINIVGG_DATA (or the dataset downloaded).

    python benchmarks/cold_start.py [--recipe mnist_5k] [--rounds 3]
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULT = HERE / "results" / "speed" / "cold_start.json"
FIRST_STEP = re.compile(r"^\s*0/\d+\s+loss")


def time_to_first_step(recipe: str, cache: Path, out: Path) -> float:
    env = dict(os.environ, NUMBA_CACHE_DIR=str(cache), PYTHONPATH=str(ROOT))
    command = [sys.executable, "-m", "minivgg", "train", "--recipe", recipe, "--iters", "2",
               "--log-every", "1", "--no-progress", "--out", str(out)]
    start = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True, env=env, cwd=ROOT)
    seconds = None
    for line in process.stdout:
        if seconds is None and FIRST_STEP.match(line):
            seconds = time.perf_counter() - start
    if process.wait() != 0 or seconds is None:
        raise SystemExit(f"cold_start.py: {' '.join(command)} failed or logged no first step")
    return seconds


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--recipe", default="mnist_5k")
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args(argv)
    cold, warm = [], []
    with tempfile.TemporaryDirectory(prefix="minivgg-cold-start-") as scratch:
        for round_ in range(args.rounds):
            cache = Path(scratch) / f"cache{round_}"
            cold.append(time_to_first_step(args.recipe, cache, Path(scratch) / "runs"))
            warm.append(time_to_first_step(args.recipe, cache, Path(scratch) / "runs"))
            shutil.rmtree(cache)
            print(f"round {round_ + 1}: cold {cold[-1]:.1f} s, warm {warm[-1]:.1f} s", flush=True)
    result = {"command": "python benchmarks/cold_start.py"
              + (f" --recipe {args.recipe}" if args.recipe != "mnist_5k" else "")
              + (f" --rounds {args.rounds}" if args.rounds != 3 else ""),
              "date": datetime.datetime.now().isoformat(timespec="seconds"),
              "commit": subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                                       capture_output=True, text=True).stdout.strip(),
              "recipe": args.recipe, "cold_s": cold, "warm_s": warm,
              "cold_median_s": statistics.median(cold), "warm_median_s": statistics.median(warm),
              "load_average_at_end": os.getloadavg()[0], "cores": os.cpu_count()}
    RESULT.parent.mkdir(parents=True, exist_ok=True)
    RESULT.write_text(json.dumps(result, indent=1) + "\n")
    print(f"{args.recipe}: time to the end of the first training step, median of {args.rounds}: "
          f"cold {result['cold_median_s']:.1f} s, warm {result['warm_median_s']:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
