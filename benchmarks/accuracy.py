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
import dataclasses
import datetime as _dt
import difflib
import json
import hashlib
import os
import platform
import re
import shlex
import statistics
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from minivgg.compare import (BENCH_FORMAT, format_duration, iteration_loss_curve,  # noqa: E402
                             read_iteration_log)
from minivgg.models import RECIPES, Recipe, get_recipe  # noqa: E402
from minivgg.train import TrainingInterrupted  # noqa: E402

RESULTS_DIR = ROOT / "benchmarks" / "results" / "accuracy"
FIGURES_SUBDIR = "figures"
BENCHMARKS_MD = ROOT / "BENCHMARKS.md"
BEGIN, END = "<!-- accuracy:begin -->", "<!-- accuracy:end -->"
SCRIPT = "python benchmarks/accuracy.py"
MATCHING_FIELDS = {"seed", "batch_size"}   # changes that still count as the faithful recipe


# ---- what we measure against: the one table of published figures and targets -----------------
@dataclass(frozen=True)
class Target:
    """One row of the results table: a recipe (at a batch size) and what it must reach."""
    recipe: str
    at_least: float | None = None        # None: the published figure itself
    batch_size: int | None = None        # None: the recipe's own
    published: float | None = None       # None: the recipe's `published` field
    published_text: str | None = None    # how the write-up states it, e.g. "> 0.80"
    rule: str = "final"                  # final | last3_each | last3_mean (see `judge`)
    strict: bool = False                 # "above" the target rather than "at least"
    max_params: int | None = None        # the model must have fewer parameters than this
    seeds: tuple = (0, 1, 2)             # the seeds the row's command runs (and needs)

    @property
    def key(self) -> str:
        return self.recipe if self.batch_size is None else f"{self.recipe}-b{self.batch_size}"

    def batch(self) -> int:
        return self.batch_size or get_recipe(self.recipe).batch_size

    def published_figure(self) -> float | None:
        return self.published if self.published is not None else get_recipe(self.recipe).published

    def target(self) -> float:
        return self.at_least if self.at_least is not None else self.published_figure()

    def command(self) -> str:
        parts = [SCRIPT, "run", self.recipe]
        if self.batch_size is not None:
            parts += ["--batch-size", str(self.batch_size)]
        return " ".join(parts + ["--seeds", *map(str, self.seeds)])


@dataclass(frozen=True)
class Group:
    key: str                              # also the name of its compare figure
    title: str
    targets: tuple


ONE_SEED = (0,)   # long runs (Fashion-MNIST, CIFAR-10): one seed until there is time for more

GROUPS = (
    Group("vgg_v1", "vgg_v1 on MNIST: 1,000 iterations of Adam 3e-4 (seeds/000 step 1)", (
        Target("vgg_v1", batch_size=16, published=0.8368),
        Target("vgg_v1", batch_size=32, published=0.8507),
        Target("vgg_v1"),
    )),
    Group("vgg_v2", "vgg_v2 (BatchNorm + LayerNorm) on MNIST: 1,000 iterations of Adam 3e-4 "
                    "(seeds/000 step 2)", (
        Target("vgg_v2", batch_size=16, published=0.9031),
        Target("vgg_v2", batch_size=32, published=0.9197),
        Target("vgg_v2"),
        Target("vgg_v2", batch_size=128, published=0.9370),
    )),
    Group("mnist_8k", "MNIST under 8,000 parameters (seeds/002: 15 epochs; ours may train longer)", (
        Target("mnist_8k_a"),
        Target("mnist_8k_b"),
        Target("mnist_5k", rule="last3_each", seeds=(0, 1, 2, 3, 4, 5)),
        Target("mnist_5k_plus", at_least=0.995, rule="last3_mean", strict=True, max_params=8000),
        Target("mnist_8k_plus", at_least=0.995, rule="last3_mean", strict=True, max_params=8000),
        Target("mnist_7k_plus", at_least=0.995, rule="last3_mean", strict=True, max_params=8000),
        Target("mnist_7k_plus2", at_least=0.995, rule="last3_mean", strict=True, max_params=8000),
        Target("mnist_7k_plus3", at_least=0.995, rule="last3_mean", strict=True, max_params=8000),
        Target("mnist_7k_plus4", at_least=0.995, rule="last3_mean", strict=True, max_params=8000),
        Target("mnist_7k_15ep", at_least=0.994, rule="last3_each", max_params=8000),
        Target("mnist_7k_15ep_tta", at_least=0.994, rule="last3_each", max_params=8000),
        Target("mnist_5k_fast", at_least=0.994),
    )),
    Group("mnist_20k", "MNIST under 20,000 parameters, 12 epochs (seeds/004)", (
        Target("mnist_20k", at_least=0.994, seeds=(0, 1, 2, 3, 4, 5)),
    )),
    Group("fashion", "Fashion-MNIST (seeds/003)", (
        Target("lenet5_fashion", at_least=0.91),
        Target("minivgg_fashion", at_least=0.93, seeds=ONE_SEED),
        Target("fashion_plus", at_least=0.935, strict=True, seeds=ONE_SEED),
        Target("fashion_plus2", at_least=0.935, strict=True),
    )),
    Group("cifar10", "CIFAR-10 (seeds/001)", (
        Target("minivggnet_cifar10", at_least=0.83, published_text="> 0.80", seeds=ONE_SEED),
        Target("cifar10_plus", at_least=0.88, strict=True, seeds=ONE_SEED),
        Target("cifar10_plus2", at_least=0.88, strict=True, seeds=ONE_SEED),
        Target("airbench94", at_least=0.94),
    )),
)

