"""Accuracy benchmarks: train the published recipes (and ours) on the real datasets, keep one
JSON per run, and regenerate the accuracy section of BENCHMARKS.md from those files alone.

    python benchmarks/accuracy.py run NAME... [--seeds 0 1 2] [--batch-size B ...]
                                  [--set field=value ...] [--out-dir DIR] [--runs-dir DIR]
    python benchmarks/accuracy.py table      # rewrite the section between the accuracy markers
    python benchmarks/accuracy.py check      # exit 1 if the committed section is stale
    python benchmarks/accuracy.py figures    # compare figures per group, from the JSON files

Datasets are read from $MINIVGG_DATA (or --data-dir). Each run writes
benchmarks/results/accuracy/<recipe>[-b<batch>]-s<seed>.json (-b only when the batch size is
not the recipe's own; runs changed with --set get an extra -x-<changes> part and are listed
apart, never counted against a target). Results are judged on the final epoch (or final
iteration); the best epoch appears beside it, labelled, and is never used for pass/fail.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import hashlib
import json
import re
import shlex
import statistics
import sys
from pathlib import Path

import common
from accuracy_render import RESULTS_DIR, stale_diff, write_figures, write_table
from accuracy_targets import MATCHING_FIELDS, SCRIPT
from minivgg.compare import BENCH_FORMAT, iteration_loss_curve, read_iteration_log
from minivgg.models import RECIPES, Recipe, get_recipe
from minivgg.train import TrainingInterrupted


# ---- one run -> one JSON -------------------------------------------------------------------------
def recipe_changes(recipe: Recipe) -> dict:
    """Fields in which `recipe` differs from the named recipe it came from."""
    base = get_recipe(recipe.name).to_dict()
    return {k: v for k, v in recipe.to_dict().items() if base.get(k) != v}


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


def images_per_second(history: list) -> float | None:
    """Training images per second over the whole run (epoch times only, evaluation excluded)."""
    images = seconds = 0.0
    for row in history:
        if row.get("images_per_s") and row.get("time"):
            images += row["images_per_s"] * row["time"]
            seconds += row["time"]
    return round(images / seconds, 1) if seconds else None


def epoch_figures(history: list, iteration_based: bool) -> dict:
    """Final, best (labelled), mean and min of the last 3 epochs' test accuracy."""
    accs = [row.get("test_acc") for row in history]
    scored = [(acc, row.get("epoch")) for acc, row in zip(accs, history) if acc is not None]
    best = max(scored, key=lambda pair: pair[0]) if scored else (None, None)
    last3 = accs[-3:]
    usable_last3 = not iteration_based and len(last3) == 3 and None not in last3
    return {
        "final_test_acc": accs[-1] if accs else None,
        "best_epoch_test_acc": best[0], "best_epoch": best[1],
        "mean_last3_test_acc": statistics.fmean(last3) if usable_last3 else None,
        "min_last3_test_acc": min(last3) if usable_last3 else None,
    }


def build_result(recipe: Recipe, results: dict, iter_log: list, *, status: str, command: str,
                 run_dir, started: str, error: str | None = None, git: dict | None = None) -> dict:
    """One run's JSON record. `git`: git_state() as the command started (the code it imported);
    read now when not given."""
    history = results.get("history") or []
    iteration_based = bool(recipe.iters)
    figures = epoch_figures(history, iteration_based)
    if results.get("final_test_acc") is not None:
        figures["final_test_acc"] = results["final_test_acc"]
    iterations, losses = iteration_loss_curve(iter_log)
    return {
        "format": BENCH_FORMAT, "version": 1, "status": status, "error": error,
        "recipe": recipe.name, "changes": recipe_changes(recipe), "recipe_config": recipe.to_dict(),
        "model": recipe.model, "dataset": recipe.dataset, "seed": recipe.seed,
        "batch_size": recipe.batch_size, "num_parameters": results.get("num_parameters"),
        "unit": "iterations" if iteration_based else "epochs",
        "epochs_run": results.get("epochs_run", len(history)), "iterations": results.get("iterations"),
        "stopped_early": results.get("stopped_early"),
        **figures,
        "final_test_loss": results.get("final_test_loss"),
        "wall_time_s": results.get("wall_time_s"), "images_per_s": images_per_second(history),
        "history": history,
        "train_loss_by_iteration": {"iterations": iterations, "loss": losses} if iterations else None,
        **(git if git is not None else common.git_state()),
        "machine": common.machine(), "started": started,
        "finished": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "command": command, "run_dir": str(run_dir) if run_dir else None,
    }


def run_one(recipe: Recipe, *, out_dir: Path, runs_dir: Path, data_dir, progress, command: str,
            git: dict | None = None) -> Path:
    from minivgg.experiment import TrainingDiverged, run_recipe, write_json

    started = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    path = out_dir / result_name(recipe)
    try:
        result = run_recipe(recipe, data_dir=data_dir, out=runs_dir, progress=progress)
    except TrainingDiverged as err:
        # a diverged seed is a result too: it counts against the target
        record = build_result(recipe, {}, [], status="diverged", command=command, run_dir=None,
                              started=started, error=str(err), git=git)
    else:
        results = json.loads((result.run_dir / "results.json").read_text())
        record = build_result(recipe, results, read_iteration_log(result.run_dir), status="completed",
                              command=command, run_dir=common.relative(result.run_dir), started=started,
                              git=git)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json(path, record)
    print(f"wrote {common.relative(path)}: final test accuracy {record['final_test_acc']}", flush=True)
    return path


def parse_set(items) -> dict:
    changes = {}
    for item in items or ():
        field, sep, text = item.partition("=")
        if not sep or not field:
            raise ValueError(f"--set {item!r}: expected field=value, e.g. --set epochs=2")
        try:
            changes[field] = json.loads(text)
        except json.JSONDecodeError:
            changes[field] = text     # bare words such as adam or onecycle
    return changes


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
    run.add_argument("--set", nargs="+", default=[], metavar="FIELD=VALUE",
                     help="change recipe fields (JSON values), e.g. --set epochs=2 lr=0.01; such runs "
                          "are listed apart, not counted against targets")
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
    changes = parse_set(args.set)
    recipes = [make_recipe(name, seed, batch, changes) for name in args.names
               for batch in (args.batch_size or [None]) for seed in args.seeds]
    for recipe in recipes:
        if recipe.batch_size < 1:
            raise ValueError(f"batch size must be at least 1 (got {recipe.batch_size})")
    command = " ".join([SCRIPT, *map(shlex.quote, argv)])
    git = common.git_state()   # now, not after hours of training, when the tree may have moved on
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
        diff = stale_diff(args.results_dir, args.md)
        if diff:
            sys.stdout.write(diff)
            print(f"\n{args.md}: the accuracy section is stale; run `{SCRIPT} table` and commit it",
                  file=sys.stderr)
            return 1
        print(f"{args.md}: the accuracy section matches {common.relative(args.results_dir)}")
        return 0
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
