"""Screen candidate recipes quickly in PyTorch, on a validation split, before paying for minivgg runs.

A candidate is a named recipe with some fields changed (and optionally zoo-model options such
as mnist_5k's `widths`). Each (candidate, seed) pair is trained by the PyTorch twin of the
recipe loop in time_to_accuracy.py: the same initial weights (minivgg.interop.to_torch), the
same minivgg DataLoader and augmentation, torch.optim with the recipe's optimizer, schedule,
label smoothing, clipping and weight EMA. It trains on the training set less a held-out
validation split (the recipe's val_fraction, 0.1 if it has none; the split depends on the
seed) and reports validation accuracy after every epoch. The test set is never loaded: a
recipe chosen here is then run by minivgg itself (benchmarks/accuracy.py), whose test figures
are the ones reported.

Runs go in parallel processes (--jobs), one BLAS/torch thread each, on --device (cuda when
a GPU is there: the point is to try many candidates in minutes). Usage:

    MINIVGG_DATA=../shared/datasets python benchmarks/screen_recipes.py \\
        benchmarks/screens/mnist_sub8k_1.json --seeds 0 1 --jobs 16 --device cuda --out runs/screen
    python benchmarks/screen_recipes.py FILE --limit-train 512 --seeds 0 --jobs 1   # smoke test
    python benchmarks/screen_recipes.py --summarize runs/screen     # the table, from the JSONs

The candidates file is a JSON list of {"name": ..., "recipe": ..., "set": {field: value},
"model_options": {option: value}, "eval_variants": {variant: {tta field: value}}}. An eval
variant scores the same trained weights once more under other test-time augmentation
(tta_flip, tta_shift) or with BatchNorm statistics re-measured for the scored (EMA) weights
on the first N training images (bn_images: N) every epoch: exactly paired with its
candidate, it shows up in the table as "candidate+variant". One JSON per run is written to
--out as it finishes (a run whose JSON is already there is not run again, so an interrupted
screen continues where it stopped), and a table sorted by the mean over seeds of the
last-3-epoch validation accuracy is printed.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

if __name__ == "__main__":
    for _name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[_name] = "1"     # one thread per run; parallelism comes from --jobs

import numpy as np  # noqa: E402

sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))


EVAL_VARIANT_FIELDS = {"tta_flip", "tta_shift", "bn_images"}


def load_candidates(path: Path) -> list[dict]:
    """The candidates file, checked: every entry names a known recipe and known fields."""
    from minivgg.experiment import validate_recipe
    from minivgg.models import build
    try:
        candidates = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise SystemExit(f"candidates file {path} does not exist")
    except json.JSONDecodeError as e:
        raise SystemExit(f"candidates file {path} is not valid JSON: {e}")
    if not isinstance(candidates, list) or not candidates:
        raise SystemExit(f"candidates file {path} must hold a non-empty JSON list")
    names = set()
    for i, c in enumerate(candidates):
        if not isinstance(c, dict) or "name" not in c or "recipe" not in c:
            raise SystemExit(f"candidate {i} in {path} needs at least \"name\" and \"recipe\"")
        if c["name"] in names:
            raise SystemExit(f"candidate name {c['name']!r} appears twice in {path}")
        names.add(c["name"])
        variants = c.get("eval_variants", {})
        if not isinstance(variants, dict) or any(
                not isinstance(v, dict) or set(v) - EVAL_VARIANT_FIELDS for v in variants.values()):
            raise SystemExit(f"candidate {c['name']!r} in {path}: eval_variants must map names to "
                             f"changes of {sorted(EVAL_VARIANT_FIELDS)} only (they re-score the "
                             f"trained weights; training changes go in \"set\")")
        try:
            recipe = make_recipe(c, seed=0)
            for v in variants.values():
                bn_images = v.get("bn_images", 1)
                if not isinstance(bn_images, int) or isinstance(bn_images, bool) or bn_images < 1:
                    raise ValueError(f"bn_images must be a positive number of training images, "
                                     f"got {bn_images!r}")
                validate_recipe(recipe.override(**_tta_changes(v)))
            build(recipe.model, dataset=recipe.dataset, **c.get("model_options", {}))
        except (KeyError, ValueError, TypeError) as e:
            raise SystemExit(f"candidate {c['name']!r} in {path}: {e}")
    return candidates


def _tta_changes(variant: dict) -> dict:
    return {k: v for k, v in variant.items() if k != "bn_images"}


@contextlib.contextmanager
def remeasured_torch_batch_norm(torch, model, images, normalize, device):
    """Inside the block every BatchNorm's running statistics are those of one train-mode forward
    pass over `images` (uint8), as benchmarks/ema_bn_probe.py does in minivgg. On exit the
    statistics, the momenta and torch's RNG (dropout) are as before, so training is unchanged."""
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    saved = [(m.momentum, {k: b.clone() for k, b in m.named_buffers()}) for m in norms]
    rng = torch.get_rng_state()
    cuda_rng = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
    mean = np.asarray(normalize[0], np.float32).reshape(1, -1, 1, 1)
    std = np.asarray(normalize[1], np.float32).reshape(1, -1, 1, 1)
    x = torch.from_numpy(np.ascontiguousarray((images.astype(np.float32) / 255.0 - mean) / std))
    try:
        for m in norms:
            m.momentum = 1.0
        model.train()
        with torch.no_grad():
            model(x.to(device))
        yield
    finally:
        with torch.no_grad():
            for m, (momentum, buffers) in zip(norms, saved):
                m.momentum = momentum
                for k, b in m.named_buffers():
                    b.copy_(buffers[k])
        torch.set_rng_state(rng)
        if cuda_rng is not None:
            torch.cuda.set_rng_state_all(cuda_rng)