# Hand-written remarks shown under a group's table, by row key (Target.key). Say here why a
# row falls short, or anything a reader should know that the numbers do not say.
NOTES: dict[str, str] = {
    "mnist_20k": (
        "Seeds 0-2 ran on Intel Xeon (0.9942, 0.9941, 0.9949), seeds 3-5 on AMD EPYC (0.9947, "
        "0.9947, 0.9938), whose BLAS rounds differently, so a seed is not the same run on both. "
        "The README quickstart (`minivgg train`, seed 0) ends at 0.9937 on AMD EPYC: like seed 5, "
        "one of the seeds just under the bar, which the 6-seed mean (0.9944) clears."),
    "mnist_5k": (
        "The write-up names OneCycle and \"image augmentation\" but not the peak LR or the "
        "transforms, so ours are chosen on validation splits, never on the test set. The first "
        "choice (affine 7 deg / shift 0.1 / scale 0.95-1.05, peak 0.1; best of four candidates "
        "with 2 seeds each) ended at 0.9941 mean final test accuracy and held 0.994 over the last "
        "3 epochs in 1 seed of 3 (its runs, files *-6ca884f1, are under Other runs). Re-chosen "
        "among six candidates with 6 seeds each (benchmarks/results/screening/README.md): "
        "lighter affine augmentation (5 deg, shift 0.05, no scaling) and a peak of 0.2. Seeds "
        "0-2 (Intel Xeon): 0.9945 mean final, 2 of 3 hold 0.994 over their last 3 epochs; seed "
        "0 ends 0.9935, 0.9946, 0.9938. Seeds 3-5 were added (AMD EPYC, at 3413b10) to see how "
        "common such a dip is: seed 3 holds it exactly (lowest 0.9940), seeds 4 and 5 do not "
        "(lowest 0.9932 and 0.9936). So 3 seeds of 6 hold the write-up's 99.4% in each of the "
        "last 3 epochs, and the mean final accuracy (0.9943) sits on the bar: the write-up's one "
        "run is what a median seed of this recipe does (averaged over the 6 seeds, the last 3 "
        "epochs are 0.9941, 0.9942 and 0.9944; the rule asks it of every seed). The write-up logs accuracy to 3 "
        "decimals, so its 0.994 in epochs 13-15 means each lay in 0.9935-0.9945; read at that "
        "precision, 5 of our 6 seeds print 0.994 or more in each of the last 3 epochs (seed 4's "
        "0.9932 prints 0.993). Six more unpublished settings (weight decay 1e-4 and 3e-4, batch "
        "32, pct_start 0.3, plain momentum, linear annealing; screen 10, 6 seeds each, on "
        "validation) moved the last 3 epochs by -0.03 to +0.03 points on average, inside the "
        "seed noise, so the recipe stays. The write-up's "
        "final train accuracy under augmentation, 0.988, says its augmentation stayed on to the "
        "end, so switching it off for the last epochs (as mnist_7k_plus3 does) would not be this "
        "recipe. Our recipes do better: "
        "mnist_7k_15ep_tta holds it in every seed (below)."),
    "mnist_5k_plus": (
        "Untuned first guess (OneCycle to 0.08 at batch 128, label smoothing 0.05, EMA 0.999): "
        "it ends below the faithful mnist_5k recipe. The target sets no epoch budget; next: "
        "choose peak LR, batch size and length on a validation split, and drop smoothing."),
    "mnist_8k_plus": (
        "Same untuned recipe on mnist_8k_b's 7,936-parameter net: no better than on 5,178 "
        "parameters, so the recipe, not the capacity, is what is missing."),
    "mnist_7k_plus": (
        "Chosen on validation: mnist_7k at 30 epochs had the best validation accuracy of three "
        "candidates (0.9920, against 0.9903 for mnist_5k's own 15-epoch recipe; Other runs), "
        "but on the test set it is level with mnist_5k in 15 (final 0.9943 vs 0.9941): over "
        "the last 3 epochs seed 0 holds 0.9939-0.9940, seed 1 0.9943-0.9947, seed 2 0.9944-0.9948 "
        "(seed 2 touched 0.9954 at epoch 26 of 30; the rule reads the last 3). Train "
        "accuracy under affine augmentation is 99.4%, so these nets underfit; what is left to "
        "try is weaker augmentation late in training and more capacity at full resolution."),
    "mnist_7k_plus2": (
        "Short by one test image on average: the mean of the last 3 epochs is 0.9949 (seeds "
        "0.9951, 0.9948, 0.9948) against > 0.995; every final epoch is 0.9949-0.9950, and seed 0 "
        "passes alone. Chosen by a 6-seed validation screen in PyTorch (benchmarks/results/"
        "screening/README.md) that put it 0.11 points above mnist_7k_plus; on the test set it "
        "gained 0.05 (0.9944 -> 0.9949). Train accuracy now reaches 99.7%, so the lighter "
        "augmentation did let the net fit. Augmentation switched off for the last epochs is "
        "mnist_7k_plus3, below; the same training scored with shift test-time augmentation is "
        "mnist_7k_plus4, which passes. Not yet tried: the 7,740-parameter widths and still "
        "lighter augmentation with this recipe."),
    "mnist_7k_plus3": (
        "mnist_7k_plus2 with augmentation for its first 25 epochs only. On validation it gained "
        "in every seed of a paired screen (+0.04 to +0.07 points, mean of the last 3 epochs; "
        "benchmarks/results/screening/README.md, screen 6); on the test set it did not: 0.9949 "
        "mean of the last 3 epochs as before (seeds 0.9950, 0.9950, 0.9947; seed 1 passes "
        "alone), so the target is still missed by about one test image. The last epochs do fit "
        "better (train accuracy 0.998 against 0.9965) without generalising better. Its runs "
        "used the faster affine warp of 84accae, which rounds differently in the last bit, so "
        "they are not paired with mnist_7k_plus2's runs seed by seed."),
    "mnist_7k_plus4": (
        "mnist_7k_plus2 with 1-pixel shift test-time augmentation (5 views: the image and the "
        "image moved 1 pixel left, right, up and down; the training is mnist_7k_plus2's). Chosen "
        "on validation, where scoring the same trained weights with the shifts gained in every "
        "pair (screen 8 of benchmarks/results/screening/README.md: +0.03, +0.13, +0.12 points "
        "over mnist_7k_plus2's weights). Mean of the last 3 epochs 0.9957 (seeds 0.9958, 0.9955, "
        "0.9958), every seed above 0.995. The same final weights scored without the shifts "
        "(`minivgg eval RUN_DIR --no-tta`) reach 0.9950, 0.9938 and 0.9948, so on the test set "
        "the shifts add +0.07, +0.18 and +0.12 points, as on validation; those plain figures are "
        "in line with mnist_7k_plus2's own runs (0.9950 mean final), which ran on another CPU "
        "(Intel; these on AMD EPYC, whose BLAS rounds differently), so the two rows are not "
        "paired seed by seed. The runs started at e6b33df; the commits their "
        "JSON files name (2176b75, d134bec, the last with a README edit uncommitted) are the ones "
        "at each run's end, before a124051 fixed that: the commits in between changed only the "
        "eval/predict command line, which training does not load. Each epoch scores the 10,000 "
        "test images 5 times, about 4 s of the 19 s an epoch takes here."),
    "mnist_7k_15ep": (
        "mnist_7k_plus2 (7,304 parameters) cut to the write-up's 15 epochs, to show 99.4% under "
        "8k parameters in 15 epochs with our recipe beside the faithful mnist_5k row. Screened "
        "on validation against mnist_5k's recipe (screen 7 of benchmarks/results/screening/"
        "README.md: 0.9932 +- 0.0005 against 0.9921 +- 0.0013, 3 paired seeds). On the test set "
        "it fails the same way mnist_5k does: seeds 0 and 2 hold 0.994 over their last 3 epochs "
        "(0.9955-0.9957 and 0.9941-0.9947), seed 1 ends 0.9938, 0.9941, 0.9943. Its mean (0.9947 "
        "final) is 0.02 points above mnist_5k's, well inside the seed-to-seed spread (0.0008)."),
    "mnist_7k_15ep_tta": (
        "mnist_7k_15ep scored with 1-pixel shift test-time augmentation, chosen on validation "
        "(screen 8: +0.02, +0.05, +0.03 points over the same weights). Every seed holds 0.994 in "
        "each of its last 3 of 15 epochs (lowest 0.9959, 0.9944, 0.9953; mean of the last 3 "
        "0.9954, above 0.995 as well). Its final weights scored without the shifts (`minivgg "
        "eval RUN_DIR --no-tta`) reach 0.9951, 0.9943 and 0.9946: +0.08, +0.10 and +0.08 points "
        "from the shifts. Seed 1 trained on the same AMD EPYC machine as mnist_7k_15ep's seed 1 "
        "and is the same run (its plain final 0.9943 in both), so there the whole comparison is "
        "paired: last 3 epochs 0.9938 / 0.9941 / 0.9943 plain, 0.9944 / 0.9948 / 0.9953 shifted. "
        "The runs started at d134bec; the commit their JSON files name (62c0873, dirty) is the "
        "one at each run's end, before a124051 fixed that: the commits in between changed only "
        "how accuracy.py records the commit and the compare figures' markers."),
    "mnist_5k_fast": (
        "For time to accuracy (BENCHMARKS.md's speed section): mnist_5k cut to 8 epochs at batch "
        "128 and peak 0.3, chosen by a 4-seed validation screen (screen 5 of benchmarks/results/"
        "screening/README.md). It ends at 0.9934 mean final (0.9935, 0.9936, 0.9931), and no "
        "seed reaches 0.994 in any epoch; its validation score (0.9922 final) was 0.05 points "
        "under the 15-epoch recipe's, which on the test set became 0.11. 8 epochs of this net "
        "are too few for 99.4% with this schedule."),
    "fashion_plus": (
        "Passes by 2 test images (0.9352 > 0.935), and its mean of the last 3 epochs, 0.9349, "
        "does not; it does not beat our faithful minivgg_fashion run (0.9353) either. It "
        "underfits: train accuracy under crop + flip with label smoothing 0.1, weight decay "
        "5e-4 and the net's dropout ends at 0.93. Less regularisation is fashion_plus2, below."),
    "fashion_plus2": (
        "fashion_plus with cifar10_plus2's changes: the net's dropout lightened to .1/.1/.3 "
        "(model minivgg_fashion_light), no label smoothing, weight EMA 0.999, 25 epochs; reasoned "
        "from fashion_plus's train accuracy (0.93), not screened on a validation split. Final "
        "0.9416, 0.9395, 0.9415 (AMD EPYC), 0.56 points above the faithful minivgg_fashion run "
        "(0.9353) and 0.57 above fashion_plus; train accuracy under augmentation ends at 0.946. "
        "Flip TTA is part of it: the final weights scored without it (`minivgg eval RUN_DIR "
        "--no-tta`) reach 0.9394, 0.9373 and 0.9385 (+0.22, +0.22, +0.30 points from the mirror "
        "view), still above 0.935. Its test curve dips "
        "in mid-training (seed 0: 0.7985 at epoch 4; seed 1: 0.912 at epoch 21): the EMA weights "
        "are scored with the live model's BatchNorm statistics. With statistics re-measured for "
        "them, epoch 4 scores 0.9104 (benchmarks/ema_bn_probe.py; "
        "benchmarks/results/ema_bn_probe/README.md). Seeds 0-1 started at 54dc2c6, seed 2 at "
        "0ab7404 (which changed only the rows' seed lists)."),
    "cifar10_plus": (
        "Short: 0.8700 final (0.8724 at epoch 29) against > 0.88, though 3.2 points above the "
        "faithful 40-epoch run. It underfits: train accuracy (under crop + flip, the net's "
        "dropout, weight decay 5e-4 and label smoothing 0.1) ends at 0.857, and test accuracy "
        "was still climbing as the LR annealed (0.854 at epoch 26, 0.870 at 30). Untuned first "
        "guess; next: choose regularisation and length on a validation split (screen_recipes.py "
        "on a GPU). Its 107 min include two epochs of sharing the cores with other runs "
        "(564 s, and 1,165 s with a 16-minute pause); alone an epoch takes 125-160 s, about "
        "70 min for the 30."),
    "cifar10_plus2": (
        "cifar10_plus with the net's dropout lightened to .1/.1/.3 (model minivggnet_light), no "
        "label smoothing, 35 epochs; reasoned from cifar10_plus's train accuracy (0.857, below "
        "its test accuracy), not screened on a validation split. 0.8961 final (0.8916 mean of "
        "the last 3 epochs); train accuracy under augmentation ends at 0.90. One seed: one run "
        "takes about 95 minutes on this machine's 2 cores."),
    "airbench94": (
        "Issue 23's recipe (airbench94, arXiv:2404.00498, in minivgg's pieces). Not run yet: "
        "a full run needs the compiled kernels (issue 18) to fit the hour; its step time "
        "against PyTorch and the projected run time are in the airbench94 section below."),
    "minivggnet_cifar10": (
        "Its 2.54 h include about 30 minutes paused (SIGSTOP) for speed measurements and hours "
        "sharing the two cores with other runs; alone it trains at about 330-390 img/s "
        "(speed.py), some 1.7 h for the 40 epochs. Test accuracy plateaus from epoch 20 "
        "(0.834-0.840) while train accuracy climbs to 0.948, as in the write-up's figure."),
    "mnist_8k_b": (
        "Seeds 0-2 of this row and seeds 1-2 of the rows around it ran 16 at a time on a "
        "borrowed 16-CPU machine (see Machines): their time per run and img/s are not this "
        "machine's speed; speed.py measures that."),
}


