"""Accuracy benchmarks: train the published recipes (and ours) on the real datasets, keep one
run record (minivgg.run_record) per run, and regenerate the accuracy section of BENCHMARKS.md
from those files alone.

    python benchmarks/accuracy.py run NAME... [--seeds 0 1 2] [--batch-size B ...]
                                  [--set field=value ...] [--out-dir DIR] [--runs-dir DIR]
    python benchmarks/accuracy.py table      # rewrite the section between the accuracy markers
    python benchmarks/accuracy.py check      # exit 1 if the committed section is stale
    python benchmarks/accuracy.py figures    # compare figures per group, from the JSON files

Datasets are read from $MINIVGG_DATA (or --data-dir). Each run writes
benchmarks/results/accuracy/<recipe>[-b<batch>]-s<seed>.json (-b only when the batch size is
not the recipe's own; runs changed with --set get an extra -x-<changes> part and are listed
apart, never counted against a target). How rows are judged: BENCHMARKS.md, accuracy section.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import re
import shlex
import sys
from pathlib import Path

import common
from accuracy_render import RESULTS_DIR, SECTION, render_section, write_figures, write_table
from accuracy_targets import MATCHING_FIELDS, SCRIPT
from minivgg.models import RECIPES, Recipe, get_recipe
from minivgg.run_record import RunRecord, git_state, recipe_changes
from minivgg.train import TrainingInterrupted


# ---- one run -> one JSON -------------------------------------------------------------------------
def _slug(changes: dict) -> str:
    text = "_".join(f"{k}{json.dumps(v, separators=(',', ':'))}" for k, v in sorted(changes.items()))
    slug = re.sub(r"[^A-Za-z0-9._]+", "", text)
    if len(slug) <= 60:
        return slug
    # cut, with a digest of the whole so that changes differing only after the cut stay apart
    return slug[:51] + "." + hashlib.sha1(text.encode()).hexdigest()[:8]


def result_name(recipe: Recipe) -> str:
    """<recipe>[-b<batch>]-s<seed>[-x-<other changes>].json"""
    changes = recipe_changes(recipe)
    name = recipe.name
    if "batch_size" in changes:
        name += f"-b{recipe.batch_size}"
    name += f"-s{recipe.seed}"
    other = {k: v for k, v in changes.items() if k not in MATCHING_FIELDS}
    if other:
        name += f"-x-{_slug(other)}"
    return name + ".json"


def run_one(recipe: Recipe, *, out_dir: Path, runs_dir: Path, data_dir, progress, command: str,
            git: dict | None = None) -> Path:
    """Train `recipe` (minivgg.experiment.run_recipe) and keep its run record, with the command
    and `git` (git_state() as the command started: the code it imported) in it."""
    from minivgg.experiment import TrainingDiverged, run_recipe

    record = RunRecord.begin(recipe)
    try:
        result = run_recipe(recipe, data_dir=data_dir, out=runs_dir, progress=progress)
    except TrainingDiverged as err:
        record.diverged(str(err))   # a diverged seed is a result too: it counts against the target
    else:
        record = RunRecord.read(result.run_dir / "results.json")
        record.run_dir = common.relative(result.run_dir)
    record.command = command
    if git is not None:
        record.git_commit, record.git_dirty = git["git_commit"], git["git_dirty"]
    path = out_dir / result_name(recipe)
    out_dir.mkdir(parents=True, exist_ok=True)
    record.write(path)
    print(f"wrote {common.relative(path)}: final test accuracy {record.final_test_acc}", flush=True)
    return path


def make_recipe(name: str, seed: int, batch_size: int | None, changes: dict) -> Recipe:
    return get_recipe(name).override(seed=seed, batch_size=batch_size).with_changes(**changes)


# ---- command line ----------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="benchmarks/accuracy.py", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="train recipes and write one JSON per (recipe, batch size, seed)")
    run.add_argument("names", nargs="+", metavar="NAME", help=f"recipes: {', '.join(RECIPES)}")
    run.add_argument("--seeds", nargs="+", type=int, default=[0])
    run.add_argument("--batch-size", nargs="+", type=int, help="one run per batch size (default: the recipe's)")
    common.add_set_option(run, "; such runs are listed apart, not counted against targets")
    run.add_argument("--out-dir", type=Path, default=RESULTS_DIR)
    run.add_argument("--runs-dir", type=Path, default=common.ROOT / "runs" / "bench")
    run.add_argument("--data-dir", help="default: $MINIVGG_DATA")
    run.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None)
    for name, text in (("table", "regenerate the accuracy section of BENCHMARKS.md"),
                       ("check", "exit 1 if the accuracy section of BENCHMARKS.md is stale"),
                       ("figures", "write a compare figure per group from the JSON files")):
        p = sub.add_parser(name, help=text)
        p.add_argument("--results-dir", type=Path, default=RESULTS_DIR)
        if name != "figures":
            p.add_argument("--md", type=Path, default=common.BENCHMARKS_MD)
    return parser


def cmd_run(args, argv) -> int:
    for name in args.names:
        get_recipe(name)   # fail fast on a typo, before hours of training
    changes = common.parse_set(args.set)
    recipes = [make_recipe(name, seed, batch, changes) for name in args.names
               for batch in (args.batch_size or [None]) for seed in args.seeds]
    for recipe in recipes:
        if recipe.batch_size < 1:
            raise ValueError(f"batch size must be at least 1 (got {recipe.batch_size})")
    command = " ".join([SCRIPT, *map(shlex.quote, argv)])
    git = git_state()   # now, not after hours of training, when the tree may have moved on
    for recipe in recipes:
        run_one(recipe, out_dir=args.out_dir, runs_dir=args.runs_dir, data_dir=args.data_dir,
                progress=args.progress, command=command, git=git)
    if args.out_dir.resolve() == RESULTS_DIR.resolve():
        write_table(RESULTS_DIR)
        print(f"updated {common.relative(common.BENCHMARKS_MD)}; `{SCRIPT} figures` redraws the "
              f"compare figures")
    else:
        print(f"results are outside {common.relative(RESULTS_DIR)}: BENCHMARKS.md left as it is")
    return 0


def main(argv=None) -> int:
    from minivgg.cli import use_one_line_warnings

    use_one_line_warnings()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    try:
        if args.command == "run":
            return cmd_run(args, argv)
        if args.command == "figures":
            for path in write_figures(args.results_dir):
                print(f"wrote {common.relative(path)}")
            return 0
        if args.command == "table":
            changed = write_table(args.results_dir, args.md)
            print(f"{'updated' if changed else 'unchanged'}: {args.md}")
            return 0
        return common.MarkedSection(SECTION, args.md).check(
            render_section(args.results_dir, args.md), f"{SCRIPT} table")
    except (KeyboardInterrupt, TrainingInterrupted) as err:
        print(f"benchmarks/accuracy.py: interrupted ({err or 'Ctrl-C'}); the runs that finished "
              f"kept their JSON files", file=sys.stderr)
        return 130
    except (ValueError, KeyError, OSError) as err:
        message = err.args[0] if isinstance(err, KeyError) and err.args else str(err)
        print(f"benchmarks/accuracy.py {args.command}: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