def make_recipe(candidate: dict, seed: int):
    from minivgg.models import get_recipe
    changes = dict(candidate.get("set", {}))
    for key in ("betas", "milestones"):
        if isinstance(changes.get(key), list):
            changes[key] = tuple(changes[key])
    if "augment" in changes:
        changes["augment"] = tuple(dict(a) for a in changes["augment"])
    recipe = get_recipe(candidate["recipe"]).override(**changes, seed=seed)
    if recipe.val_fraction <= 0:
        recipe = recipe.override(val_fraction=0.1)
    if recipe.iters:
        raise ValueError("screening needs an epoch-based recipe")
    return recipe


def train_one(job: tuple) -> dict:
    """Train one (candidate, seed) in PyTorch on the train part of the split; validate each epoch."""
    candidate, seed, data_dir, device, limit_train, progress = job
    import torch
    from minivgg.data import get_dataset_info, load_dataset, train_val_split
    from minivgg.experiment import make_train_loader
    from minivgg.interop import to_torch
    from minivgg.models import build
    from time_to_accuracy import (TorchEMA, torch_evaluate, torch_optimizer, torch_scheduler,
                                  torch_train_epoch, with_ema_weights)

    torch.set_num_threads(1)
    torch.manual_seed(seed)  # dropout draws from torch's RNG: unseeded, no two runs would agree
    recipe = make_recipe(candidate, seed)
    info = get_dataset_info(recipe.dataset)
    images, labels = load_dataset(recipe.dataset, "train", data_dir=data_dir)
    if limit_train:
        images, labels = images[:limit_train], labels[:limit_train]
    (train_x, train_y), (val_x, val_y) = train_val_split(images, labels,
                                                         val_fraction=recipe.val_fraction, seed=seed)
    c, h, _ = info.shape
    net = build(recipe.model, in_channels=c, num_classes=len(info.classes), image_size=h, seed=seed,
                **candidate.get("model_options", {}))
    parameters = net.num_parameters()
    model = to_torch(net).to(device)
    model.train()
    normalize = (info.mean, info.std)
    loader = make_train_loader(recipe, train_x, train_y, normalize)
    optimizer = torch_optimizer(torch, recipe, model.parameters())
    scheduler, per_batch = torch_scheduler(torch, recipe, optimizer, len(loader))
    ema = TorchEMA(torch, model, recipe.ema) if recipe.ema else None
    epochs, start = [], time.perf_counter()
    for epoch in range(1, recipe.epochs + 1):
        train_loss, train_acc = torch_train_epoch(torch, model, loader, optimizer, scheduler,
                                                  per_batch, ema, recipe, device)
        if not math.isfinite(train_loss):
            raise RuntimeError(f"{candidate['name']} seed {seed}: the loss became {train_loss} "
                               f"in epoch {epoch}")
        def validate(r, bn_images=0):
            def score():
                with (remeasured_torch_batch_norm(torch, model, train_x[:bn_images], normalize,
                                                  device) if bn_images else contextlib.nullcontext()):
                    return torch_evaluate(torch, model, val_x, val_y, normalize, r.tta_flip,
                                          device, batch_size=2000, tta_shift=r.tta_shift)
            return with_ema_weights(model, ema, score)

        val_acc, val_loss = validate(recipe)
        variants = {name: validate(recipe.override(**_tta_changes(v)), v.get("bn_images", 0))[0]
                    for name, v in candidate.get("eval_variants", {}).items()}
        epochs.append({"epoch": epoch, "train_loss": train_loss, "train_acc": train_acc,
                       "val_loss": val_loss, "val_acc": val_acc,
                       "elapsed_s": time.perf_counter() - start,
                       **({"variant_val_acc": variants} if variants else {})})
        if progress:
            print(f"  {candidate['name']} seed {seed} epoch {epoch}/{recipe.epochs}: train acc "
                  f"{epochs[-1]['train_acc']:.4f}, val acc {val_acc:.4f} "
                  f"({epochs[-1]['elapsed_s']:.0f}s)", flush=True)
    last3 = [e["val_acc"] for e in epochs[-3:]]
    return {"candidate": candidate, "seed": seed, "recipe": recipe.to_dict(), "parameters": parameters,
            "device": str(device), "train_images": int(len(train_y)), "val_images": int(len(val_y)),
            "epochs": epochs, "final_val_acc": epochs[-1]["val_acc"],
            "last3_val_acc": float(np.mean(last3)), "wall_s": time.perf_counter() - start}