def all_targets() -> list:
    return [target for group in GROUPS for target in group.targets]


# ---- one run -> one JSON -------------------------------------------------------------------------
DESCRIPTIVE_FIELDS = {"name", "description", "source", "published"}   # words, not training


def recipe_changes(recipe: Recipe) -> dict:
    """Fields in which `recipe` differs from the named recipe it came from."""
    base = get_recipe(recipe.name).to_dict()
    return {k: v for k, v in recipe.to_dict().items() if base.get(k) != v}


def changes_against_current(record: dict) -> dict:
    """How the recipe a result was trained with differs from its named recipe as it is now.

    The `changes` stored in a result are against the recipe at run time; once a recipe is
    re-chosen, its older results differ from it and must not count against its target.
    """
    config = record.get("recipe_config")
    try:
        base = get_recipe(record.get("recipe", ""))
    except KeyError:
        return dict(record.get("changes") or {})
    if not isinstance(config, dict):
        return dict(record.get("changes") or {})
    base = json.loads(json.dumps(base.to_dict()))     # tuples -> lists, as in the JSON
    # a field added to Recipe after a result was written had its default then
    defaults = json.loads(json.dumps(Recipe(name="", model="", dataset="").to_dict()))
    return {k: config.get(k, defaults[k]) for k in base
            if k not in DESCRIPTIVE_FIELDS and config.get(k, defaults[k]) != base[k]}


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


