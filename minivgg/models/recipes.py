"""Named training recipes: one per published result, plus our own that try to beat them.

A Recipe is a flat, JSON-able dataclass: everything `minivgg train` needs to reproduce a
run. Command-line flags override fields one by one (`Recipe.override`).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass


@dataclass(frozen=True)
class Recipe:
    name: str
    model: str
    dataset: str
    description: str = ""
    source: str = ""                  # the write-up it reproduces (seeds/...), or "ours"
    published: float | None = None    # published test accuracy, where there is one
    # optimisation
    optimizer: str = "sgd"            # sgd | adam | adamw
    lr: float = 0.01
    momentum: float = 0.0
    nesterov: bool = False
    weight_decay: float = 0.0
    betas: tuple = (0.9, 0.999)
    norm_lr_scale: float = 1.0        # LR multiplier of BatchNorm/LayerNorm parameters (same decay per step)
    # schedule: none | step | multistep | onecycle | cosine | inverse_time | triangle
    schedule: str = "none"
    step_size: int = 1                # StepLR period, in epochs
    gamma: float = 0.1                # StepLR / MultiStepLR factor
    milestones: tuple = ()            # MultiStepLR, in epochs
    max_lr: float | None = None       # OneCycleLR peak (default: lr)
    pct_start: float = 0.3
    div_factor: float = 25.0
    final_div_factor: float = 1e4
    anneal_strategy: str = "cos"
    decay: float = 0.0                # inverse_time (Keras' `decay`): lr / (1 + decay * iteration)
    end_factor: float = 0.0           # triangle: lr / div_factor up to lr at pct_start, down to lr * end_factor
    # Lookahead every N steps (0: off) from epoch lookahead_start; at step t of T it pulls the
    # slow weights 1 - lookahead_rho**N * (t / T)**lookahead_pow of the way to the fast ones
    lookahead: int = 0
    lookahead_start: int = 0
    lookahead_rho: float = 0.95
    lookahead_pow: float = 3.0
    # loop
    batch_size: int = 64
    drop_last: bool = False           # skip each epoch's last, smaller batch
    epochs: int | None = 15           # epoch-based run ...
    iters: int | None = None          # ... or iteration-based (then epochs is ignored)
    eval_every: int | None = None     # iteration-based: evaluate every N iterations (None: at the end)
    log_every: int = 100              # iteration-based: a log line every N iterations
    val_fraction: float = 0.0         # hold-out validation split from the training set
    patience: int | None = None       # early stopping on validation (or test) loss
    label_smoothing: float = 0.0
    grad_clip: float | None = None    # max global gradient norm
    ema: float | None = None          # weight EMA decay; evaluation uses the averaged weights
    tta_flip: bool = False            # average logits over the image and its mirror at test time
    tta_shift: int = 0                # ... and over it moved this many pixels left/right/up/down
    tta_translate: int = 0            # ... or diagonally, reflect-padded, with airbench's weights
    tta_final_only: bool = False      # TTA for the final score only; each epoch's curve point without
    whiten_images: int = 0            # set the first conv by patch whitening of this many training images
    whiten_eps: float = 5e-4
    train_epochs_of: tuple = ()       # (parameter name, N): trained in the first N epochs only
    augment: tuple = ()               # transforms, as dicts: {"name": "RandomRotation", "degrees": 7}
    augment_epochs: int | None = None # augment in the first N epochs only (None: in every epoch)
    seed: int = 0
    image_size: int | None = None     # image folders: resize to this side (None: the model's
                                      # fixed size, else the folder's most common side)

    def override(self, **changes) -> "Recipe":
        """A copy with the given fields changed; None values are ignored (a flag not given)."""
        return self.with_changes(**{k: v for k, v in changes.items() if v is not None})

    def with_changes(self, **changes) -> "Recipe":
        """A copy with fields set from JSON values (lists where the recipe keeps tuples), as a
        recipe file or `--set field=value` gives them. Unlike `override`, None sets a field to
        None (there it means "flag not given")."""
        unknown = sorted(set(changes) - {f.name for f in dataclasses.fields(self)})
        if unknown:
            raise ValueError(f"unknown recipe field(s) {unknown}; valid: "
                             f"{[f.name for f in dataclasses.fields(self)]}")
        d = self.to_dict()
        if changes.get("iters") is not None and "epochs" not in changes:
            d["epochs"] = None    # a length in iterations replaces one in epochs, and back
        if changes.get("epochs") is not None and "iters" not in changes:
            d["iters"] = None
        return Recipe.from_dict({**d, **changes})

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["betas"] = list(self.betas)
        d["milestones"] = list(self.milestones)
        d["augment"] = [dict(a) for a in self.augment]
        d["train_epochs_of"] = [list(pair) for pair in self.train_epochs_of]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "Recipe":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"recipe has unknown field(s) {unknown}")
        d = dict(d)
        d["betas"] = tuple(d.get("betas", (0.9, 0.999)))
        d["milestones"] = tuple(d.get("milestones", ()))
        d["augment"] = tuple(dict(a) for a in d.get("augment") or ())
        d["train_epochs_of"] = tuple((str(k), int(n)) for k, n in d.get("train_epochs_of", ()))
        return cls(**d)


# one resampling for rotation, shift and scale together (rotate-then-affine would blur twice)
MNIST_AFFINE = ({"name": "RandomAffine", "degrees": 7.0, "translate": (0.1, 0.1), "scale": (0.95, 1.05)},)
# lighter: no scaling, half the shift; chosen for mnist_5k and mnist_7k_plus2 on validation splits
MNIST_LIGHT_AFFINE = ({"name": "RandomAffine", "degrees": 5.0, "translate": (0.05, 0.05)},)
CIFAR_CROP_FLIP = ({"name": "RandomCrop", "size": 32, "padding": 4},
                   {"name": "RandomHorizontalFlip", "p": 0.5})
FASHION_CROP_FLIP = ({"name": "RandomCrop", "size": 28, "padding": 2},
                     {"name": "RandomHorizontalFlip", "p": 0.5})
# what our Fashion-MNIST and CIFAR-10 recipes share: Nesterov SGD to a OneCycle peak of 0.1 at
# batch 128, weight decay 5e-4, scored with flip test-time augmentation
_NESTEROV_ONECYCLE_01 = dict(source="ours", optimizer="sgd", lr=0.1, momentum=0.9, nesterov=True,
                             weight_decay=5e-4, schedule="onecycle", max_lr=0.1, batch_size=128,
                             tta_flip=True)

# named here because mnist_7k_plus3/plus4 and the two 15-epoch mnist_7k recipes derive from it
_MNIST_7K_PLUS2 = Recipe(
    "mnist_7k_plus2", "mnist_7k", "mnist",
    "ours: mnist_7k (7,304 params), Nesterov OneCycle (max 0.2), light affine augmentation, "
    "weight EMA, 30 epochs",
    source="ours", optimizer="sgd", lr=0.2, momentum=0.9, nesterov=True,
    schedule="onecycle", max_lr=0.2, pct_start=0.2, batch_size=64, epochs=30, ema=0.999,
    augment=MNIST_LIGHT_AFFINE)

_RECIPES = [
    # --- seeds/000: miniVGG from scratch, 1,000 iterations of Adam 3e-4 ---------------------
    Recipe("vgg_v1", "vgg_v1", "mnist", "vgg_v1, 1,000 iterations, Adam 3e-4 (sweep --batch-size 16/32/64)",
           source="seeds/000 step 1", published=0.8705, optimizer="adam", lr=3e-4,
           batch_size=64, epochs=None, iters=1000, log_every=100),
    Recipe("vgg_v2", "vgg_v2", "mnist", "vgg_v2 (BN + LayerNorm), 1,000 iterations, Adam 3e-4 "
           "(sweep --batch-size 16/32/64/128)",
           source="seeds/000 step 2", published=0.9309, optimizer="adam", lr=3e-4,
           batch_size=64, epochs=None, iters=1000, log_every=100),
    # --- seeds/001: MiniVGGNet on CIFAR-10 ------------------------------------------------------
    Recipe("minivggnet_cifar10", "minivggnet", "cifar10",
           "MiniVGGNet, SGD 0.01 momentum 0.9 Nesterov, Keras decay 0.01/40, batch 64, 40 epochs",
           source="seeds/001", published=0.80, optimizer="sgd", lr=0.01, momentum=0.9,
           nesterov=True, schedule="inverse_time", decay=0.01 / 40, batch_size=64, epochs=40),
    # --- seeds/002: MNIST under 8,000 parameters, 15 epochs -------------------------------------
    Recipe("mnist_8k_a", "mnist_8k_a", "mnist", "7,998 params, Adam 1e-4, 15 epochs",
           source="seeds/002 model 1", published=0.988, optimizer="adam", lr=1e-4,
           batch_size=64, epochs=15),
    Recipe("mnist_8k_b", "mnist_8k_b", "mnist", "7,936 params, SGD 0.01 momentum 0.1, 15 epochs",
           source="seeds/002 model 2", published=0.989, optimizer="sgd", lr=0.01, momentum=0.1,
           batch_size=64, epochs=15),
    # The write-up names OneCycle and "image augmentation" but not the peak LR or transforms:
    # ours were chosen on validation splits (BENCHMARKS.md, mnist_5k's note).
    Recipe("mnist_5k", "mnist_5k", "mnist",
           "5,178 params, SGD + OneCycle (max 0.2), light affine augmentation, 15 epochs",
           source="seeds/002 model 3", published=0.994, optimizer="sgd", lr=0.2, momentum=0.9,
           nesterov=True, schedule="onecycle", max_lr=0.2, pct_start=0.2, batch_size=64,
           epochs=15, augment=MNIST_LIGHT_AFFINE),
    # --- seeds/004: MNIST under 20,000 parameters, 12 epochs ------------------------------------
    Recipe("mnist_20k", "mnist_20k", "mnist",
           "~9.4k params, SGD 0.01 momentum 0.9, StepLR, rotation + affine, batch 64, 12 epochs",
           source="seeds/004", published=0.9941, optimizer="sgd", lr=0.01, momentum=0.9,
           schedule="step", step_size=6, gamma=0.1, batch_size=64, epochs=12, augment=MNIST_AFFINE),
    # --- seeds/003: Fashion-MNIST ---------------------------------------------------------------
    Recipe("lenet5_fashion", "lenet5", "fashion-mnist",
           "LeNet-5 variant, Adam 0.001, batch 64, early stopping (patience 10) on a validation split",
           source="seeds/003", published=0.907, optimizer="adam", lr=0.001, batch_size=64,
           epochs=40, patience=10, val_fraction=1 / 12),
    Recipe("minivgg_fashion", "minivgg_fashion", "fashion-mnist",
           "mini VGG, Adam 0.001, batch 64, early stopping (patience 10) on a validation split",
           source="seeds/003", published=0.922, optimizer="adam", lr=0.001, batch_size=64,
           epochs=40, patience=10, val_fraction=1 / 12),
    # --- ours: beating the published figures --------------------------------------------------
    Recipe("mnist_5k_plus", "mnist_5k", "mnist",
           "ours: mnist_5k with Nesterov OneCycle, rotation + affine, label smoothing, weight EMA",
           source="ours", optimizer="sgd", lr=0.08, momentum=0.9, nesterov=True,
           schedule="onecycle", max_lr=0.08, pct_start=0.25, batch_size=128, epochs=15,
           label_smoothing=0.05, ema=0.999, augment=MNIST_AFFINE),
    Recipe("mnist_8k_plus", "mnist_8k_b", "mnist",
           "ours: mnist_8k_b (7,936 params) with Nesterov OneCycle, rotation + affine, label smoothing, "
           "weight EMA",
           source="ours", optimizer="sgd", lr=0.08, momentum=0.9, nesterov=True,
           schedule="onecycle", max_lr=0.08, pct_start=0.25, batch_size=128, epochs=15,
           label_smoothing=0.05, ema=0.999, augment=MNIST_AFFINE),
    # mnist_7k at 30 epochs won a validation comparison against mnist_5k at 30 and mnist_7k at 20.
    Recipe("mnist_7k_plus", "mnist_7k", "mnist",
           "ours: mnist_7k (7,304 params), Nesterov OneCycle (max 0.1), affine augmentation, 30 epochs",
           source="ours", optimizer="sgd", lr=0.1, momentum=0.9, nesterov=True,
           schedule="onecycle", max_lr=0.1, pct_start=0.2, batch_size=64, epochs=30,
           augment=MNIST_AFFINE),
    # mnist_7k_plus underfit its augmentation: lighter affine, a higher peak LR and EMA won a
    # validation screen (BENCHMARKS.md, mnist_7k_plus2's note).
    _MNIST_7K_PLUS2,
    # The last 5 epochs, at the bottom of the OneCycle, train on the images as they are, so the
    # net fits the clean digits it is tested on.
    _MNIST_7K_PLUS2.override(
        name="mnist_7k_plus3",
        description="ours: mnist_7k_plus2 with augmentation off for the last 5 of its 30 epochs",
        augment_epochs=25),
    # Logits averaged over the image and the image moved 1 pixel each way (5 views): trained
    # with shifts, the net reads a digit slightly off centre as well as centred.
    _MNIST_7K_PLUS2.override(
        name="mnist_7k_plus4",
        description="ours: mnist_7k_plus2 with 1-pixel shift test-time augmentation",
        tta_shift=1),
    # mnist_7k_plus2 in the write-up's 15 epochs, to set our recipe beside the faithful mnist_5k.
    _MNIST_7K_PLUS2.override(
        name="mnist_7k_15ep", description="ours: mnist_7k_plus2 in the published 15 epochs",
        epochs=15),
    # mnist_7k_15ep scored with 1-pixel shift TTA, as mnist_7k_plus4 is mnist_7k_plus2.
    _MNIST_7K_PLUS2.override(
        name="mnist_7k_15ep_tta",
        description="ours: mnist_7k_15ep with 1-pixel shift test-time augmentation",
        epochs=15, tta_shift=1),
    # For time to 99.4% (benchmarks/time_to_accuracy.py): a larger batch trains faster per
    # image, and batch 128 with a higher peak won a validation screen at 8 epochs.
    Recipe("mnist_5k_fast", "mnist_5k", "mnist",
           "ours: mnist_5k in 8 epochs for time to accuracy, batch 128, OneCycle (max 0.3), "
           "light affine augmentation",
           source="ours", optimizer="sgd", lr=0.3, momentum=0.9, nesterov=True,
           schedule="onecycle", max_lr=0.3, pct_start=0.2, batch_size=128, epochs=8,
           augment=MNIST_LIGHT_AFFINE),
    Recipe("fashion_plus", "minivgg_fashion", "fashion-mnist",
           "ours: mini VGG with crop + flip, Nesterov OneCycle, label smoothing, flip TTA",
           **_NESTEROV_ONECYCLE_01, epochs=20, label_smoothing=0.1, augment=FASHION_CROP_FLIP),
    Recipe("cifar10_plus", "minivggnet", "cifar10",
           "ours: MiniVGGNet with crop + flip, Nesterov OneCycle, label smoothing, EMA, flip TTA",
           **_NESTEROV_ONECYCLE_01, epochs=30, label_smoothing=0.1, ema=0.999,
           augment=CIFAR_CROP_FLIP),
    # cifar10_plus underfit (train accuracy below test accuracy): lighter dropout, no label
    # smoothing, longer; reasoned from that train accuracy, not screened on validation.
    Recipe("cifar10_plus2", "minivggnet_light", "cifar10",
           "ours: MiniVGGNet with lighter dropout, crop + flip, Nesterov OneCycle, EMA, flip TTA, "
           "35 epochs",
           **_NESTEROV_ONECYCLE_01, epochs=35, ema=0.999, augment=CIFAR_CROP_FLIP),
    # fashion_plus underfit as cifar10_plus did: cifar10_plus2's changes, reasoned from its train
    # accuracy, not screened on validation.
    Recipe("fashion_plus2", "minivgg_fashion_light", "fashion-mnist",
           "ours: mini VGG with lighter dropout, crop + flip, Nesterov OneCycle, EMA, flip TTA, "
           "25 epochs",
           **_NESTEROV_ONECYCLE_01, epochs=25, ema=0.999, augment=FASHION_CROP_FLIP),
    # --- airbench94 (Jordan 2024, arXiv:2404.00498): fast CIFAR-10 training ----------------------
    # The paper's hyper-parameters, with lr and weight decay for a mean (not summed) batch loss;
    # 10 whole epochs where it stops at 9.9, since our loop counts epochs. Lookahead as its code:
    # from the start, fast steps kept across epochs, the run ending on the slow weights.
    Recipe("airbench94", "airbench94", "cifar10",
           "airbench94: patch whitening, identity init, Nesterov SGD + Lookahead, label smoothing "
           "0.2, alternating flip + 2-pixel translate, flip + translate TTA, batch 1024, 10 epochs",
           source="arXiv:2404.00498 (airbench94)", published=0.9401, optimizer="sgd", lr=1.5,
           momentum=0.85, nesterov=True, weight_decay=0.0153 / 11.5, norm_lr_scale=64.0,
           schedule="triangle", pct_start=0.23, div_factor=5.0, end_factor=0.07,
           batch_size=1024, drop_last=True, epochs=10, label_smoothing=0.2,
           lookahead=5, lookahead_start=0, lookahead_rho=0.95, lookahead_pow=3.0,
           tta_flip=True, tta_translate=1, tta_final_only=True, whiten_images=5000,
           whiten_eps=5e-4, train_epochs_of=(("0.bias", 3),),
           augment=({"name": "RandomCrop", "size": 32, "padding": 2, "padding_mode": "reflect"},
                    {"name": "AlternatingFlip"})),
]

RECIPES = {r.name: r for r in _RECIPES}
# The default run (README quickstart): the write-up's 99.4% in 12 epochs, a few minutes on a CPU.
DEFAULT_RECIPE = "mnist_20k"


class UnknownRecipeError(KeyError):
    def __str__(self):
        return self.args[0]


def get_recipe(name: str) -> Recipe:
    if name not in RECIPES:
        raise UnknownRecipeError(f"unknown recipe {name!r}; valid recipes: {', '.join(RECIPES)}")
    return RECIPES[name]
