"""The accuracy table's rows: each recipe (at a batch size), what it must reach, by which rule,
and the hand-written note shown under it (benchmarks/results/accuracy/NOTES.md)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import common  # noqa: F401  (puts the repository on sys.path)
from minivgg.models import get_recipe

SCRIPT = "python benchmarks/accuracy.py"
NOTES_MD = common.ROOT / "benchmarks" / "results" / "accuracy" / "NOTES.md"
MATCHING_FIELDS = {"seed", "batch_size"}   # changes that still count as the faithful recipe


@dataclass(frozen=True)
class Rule:
    """How a row is judged, always on test accuracy of the final epochs, never the best one."""
    field: str     # each seed's figure in its run record ("k/n seeds reach it" counts these)
    pool: str      # the row's figure from its seeds: "mean", "min", or "curve" (see below)
    what: str      # the row's figure, in a shortfall note
    wording: str   # after the target figure, in the table's target column


RULES = {
    "final": Rule("final_test_acc", "mean", "final test accuracy", ""),
    "last3_each": Rule("min_last3_test_acc", "min", "lowest of the last 3 epochs over seeds",
                       " in each of the last 3 epochs"),
    "last3_mean": Rule("mean_last3_test_acc", "mean", "mean of the last 3 epochs",
                       " mean of the last 3 epochs"),
    # a write-up that reports one run's curve: each of the last 3 epochs of the seed-averaged
    # curve must hold the bar
    "last3_seed_mean": Rule("min_last3_test_acc", "curve",
                            "lowest of the last 3 epochs, each averaged over seeds,",
                            " in each of the last 3 epochs, mean over seeds"),
}


@dataclass(frozen=True)
class Target:
    """One row of the results table: a recipe (at a batch size) and what it must reach."""
    recipe: str
    at_least: float | None = None        # None: the published figure itself
    batch_size: int | None = None        # None: the recipe's own
    published: float | None = None       # None: the recipe's `published` field
    published_text: str | None = None    # how the write-up states it, e.g. "> 0.80"
    rule: str = "final"                  # see RULES
    strict: bool = False                 # "above" the target rather than "at least"
    max_params: int | None = None        # the model must have fewer parameters than this
    seeds: tuple = (0, 1, 2)             # the seeds the row's command runs (and needs)

    def __post_init__(self):
        if self.rule not in RULES:
            raise ValueError(f"{self.key}: unknown rule {self.rule!r}; one of {', '.join(RULES)}")

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
        Target("mnist_5k", rule="last3_seed_mean", seeds=(0, 1, 2, 3, 4, 5)),
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


def all_targets() -> list:
    return [target for group in GROUPS for target in group.targets]


def load_notes(path: Path = NOTES_MD) -> dict[str, str]:
    """{row key: its note as one line}: each `## key` heading of NOTES.md and the paragraph under it."""
    notes, key, lines = {}, None, []
    for line in Path(path).read_text().splitlines() + ["## "]:
        if line.startswith("## "):
            if key:
                notes[key] = " ".join(lines).strip()
            key, lines = line[3:].strip(), []
        elif key:
            lines.append(line.strip())
    return notes