def _git(*args) -> str | None:
    try:
        out = subprocess.run(["git", *args], capture_output=True, text=True, cwd=ROOT, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def git_state() -> dict:
    """The commit the run used. A copy of the tree without .git (e.g. on a borrowed machine)
    names it in MINIVGG_GIT_COMMIT; its cleanliness is then unknown (None)."""
    commit = _git("rev-parse", "HEAD")
    if commit is not None:
        return {"git_commit": commit, "git_dirty": bool(_git("status", "--porcelain", "--untracked-files=no"))}
    return {"git_commit": os.environ.get("MINIVGG_GIT_COMMIT"), "git_dirty": None}


def machine() -> dict:
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    import numpy

    return {"platform": platform.platform(), "cpu": cpu, "cpu_count": os.cpu_count(),
            "usable_cpus": usable, "python": platform.python_version(), "numpy": numpy.__version__,
            "threads": {k: os.environ[k] for k in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS",
                                                   "MKL_NUM_THREADS") if k in os.environ}}


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
        **(git if git is not None else git_state()),
        "machine": machine(), "started": started,
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
                              command=command, run_dir=_relative(result.run_dir), started=started,
                              git=git)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json(path, record)
    print(f"wrote {_relative(path)}: final test accuracy {record['final_test_acc']}", flush=True)
    return path