def with_variants(results: list[dict]) -> list[dict]:
    """The results plus, for each eval variant, the same run as scored under it."""
    out = list(results)
    for r in results:
        for variant in r["epochs"][-1].get("variant_val_acc", {}):
            epochs = [dict(e, val_acc=e["variant_val_acc"][variant]) for e in r["epochs"]]
            out.append(dict(r, candidate=dict(r["candidate"], name=f"{r['candidate']['name']}+{variant}"),
                            epochs=epochs, final_val_acc=epochs[-1]["val_acc"],
                            last3_val_acc=float(np.mean([e["val_acc"] for e in epochs[-3:]]))))
    return out


def summarize(results: list[dict]) -> str:
    """One row per candidate (and eval variant), best mean last-3 validation accuracy first."""
    by_name: dict[str, list[dict]] = {}
    for r in with_variants(results):
        by_name.setdefault(r["candidate"]["name"], []).append(r)
    rows = []
    for name, runs in by_name.items():
        runs.sort(key=lambda r: r["seed"])
        last3 = [r["last3_val_acc"] for r in runs]
        rows.append((float(np.mean(last3)), name, runs))
    rows.sort(key=lambda row: -row[0])
    lines = ["| candidate | params | epochs | seeds | val acc, mean of last 3 (mean ± sd) | per seed | "
             "final train acc | minutes per run |",
             "|---|---|---|---|---|---|---|---|"]
    for mean, name, runs in rows:
        last3 = [r["last3_val_acc"] for r in runs]
        sd = float(np.std(last3, ddof=1)) if len(last3) > 1 else 0.0
        lines.append(f"| {name} | {runs[0]['parameters']:,} | {len(runs[0]['epochs'])} | "
                     f"{' '.join(str(r['seed']) for r in runs)} | {mean:.4f} ± {sd:.4f} | "
                     f"{' / '.join(f'{v:.4f}' for v in last3)} | "
                     f"{np.mean([r['epochs'][-1]['train_acc'] for r in runs]):.4f} | "
                     f"{np.mean([r['wall_s'] for r in runs]) / 60:.1f} |")
    return "\n".join(lines)


def result_path(folder: Path, name: str, seed: int) -> Path:
    return Path(folder) / f"{name}-s{seed}.json"


def read_results(folder: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(Path(folder).glob("*.json"))]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("candidates", nargs="?", type=Path, help="JSON list of candidates")
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--jobs", type=int, default=1, help="parallel runs (one thread each)")
    p.add_argument("--device", default="cpu", help="torch device: cpu or cuda (default cpu)")
    p.add_argument("--data-dir", help="default $MINIVGG_DATA")
    p.add_argument("--limit-train", type=int, help="only the first N training images (smoke tests)")
    p.add_argument("--out", type=Path, default=Path("runs/screen"))
    p.add_argument("--progress", action="store_true", help="a line per run per epoch")
    p.add_argument("--summarize", type=Path, metavar="DIR", help="print the table of DIR's JSONs and stop")
    args = p.parse_args(argv)
    if args.summarize:
        results = read_results(args.summarize)
        if not results:
            raise SystemExit(f"no screening results (*.json) in {args.summarize}")
        print(summarize(results))
        return 0
    if args.candidates is None:
        raise SystemExit("give a candidates file (or --summarize DIR)")
    candidates = load_candidates(args.candidates)
    args.out.mkdir(parents=True, exist_ok=True)
    pairs = [(c, seed) for seed in args.seeds for c in candidates]
    done = [(c, seed) for c, seed in pairs if result_path(args.out, c["name"], seed).exists()]
    jobs = [(c, seed, args.data_dir, args.device, args.limit_train, args.progress)
            for c, seed in pairs if (c, seed) not in done]
    print(f"{len(jobs)} runs ({len(candidates)} candidates x {len(args.seeds)} seeds"
          + (f", less {len(done)} already in {args.out}" if done else "")
          + f"), {args.jobs} at a time on {args.device}", flush=True)
    results = [json.loads(result_path(args.out, c["name"], seed).read_text()) for c, seed in done]

    def record(result):
        path = result_path(args.out, result["candidate"]["name"], result["seed"])
        path.write_text(json.dumps(result, indent=1) + "\n")
        results.append(result)
        print(f"{result['candidate']['name']} seed {result['seed']}: val acc last 3 "
              f"{result['last3_val_acc']:.4f}, final {result['final_val_acc']:.4f} "
              f"({result['wall_s']:.0f}s)", flush=True)

    if args.jobs == 1:
        for job in jobs:
            record(train_one(job))
    else:
        import multiprocessing
        import signal
        # SIGTERM (kill, a timeout) would end this process alone and leave the workers training;
        # as SystemExit it leaves the with-block, whose exit terminates them.
        signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
        with multiprocessing.get_context("spawn").Pool(args.jobs, maxtasksperchild=1) as pool:
            for result in pool.imap_unordered(train_one, jobs):
                record(result)
    print(summarize(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