def _relative(path) -> str:
    path = Path(path).resolve()
    try:
        return str(path.relative_to(ROOT))
    except ValueError:
        return str(path)


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
    recipe = get_recipe(name).override(seed=seed, batch_size=batch_size)
    nulls = {k: None for k, v in changes.items() if v is None}
    recipe = recipe.override(**{k: v for k, v in changes.items() if v is not None})
    if nulls:
        recipe = dataclasses.replace(recipe, **nulls)   # override() skips None: set them here
    return Recipe.from_dict(recipe.to_dict())           # lists from JSON -> the recipe's tuples


# ---- JSON files -> table ---------------------------------------------------------------------------
def load_results(results_dir: Path) -> list:
    records = []
    for path in sorted(Path(results_dir).glob("*.json")):
        try:
            record = json.loads(path.read_text())
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}: not valid JSON ({err})") from None
        if not isinstance(record, dict) or record.get("format") != BENCH_FORMAT:
            raise ValueError(f"{path}: not a benchmarks/accuracy.py result (format "
                             f"{BENCH_FORMAT!r}); move other files out of {results_dir}")
        record["_file"] = path.name
        record["changes"] = changes_against_current(record)
        records.append(record)
    return records


def matches(target: Target, record: dict) -> bool:
    changes = set(record.get("changes") or {})
    return (record.get("recipe") == target.recipe and changes <= MATCHING_FIELDS
            and record.get("batch_size") == target.batch())


def rows_for(records: list) -> tuple[dict, list]:
    """({target key: its records sorted by seed}, records matching no target)."""
    by_key, used = {}, set()
    for target in all_targets():
        mine = sorted((r for r in records if matches(target, r)), key=lambda r: r.get("seed", 0))
        seeds = [r.get("seed") for r in mine]
        if len(seeds) != len(set(seeds)):
            files = ", ".join(r["_file"] for r in mine)
            raise ValueError(f"{target.key}: two result files for the same seed ({files}); "
                             f"delete the stale one")
        by_key[target.key] = mine
        used.update(id(r) for r in mine)
    return by_key, [r for r in records if id(r) not in used]


def mean_std(values: list) -> tuple[float | None, float | None]:
    """Mean and sample standard deviation (None for fewer than two values)."""
    values = [v for v in values if v is not None]
    if not values:
        return None, None
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else None)


def _reaches(value, target: Target) -> bool:
    return value is not None and (value > target.target() if target.strict else value >= target.target())


@dataclass
class Verdict:
    status: str            # "not run yet" | "pass" | "FAIL" | "pending"
    text: str              # the result cell
    shortfall: str | None  # a sentence for the notes when we fall short


def judge(target: Target, records: list) -> Verdict:
    """Final-epoch figures only: `final` compares the mean over seeds of the final test accuracy;
    `last3_each` wants every seed at or above the target in each of its last 3 epochs;
    `last3_mean` compares the mean over seeds of each seed's last-3-epoch mean."""
    if not records:
        return Verdict("not run yet", "not run yet", None)
    done = [r for r in records if r.get("status") == "completed"]
    diverged = len(records) - len(done)
    problems = []
    if diverged:
        problems.append(f"{diverged} of {len(records)} seed(s) diverged")
    params = [r.get("num_parameters") for r in done if r.get("num_parameters") is not None]
    if target.max_params and params and max(params) >= target.max_params:
        problems.append(f"{max(params):,} parameters, not under {target.max_params:,}")
    if target.rule == "final":
        per_seed = [r.get("final_test_acc") for r in done]
        value, _ = mean_std(per_seed)
        what = "final test accuracy"
    elif target.rule == "last3_each":
        per_seed = [r.get("min_last3_test_acc") for r in done]
        value = min((v for v in per_seed if v is not None), default=None)
        what = "lowest of the last 3 epochs over seeds"
    elif target.rule == "last3_mean":
        per_seed = [r.get("mean_last3_test_acc") for r in done]
        value, _ = mean_std(per_seed)
        what = "mean of the last 3 epochs"
    else:
        raise ValueError(f"{target.key}: unknown rule {target.rule!r}")
    reached = sum(_reaches(v, target) for v in per_seed)
    if not _reaches(value, target):
        shown = "-" if value is None else f"{value:.4f}"
        gap = "" if value is None else f", {100 * (target.target() - value):.2f} points short"
        problems.append(f"{what} {shown} vs the target {target.target():g}{gap}")
    counts = f"{reached}/{len(records)} seeds reach it"
    if problems:
        return Verdict("FAIL", f"FAIL ({counts})", "; ".join(problems) + f"; {counts}")
    if len(records) < len(target.seeds):
        return Verdict("pending", f"pending: {len(records)}/{len(target.seeds)} seeds run "
                                  f"(so far {counts})", None)
    return Verdict("pass", f"pass ({counts})", None)


def _acc(value) -> str:
    return "–" if value is None else f"{value:.4f}"


def _acc_spread(values: list) -> str:
    mean, std = mean_std(values)
    if mean is None:
        return "–"
    n = len([v for v in values if v is not None])
    return f"{mean:.4f} ± {std:.4f} (n={n})" if std is not None else f"{mean:.4f} (n=1)"


def _target_text(target: Target) -> str:
    sign = ">" if target.strict else "≥"
    text = {"final": f"{sign} {target.target():g}",
            "last3_each": f"{sign} {target.target():g} in each of the last 3 epochs",
            "last3_mean": f"{sign} {target.target():g} mean of the last 3 epochs"}[target.rule]
    if target.max_params:
        text += f", < {target.max_params:,} params"
    return text


def _published_text(target: Target) -> str:
    if target.published_text:
        return target.published_text
    figure = target.published_figure()
    return "– (ours)" if figure is None else f"{figure:g}"


def _length(name: str, done: list) -> str:
    recipe = get_recipe(name)
    if recipe.iters:
        return f"{recipe.iters:,} iters"
    if not recipe.patience:
        return f"{recipe.epochs} epochs"
    ran = ", ".join(str(r.get("epochs_run")) for r in done)
    return f"≤ {recipe.epochs} epochs (early stopping{': ran ' + ran if ran else ''})"


def _figure_link(group: Group, md_path: Path, results_dir: Path) -> str | None:
    figure = results_dir / FIGURES_SUBDIR / f"{group.key}.png"
    if not figure.is_file():
        return None
    rel = os.path.relpath(figure, md_path.parent)
    links = [f"[curves]({rel})"]
    iterations = figure.with_name(f"{group.key}-iterations.png")
    if iterations.is_file():
        links.append(f"[training loss per iteration]({os.path.relpath(iterations, md_path.parent)})")
    return "Compare figure (the lowest seed of each row): " + ", ".join(links) + "."


HEADER = ("| recipe | batch | trained | params | published | target | final test acc "
          "(mean ± std) | mean of last 3 epochs | best epoch† | result | time per run | "
          "train img/s | command |")


def group_table(group: Group, by_key: dict, md_path: Path, results_dir: Path) -> list:
    lines = [f"### {group.title}", ""]
    link = _figure_link(group, md_path, results_dir)
    if link and any(by_key[t.key] for t in group.targets):
        lines += [link, ""]
    lines += [HEADER, _separator(HEADER)]
    notes = []
    for target in group.targets:
        records = by_key[target.key]
        done = [r for r in records if r.get("status") == "completed"]
        verdict = judge(target, records)
        params = sorted({r.get("num_parameters") for r in done if r.get("num_parameters")})
        best, _ = mean_std([r.get("best_epoch_test_acc") for r in done])
        wall, _ = mean_std([r.get("wall_time_s") for r in done])
        speed, _ = mean_std([r.get("images_per_s") for r in done])
        last3 = [r.get("mean_last3_test_acc") for r in done]
        cells = [
            target.recipe, str(target.batch()), _length(target.recipe, done),
            ", ".join(f"{p:,}" for p in params) or "–",
            _published_text(target), _target_text(target),
            _acc_spread([r.get("final_test_acc") for r in done]) if records else "not run yet",
            _acc_spread(last3) if any(v is not None for v in last3) else "–",
            _acc(best), verdict.text, format_duration(wall),
            "–" if speed is None else f"{speed:,.0f}", f"`{target.command()}`",
        ]
        lines.append("| " + " | ".join(cells) + " |")
        remark = NOTES.get(target.key)
        if verdict.shortfall or remark:
            label = target.recipe + (f" (batch {target.batch_size})" if target.batch_size else "")
            parts = [p for p in (verdict.shortfall, remark) if p]
            notes.append(f"- **{label}** falls short: " + ". ".join(p.rstrip(".") for p in parts) + "."
                         if verdict.shortfall else f"- **{label}**: {remark}")
    if notes:
        lines += ["", *notes]
    return lines + [""]


def _separator(header: str) -> str:
    return "|" + "---|" * (header.count("|") - 1)


def _last3_mean(history: list, key: str):
    values = [row.get(key) for row in history[-3:]]
    return statistics.fmean(values) if len(values) == 3 and None not in values else None


def other_runs_table(records: list) -> list:
    if not records:
        return []
    lines = ["### Other runs (recipe changed with --set: not counted against any target)", "",
             "Runs with a validation split (val_fraction) show its accuracy: that, never the test "
             "accuracy, is what chooses between such runs.", "",
             "| file | recipe | changes | trained | val acc, mean of last 3 | final test acc | time |",
             "|---|---|---|---|---|---|---|"]
    for r in sorted(records, key=lambda r: r["_file"]):
        changes = ", ".join(f"{k}={json.dumps(v)}" for k, v in sorted((r.get("changes") or {}).items()))
        trained = (f"{r.get('iterations')} iters" if r.get("unit") == "iterations"
                   else f"{r.get('epochs_run')} epochs")
        val = _last3_mean(r.get("history") or [], "val_acc")
        lines.append(f"| {r['_file']} | {r.get('recipe')} | {changes or '–'} | {trained} | "
                     f"{_acc(val) if val is not None else '–'} | "
                     f"{_acc(r.get('final_test_acc'))} | {format_duration(r.get('wall_time_s'))} |")
    return lines + [""]


def machines_list(records: list) -> list:
    """Which machine ran which results: times and img/s are only comparable within one."""
    by_machine: dict = {}
    for r in records:
        m = r.get("machine") or {}
        threads = (m.get("threads") or {}).get("OPENBLAS_NUM_THREADS", "default")
        key = (m.get("cpu") or "unknown CPU", m.get("cpu_count"))
        by_machine.setdefault(key, {}).setdefault(threads, []).append(r["_file"].removesuffix(".json"))
    if not by_machine:
        return []
    lines = ["### Machines", ""]
    for (cpu, count), by_threads in sorted(by_machine.items(), key=lambda kv: str(kv[0])):
        for threads, files in sorted(by_threads.items()):
            lines.append(f"- {cpu}, {count} CPUs, {threads} BLAS thread(s): {len(files)} runs "
                         f"({', '.join(sorted(files))})")
    return lines + [""]


def render_section(results_dir: Path = RESULTS_DIR, md_path: Path = BENCHMARKS_MD) -> str:
    """The generated text between the accuracy markers, from the JSON files alone."""
    records = load_results(results_dir)
    by_key, others = rows_for(records)
    lines = [
        "<!-- generated by `python benchmarks/accuracy.py table` from "
        f"{os.path.relpath(results_dir, md_path.parent)}/*.json: do not edit by hand -->",
        "",
        "Test accuracy on each dataset's official test set. Every figure is the **final** epoch "
        "(or final iteration) of a run, averaged over seeds with the sample standard deviation; "
        "† the best epoch on the test set is shown for reference only and is never used to judge "
        "a row (picking it would be tuning on the test set). A row passes when the mean over its "
        "seeds reaches the target (\"in each of the last 3 epochs\": every such epoch of every "
        "seed; the rules are in `judge`); \"k/n seeds reach it\" counts the "
        "seeds that do on their own, and a row with fewer seeds than its command runs is "
        "\"pending\". \"time per run\" is the wall time of "
        "one training run on the machine recorded in its JSON file; \"train img/s\" excludes "
        "evaluation. Run a row's command with `MINIVGG_DATA` pointing at the datasets; it writes "
        "one JSON file per seed and regenerates this section.",
        "",
    ]
    for group in GROUPS:
        lines += group_table(group, by_key, md_path, results_dir)
    lines += other_runs_table(others)
    lines += machines_list(records)
    return "\n".join(lines).rstrip() + "\n"


def _split(text: str, md_path: Path) -> tuple[str, str, str]:
    if text.count(BEGIN) != 1 or text.count(END) != 1 or text.index(BEGIN) > text.index(END):
        raise ValueError(f"{md_path}: expected one {BEGIN} ... {END} pair; restore the markers")
    head, rest = text.split(BEGIN)
    body, tail = rest.split(END)
    return head, body, tail


def write_table(results_dir: Path = RESULTS_DIR, md_path: Path = BENCHMARKS_MD) -> bool:
    """Rewrite the accuracy section of BENCHMARKS.md; True when it changed."""
    from minivgg.fsutil import atomic_write_path

    text = md_path.read_text()
    head, body, tail = _split(text, md_path)
    new_body = "\n" + render_section(results_dir, md_path)
    if new_body == body:
        return False
    with atomic_write_path(md_path) as tmp:
        Path(tmp).write_text(head + BEGIN + new_body + END + tail)
    return True


def stale_diff(results_dir: Path = RESULTS_DIR, md_path: Path = BENCHMARKS_MD) -> str:
    """'' when the committed section equals what `table` would write, else a unified diff."""
    _, body, _ = _split(md_path.read_text(), md_path)
    expected = "\n" + render_section(results_dir, md_path)
    if body == expected:
        return ""
    return "".join(difflib.unified_diff(body.splitlines(True), expected.splitlines(True),
                                        "BENCHMARKS.md (committed)", "BENCHMARKS.md (generated)"))


def write_figures(results_dir: Path = RESULTS_DIR) -> list:
    """One compare figure per group, from the lowest seed of each row that has a result."""
    from minivgg.compare import compare_runs

    by_key, _ = rows_for(load_results(results_dir))
    written = []
    for group in GROUPS:
        sweep = len(group.targets) > 1 and len({t.recipe for t in group.targets}) == 1
        paths, labels = [], []
        for target in group.targets:
            done = [r for r in by_key[target.key] if r.get("status") == "completed" and r.get("history")]
            if done:
                paths.append(results_dir / done[0]["_file"])
                labels.append(f"batch {target.batch()}" if sweep else target.recipe)
        if not paths:
            continue
        out = results_dir / FIGURES_SUBDIR / f"{group.key}.png"
        out.parent.mkdir(parents=True, exist_ok=True)
        compare_runs(paths, out, labels=labels, title=group.title)
        written.append(out)
    return written


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
    run.add_argument("--runs-dir", type=Path, default=ROOT / "runs" / "bench")
    run.add_argument("--data-dir", help="default: $MINIVGG_DATA")
    run.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None)
    for name, text in (("table", "regenerate the accuracy section of BENCHMARKS.md"),
                       ("check", "exit 1 if the accuracy section of BENCHMARKS.md is stale"),
                       ("figures", "write a compare figure per group from the JSON files")):
        p = sub.add_parser(name, help=text)
        p.add_argument("--results-dir", type=Path, default=RESULTS_DIR)
        if name != "figures":
            p.add_argument("--md", type=Path, default=BENCHMARKS_MD)
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
    git = git_state()   # now, not after hours of training, when the tree may have moved on
    for recipe in recipes:
        run_one(recipe, out_dir=args.out_dir, runs_dir=args.runs_dir, data_dir=args.data_dir,
                progress=args.progress, command=command, git=git)
    if args.out_dir.resolve() == RESULTS_DIR.resolve():
        write_figures(RESULTS_DIR)
        write_table(RESULTS_DIR, BENCHMARKS_MD)
        print(f"updated {_relative(BENCHMARKS_MD)} and the compare figures")
    else:
        print(f"results are outside {_relative(RESULTS_DIR)}: BENCHMARKS.md left as it is")
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
                print(f"wrote {_relative(path)}")
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
        print(f"{args.md}: the accuracy section matches {_relative(args.results_dir)}")
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
