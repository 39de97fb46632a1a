"""Recipe search: a search space over a base recipe's fields, scored on a validation split.

A sweep spec (JSON, or YAML with PyYAML) names a base recipe, fixed changes to it, a search
space over recipe fields, the number of trials, the seeds each trial trains, and the budget:

    {"name": "mnist_5k_lr", "recipe": "mnist_5k", "set": {"batch_size": 128},
     "space": {"max_lr": {"low": 0.05, "high": 0.5, "log": true},
               "epochs": {"choices": [3, 5, 8]}, "augment.0.degrees": {"low": 0, "high": 10}},
     "trials": 10, "seeds": [0, 1, 2], "val_fraction": 0.1, "train_images": 20000,
     "timeout_s": 3600, "pruner": "median", "sampler_seed": 0}

`choices` lists scalars, or maps labels to any JSON value (whole augmentation lists, as in
{"augment": {"choices": {"none": [], "light": [{"name": "RandomAffine", "degrees": 5.0}]}}});
`low`/`high` (with `log`, `step`) is a range, whole numbers for whole-number fields.
`augment.I.KEY` sets one argument of the base recipe's I-th transform. A trial trains its recipe once per seed on
the first `train_images` training images less a `val_fraction` validation split (it depends
on the seed); its score is the final validation accuracy, mean over seeds. The test set is
never loaded. The first seed's epochs are reported as they finish, as the share of the trial's
schedule done (so that trials of different lengths are compared at the same point), and weak
trials are pruned (Optuna's median pruner here, ASHA on Ray) before the other seeds train.

On one machine (`run_sweep`) the study lives in an Optuna journal file in the output folder,
and N worker processes share it, each with its share of the CPU threads. A sweep stopped by
Ctrl-C or a crash continues when the same command runs again: finished trials are kept, an
interrupted one is asked again with the same parameters in the same folder, where its
finished seeds are kept and an unfinished one resumes from its last epoch checkpoint. Across
machines (`run_sweep(..., ray_address=...)`) Ray Tune runs the trials, with Optuna's sampler
through OptunaSearch and ASHA pruning. Either way the folder ends with trials.json / .csv /
.md (the table), best_recipe.json (`minivgg train --recipe-file`), plots, and one run
directory per trial and seed under trials/.
"""
from __future__ import annotations

import contextlib
import csv
import dataclasses
import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from .fsutil import atomic_write_path
from .models import Recipe, get_recipe
from .train import Callback

SPEC_KEYS = {"name", "recipe", "set", "space", "trials", "seeds", "val_fraction", "train_images",
             "timeout_s", "pruner", "sampler_seed"}
PRUNERS = ("median", "none")
TRANSFORM_LIST_FIELDS = ("augment",)
_THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS")
_BUDGET_KEYS = {"trials", "timeout_s"}   # may change between runs of the same sweep


class SweepError(ValueError):
    """A bad spec, a missing engine, or an output folder that belongs to another sweep."""


class _Pruned(Exception):
    """Raised through the Trainer when the engine prunes a trial."""


def require(module: str, extra: str):
    """Import an optional engine, or say in one line how to install it."""
    import importlib
    try:
        return importlib.import_module(module)
    except ImportError:
        raise SweepError(f"this needs {module.split('.')[0]}, which is not installed: "
                         f"pip install 'minivgg[{extra}]'") from None


# ---- the spec ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Param:
    """One dimension of the search space."""
    name: str
    choices: tuple = ()          # scalars, or labels of `values`
    values: dict | None = None   # label -> value, for labelled choices
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    integer: bool = False

    def distribution(self):
        optuna = require("optuna", "sweep")
        d = optuna.distributions
        if self.choices:
            return d.CategoricalDistribution(list(self.choices))
        if self.integer:
            return d.IntDistribution(int(self.low), int(self.high), log=self.log, step=int(self.step or 1))
        return d.FloatDistribution(float(self.low), float(self.high), log=self.log, step=self.step)

    def value(self, suggested):
        """The recipe value for what the sampler suggested (a label becomes its value)."""
        return self.values[suggested] if self.values is not None else suggested

    def corners(self) -> list:
        """Suggestions that between them reach every edge of this dimension."""
        return list(self.choices) if self.choices else [self.low, self.high]


@dataclass(frozen=True)
class SweepSpec:
    name: str
    recipe: Recipe               # the base recipe with `set` applied
    space: tuple                 # of Param
    trials: int
    seeds: tuple
    val_fraction: float
    train_images: int | None = None
    timeout_s: float | None = None
    pruner: str = "median"
    sampler_seed: int = 0
    raw: dict = field(default_factory=dict, compare=False)

    def params(self) -> dict:
        return {p.name: p for p in self.space}

    def distributions(self) -> dict:
        return {p.name: p.distribution() for p in self.space}

    def trial_recipe(self, suggested: dict) -> Recipe:
        """The base recipe with a trial's suggestions applied (labels turned into values)."""
        params = self.params()
        unknown = sorted(set(suggested) - set(params))
        if unknown:
            raise SweepError(f"sweep {self.name!r}: parameter(s) {unknown} are not in its space")
        return apply_changes(self.recipe, {k: params[k].value(v) for k, v in suggested.items()})

    def best_recipe(self, suggested: dict, value: float) -> Recipe:
        """The recipe a user trains after the sweep: no sweep split, its own seed and name."""
        recipe = self.trial_recipe(suggested)
        shown = ", ".join(f"{k}={_short(v)}" for k, v in suggested.items())
        return recipe.override(
            name=f"{self.name}_best", source=f"minivgg sweep {self.name}",
            description=f"{self.recipe.name} with {shown}: best of sweep {self.name} "
                        f"(mean validation accuracy {value:.4f} over seeds {list(self.seeds)})",
            val_fraction=self.raw_base().val_fraction, seed=0)

    def raw_base(self) -> Recipe:
        """The base recipe with `set` applied, before the sweep's validation split."""
        return apply_changes(_base_recipe(self.raw["recipe"]), dict(self.raw.get("set", {})))


def _short(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def load_spec(path) -> SweepSpec:
    """Read and check a sweep spec file (.json, or .yaml/.yml with PyYAML)."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise SweepError(f"sweep spec {path} does not exist") from None
    except IsADirectoryError:
        raise SweepError(f"sweep spec {path} is a directory; give a .json or .yaml file") from None
    if path.suffix.lower() in (".yaml", ".yml"):
        try:
            import yaml
        except ImportError:
            raise SweepError(f"{path}: YAML specs need PyYAML: pip install 'minivgg[sweep]' (or "
                             f"write the spec as JSON)") from None
        try:
            raw = yaml.safe_load(text)
        except yaml.YAMLError as e:
            raise SweepError(f"sweep spec {path} is not valid YAML: {e}") from None
    else:
        try:
            raw = json.loads(text)
        except json.JSONDecodeError as e:
            raise SweepError(f"sweep spec {path} is not valid JSON: {e}") from None
    if isinstance(raw, dict) and "name" not in raw:
        raw = dict(raw, name=path.stem)
    return parse_spec(raw, where=str(path))


def parse_spec(raw, where: str = "sweep spec") -> SweepSpec:
    """Check a spec given as a dict; every problem names the key it is about."""
    if not isinstance(raw, dict):
        raise SweepError(f"{where}: a sweep spec is a mapping of keys such as \"recipe\" and \"space\"")
    unknown = sorted(set(raw) - SPEC_KEYS)
    if unknown:
        raise SweepError(f"{where}: unknown key(s) {unknown}; valid: {sorted(SPEC_KEYS)}")
    for key in ("recipe", "space"):
        if key not in raw:
            raise SweepError(f"{where}: \"{key}\" is missing")
    name = raw.get("name", "sweep")
    if not isinstance(name, str) or not name or any(c in name for c in "/\\\0") or name.startswith("."):
        raise SweepError(f"{where}: \"name\" must be a plain folder-safe name, got {name!r}")
    try:
        base = _base_recipe(raw["recipe"])
    except (KeyError, ValueError, OSError) as e:
        raise SweepError(f"{where}: \"recipe\": {e.args[0] if isinstance(e, KeyError) else e}") from None
    fixed = raw.get("set", {})
    if not isinstance(fixed, dict):
        raise SweepError(f"{where}: \"set\" must map recipe fields to values")
    for key, value in fixed.items():
        _check_value(key, value, base, f"{where}: \"set\"")
    base = apply_changes(base, fixed)
    trials = _whole(raw.get("trials", 10), "trials", where, minimum=1)
    seeds = raw.get("seeds", 1)
    if isinstance(seeds, int) and not isinstance(seeds, bool):
        seeds = list(range(_whole(seeds, "seeds", where, minimum=1)))
    if (not isinstance(seeds, list) or not seeds
            or any(not isinstance(s, int) or isinstance(s, bool) or s < 0 for s in seeds)
            or len(set(seeds)) != len(seeds)):
        raise SweepError(f"{where}: \"seeds\" must be a count or a list of distinct whole numbers "
                         f"0 or more, got {raw.get('seeds')!r}")
    val_fraction = raw.get("val_fraction", base.val_fraction or 0.1)
    if not isinstance(val_fraction, (int, float)) or isinstance(val_fraction, bool) \
            or not 0 < val_fraction < 1:
        raise SweepError(f"{where}: \"val_fraction\" must be a number between 0 and 1 (the sweep "
                         f"scores on a validation split, never the test set), got {val_fraction!r}")
    train_images = raw.get("train_images")
    if train_images is not None:
        train_images = _whole(train_images, "train_images", where, minimum=20)
    timeout_s = raw.get("timeout_s")
    if timeout_s is not None and (not isinstance(timeout_s, (int, float)) or isinstance(timeout_s, bool)
                                  or timeout_s <= 0):
        raise SweepError(f"{where}: \"timeout_s\" must be a positive number of seconds, got {timeout_s!r}")
    pruner = raw.get("pruner", "median")
    if pruner not in PRUNERS:
        raise SweepError(f"{where}: \"pruner\" must be one of {list(PRUNERS)}, got {pruner!r}")
    sampler_seed = _whole(raw.get("sampler_seed", 0), "sampler_seed", where, minimum=0)
    space = raw["space"]
    if not isinstance(space, dict) or not space:
        raise SweepError(f"{where}: \"space\" must map recipe fields to choices or ranges, and name "
                         f"at least one")
    params = tuple(_parse_param(key, value, base, f"{where}: \"space\"") for key, value in space.items())
    _check_overlaps([p.name for p in params], list(fixed), where)
    recipe = base.override(val_fraction=float(val_fraction))
    spec = SweepSpec(name, recipe, params, trials, tuple(seeds), float(val_fraction), train_images,
                     timeout_s, pruner, sampler_seed, raw=json.loads(json.dumps(raw)))
    _check_corners(spec, where)
    return spec


def _whole(value, key, where, minimum):
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise SweepError(f"{where}: \"{key}\" must be a whole number, at least {minimum}; got {value!r}")
    return value


def _base_recipe(name_or_file) -> Recipe:
    if not isinstance(name_or_file, str):
        raise ValueError(f"expected a recipe name or a recipe .json file, got {name_or_file!r}")
    if name_or_file.endswith(".json"):
        return load_recipe_file(name_or_file)
    return get_recipe(name_or_file)


def load_recipe_file(path) -> Recipe:
    """A recipe saved as JSON (Recipe.to_dict), such as a sweep's best_recipe.json."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise ValueError(f"recipe file {path} does not exist") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"recipe file {path} is not valid JSON: {e}") from None
    if not isinstance(data, dict) or not {"name", "model", "dataset"} <= set(data):
        raise ValueError(f"recipe file {path} must hold a recipe: a JSON object with at least "
                         f"\"name\", \"model\" and \"dataset\"")
    try:
        recipe = Recipe.from_dict(data)
    except (TypeError, ValueError) as e:
        raise ValueError(f"recipe file {path}: {e}") from None
    for key, value in data.items():
        _check_value(key, value, recipe, f"recipe file {path}")
    return recipe


def _field_kind(name: str) -> str:
    """'int', 'float', 'bool', 'str' or 'list' for a Recipe field, from its annotation."""
    annotation = {f.name: str(f.type) for f in dataclasses.fields(Recipe)}[name]
    for kind in ("bool", "float", "int", "str"):
        if annotation.startswith(kind):
            return kind
    return "list"


def _nullable(name: str) -> bool:
    return "None" in {f.name: str(f.type) for f in dataclasses.fields(Recipe)}[name]


def _check_value(key, value, base: Recipe, where: str) -> None:
    """Is `value` of the right type for the field (or transform argument) `key`?"""
    fields = {f.name for f in dataclasses.fields(Recipe)}
    if "." in key:
        _split_transform_key(key, base, where)
        if not (isinstance(value, (int, float, str, list)) and not isinstance(value, bool)):
            raise SweepError(f"{where}: {key}: expected a number, string or list, got {value!r}")
        return
    if key not in fields:
        raise SweepError(f"{where}: unknown recipe field {key!r}; valid: {sorted(fields)}")
    if value is None and _nullable(key):
        return
    kind = _field_kind(key)
    ok = {"bool": lambda v: isinstance(v, bool),
          "int": lambda v: isinstance(v, int) and not isinstance(v, bool),
          "float": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
          "str": lambda v: isinstance(v, str),
          "list": lambda v: isinstance(v, (list, tuple))}[kind]
    if not ok(value):
        raise SweepError(f"{where}: {key} takes a {'list' if kind == 'list' else kind}"
                         f"{' or null' if _nullable(key) else ''}, got {value!r}")


def _split_transform_key(key: str, base: Recipe, where: str):
    parts = key.split(".")
    if len(parts) != 3 or parts[0] not in TRANSFORM_LIST_FIELDS or not parts[1].isdigit():
        raise SweepError(f"{where}: {key!r} is not a recipe field; a transform's argument is "
                         f"written augment.INDEX.ARGUMENT, e.g. augment.0.degrees")
    index = int(parts[1])
    transforms = getattr(base, parts[0])
    if index >= len(transforms):
        raise SweepError(f"{where}: {key!r}: the base recipe has {len(transforms)} transform(s) "
                         f"in {parts[0]}, so there is no index {index}")
    return parts[0], index, parts[2]


def apply_changes(recipe: Recipe, changes: dict) -> Recipe:
    """`recipe` with fields (and augment.I.KEY transform arguments) changed; lists become the
    tuples a Recipe holds."""
    plain, nested = {}, {}
    for key, value in changes.items():
        (nested if "." in key else plain)[key] = value
    recipe = recipe.with_changes(**plain)   # None sets a field to None, as a sweep may want
    for key, value in nested.items():
        name, index, argument = _split_transform_key(key, recipe, "recipe change")
        transforms = [dict(t) for t in getattr(recipe, name)]
        transforms[index][argument] = tuple(value) if isinstance(value, list) else value
        recipe = dataclasses.replace(recipe, **{name: tuple(transforms)})
    return recipe


def _parse_param(key: str, value, base: Recipe, where: str) -> Param:
    if not isinstance(value, dict):
        raise SweepError(f"{where}: {key}: give {{\"choices\": [...]}} or {{\"low\": .., \"high\": ..}}, "
                         f"got {value!r}")
    if key in ("name", "seed", "val_fraction"):
        raise SweepError(f"{where}: {key} cannot be searched (the sweep sets it)")
    if "." in key:
        _split_transform_key(key, base, where)
    elif key not in {f.name for f in dataclasses.fields(Recipe)}:
        raise SweepError(f"{where}: unknown recipe field {key!r}; valid: "
                         f"{sorted(f.name for f in dataclasses.fields(Recipe))}")
    if "choices" in value:
        extra = sorted(set(value) - {"choices"})
        if extra:
            raise SweepError(f"{where}: {key}: choices take no {extra}")
        choices = value["choices"]
        if isinstance(choices, dict):
            if not choices:
                raise SweepError(f"{where}: {key}: \"choices\" is empty")
            for label, v in choices.items():
                _check_value(key, v, base, f"{where}: {key} choice {label!r}")
            return Param(key, tuple(choices), values=dict(choices))
        if not isinstance(choices, list) or not choices:
            raise SweepError(f"{where}: {key}: \"choices\" must be a non-empty list, or a mapping of "
                             f"labels to values")
        if len(set(map(json.dumps, choices))) != len(choices):
            raise SweepError(f"{where}: {key}: \"choices\" lists a value twice")
        for v in choices:
            if isinstance(v, (list, dict)):
                raise SweepError(f"{where}: {key}: a choice that is a list or a mapping needs a "
                                 f"label: give \"choices\" as {{\"label\": value, ...}}")
            _check_value(key, v, base, where)
        return Param(key, tuple(choices))
    if "low" not in value or "high" not in value:
        raise SweepError(f"{where}: {key}: a range needs both \"low\" and \"high\" (or give \"choices\")")
    extra = sorted(set(value) - {"low", "high", "log", "step"})
    if extra:
        raise SweepError(f"{where}: {key}: unknown range key(s) {extra}; valid: low, high, log, step")
    low, high, log, step = value["low"], value["high"], value.get("log", False), value.get("step")
    number = (int, float)
    if any(not isinstance(v, number) or isinstance(v, bool) for v in (low, high)):
        raise SweepError(f"{where}: {key}: \"low\" and \"high\" must be numbers, got {low!r} and {high!r}")
    kind = "float" if "." in key else _field_kind(key)
    if kind not in ("int", "float"):
        raise SweepError(f"{where}: {key} is a {kind} field; search it with \"choices\", not a range")
    if not low < high:
        raise SweepError(f"{where}: {key}: \"low\" must be below \"high\", got {low} and {high}")
    if not isinstance(log, bool):
        raise SweepError(f"{where}: {key}: \"log\" must be true or false, got {log!r}")
    if log and low <= 0:
        raise SweepError(f"{where}: {key}: a log range needs \"low\" above 0, got {low}")
    if step is not None and (not isinstance(step, number) or isinstance(step, bool) or step <= 0):
        raise SweepError(f"{where}: {key}: \"step\" must be a positive number, got {step!r}")
    if step is not None and log:
        raise SweepError(f"{where}: {key}: give \"log\" or \"step\", not both")
    integer = kind == "int"
    if integer and (not isinstance(low, int) or not isinstance(high, int)
                    or (step is not None and not isinstance(step, int))):
        raise SweepError(f"{where}: {key} is a whole-number field; \"low\", \"high\" and \"step\" "
                         f"must be whole numbers, got {low!r}, {high!r}, {step!r}")
    return Param(key, low=low, high=high, log=log, step=step, integer=integer)


def _check_overlaps(searched: list, fixed: list, where: str) -> None:
    for key in searched:
        if key in fixed:
            raise SweepError(f"{where}: {key} is both searched (\"space\") and fixed (\"set\")")
        root = key.split(".")[0]
        if "." in key and root in searched:
            raise SweepError(f"{where}: {key} and {root} are both searched; search one of them")


def _check_corners(spec: SweepSpec, where: str) -> None:
    """Every choice and range end must make a recipe that trains: find a bad one now, not in
    the middle of the sweep."""
    from .experiment import make_transform, validate_recipe
    from .models import get_model_spec
    from .data import get_dataset_info
    first = {p.name: p.corners()[0] for p in spec.space}
    for p in spec.space:
        for corner in p.corners():
            suggested = dict(first, **{p.name: corner})
            try:
                recipe = spec.trial_recipe(suggested)
                validate_recipe(recipe)
                make_transform(recipe)
                get_model_spec(recipe.model)
                get_dataset_info(recipe.dataset)
            except (KeyError, ValueError, TypeError) as e:
                message = e.args[0] if isinstance(e, KeyError) and e.args else str(e)
                raise SweepError(f"{where}: {p.name} = {_short(corner)}: {message}") from None
            if recipe.iters is not None:
                raise SweepError(f"{where}: the sweep needs an epoch-based recipe (it prunes on "
                                 f"validation accuracy after each epoch); {recipe.name} runs "
                                 f"{recipe.iters} iterations: set \"epochs\"")


# ---- one trial ----------------------------------------------------------------------------------
class _Reporter(Callback):
    """A Trainer callback that hands each epoch's validation accuracy to the engine, which may
    prune the trial (`report` None: nothing to report), and stops the sweep on a Ctrl-C that
    came after the last step, which the Trainer's loop no longer sees."""

    def __init__(self, report=None, epochs: int = 1):
        self.report, self.epochs = report, epochs

    def on_epoch_end(self, trainer, record):
        if self.report is None:
            return
        # as a share of the schedule, so that trials of different lengths (epochs may be
        # searched) are compared at the same point of their learning-rate schedules
        progress = round(100 * record["epoch"] / self.epochs)
        if self.report(progress, record["val_acc"]):
            raise _Pruned(f"pruned at {progress}% of its schedule (epoch {record['epoch']} "
                          f"of {self.epochs})")

    def on_train_end(self, trainer):
        from .train import TrainingInterrupted
        if getattr(trainer, "stop_requested", False):
            raise TrainingInterrupted(f"interrupted after the last epoch ({trainer.state.epoch}); "
                                      f"its checkpoint holds the finished run")

    def on_interrupt(self, trainer): ...

    def on_diverged(self, trainer): ...


def run_trial(spec: SweepSpec, suggested: dict, trial_dir: Path, report=None, data_dir=None,
              progress=False, on_seed=None) -> dict:
    """Train a trial's recipe for every seed (in trial_dir/seedS/); `report(progress, val_acc)`
    is called after each epoch of the first seed, progress being the percentage of its epochs
    done, and returns True to prune (raises _Pruned).

    A seed whose run finished before is not trained again; one that stopped part-way resumes
    from its checkpoint. Returns {"val_acc": mean, "seed_val_acc": {seed: acc}, "time_s": s}."""
    from .experiment import run_recipe
    recipe = spec.trial_recipe(suggested)
    accs, times = {}, {}
    for i, seed in enumerate(spec.seeds):
        seed_dir = Path(trial_dir) / f"seed{seed}"
        done = _finished_run(seed_dir)
        if done is None:
            callbacks = [_Reporter(report if i == 0 else None, recipe.epochs)]
            kwargs = dict(data_dir=data_dir, progress=progress, echo=False, test_set=False,
                          train_subset=spec.train_images, callbacks=callbacks)
            resume = _resume_checkpoint(seed_dir)
            if resume is not None:
                run_recipe(None, resume=resume, **kwargs)
            else:
                run_recipe(recipe.override(seed=seed, name=f"{spec.name}-{Path(trial_dir).name}-s{seed}"),
                           out=seed_dir, **kwargs)
            done = _finished_run(seed_dir)
        accs[seed] = done["history"][-1]["val_acc"]
        times[seed] = done["wall_time_s"]
        if on_seed is not None:
            on_seed(accs, times)
    return {"val_acc": sum(accs.values()) / len(accs), "seed_val_acc": accs,
            "time_s": round(sum(times.values()), 1)}


def _run_dirs(seed_dir: Path) -> list:
    return sorted(p for p in seed_dir.glob("*") if p.is_dir()) if seed_dir.is_dir() else []


def _finished_run(seed_dir: Path) -> dict | None:
    for run in reversed(_run_dirs(seed_dir)):
        if (run / "results.json").exists():
            return json.loads((run / "results.json").read_text())
    return None


def _resume_checkpoint(seed_dir: Path) -> Path | None:
    from .experiment import RESUME_NAME
    for run in reversed(_run_dirs(seed_dir)):
        path = run / "checkpoints" / RESUME_NAME
        if path.exists():
            return path
    return None


# ---- one machine: Optuna with a journal file ----------------------------------------------------
SPEC_FILE, JOURNAL_FILE, LOCK_FILE, ASK_LOCK_FILE = "spec.json", "study.journal", "sweep.lock", "ask.lock"


def _storage(out: Path):
    optuna = require("optuna", "sweep")
    from optuna.storages.journal import JournalFileBackend
    return optuna.storages.JournalStorage(JournalFileBackend(str(out / JOURNAL_FILE)))


def _pruner(spec: SweepSpec):
    optuna = require("optuna", "sweep")
    if spec.pruner == "none":
        return optuna.pruners.NopPruner()
    return optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=0)


def _load_study(spec: SweepSpec, out: Path, sampler_seed: int):
    optuna = require("optuna", "sweep")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sampler = optuna.samplers.TPESampler(seed=sampler_seed)
    return optuna.create_study(study_name=spec.name, storage=_storage(out), direction="maximize",
                               sampler=sampler, pruner=_pruner(spec), load_if_exists=True)


def _counted(study) -> int:
    """Trials that use up the budget: finished ones and running ones; an interrupted trial
    (failed without an error) does not, as it is asked again."""
    from optuna.trial import TrialState
    n = 0
    for t in study.get_trials(deepcopy=False):
        if t.state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING):
            n += 1
        elif t.state == TrialState.FAIL and "error" in t.user_attrs:
            n += 1
    return n


def _recover(study) -> list:
    """Before the workers start (this process holds the folder's lock, so no trial can be
    running): fail the trials a crash left running, and ask every interrupted trial again with
    its parameters and folder. Returns the numbers asked again."""
    from optuna.trial import TrialState
    trials = study.get_trials(deepcopy=False)
    for t in trials:
        if t.state == TrialState.RUNNING:
            study.tell(t.number, state=TrialState.FAIL)
    trials = study.get_trials(deepcopy=False)
    retried = {t.user_attrs.get("retry_of") for t in trials}
    again = []
    for t in trials:
        if t.state == TrialState.FAIL and "error" not in t.user_attrs and t.number not in retried:
            study.enqueue_trial(t.params, user_attrs={"retry_of": t.number,
                                                      "dir": t.user_attrs.get("dir", _trial_dir_name(t.number))})
            again.append(t.number)
    return again


def _trial_dir_name(number: int) -> str:
    return f"trials/{number:04d}"


@contextlib.contextmanager
def _file_lock(path: Path, blocking: bool = True, what: str = ""):
    import fcntl
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            raise SweepError(f"another minivgg sweep is running in {path.parent} ({what}); wait for "
                             f"it, or give another --out") from None
        yield fd
    finally:
        os.close(fd)


def _check_same_sweep(spec: SweepSpec, out: Path) -> None:
    saved_path = out / SPEC_FILE
    if not saved_path.exists():
        return
    saved = json.loads(saved_path.read_text())
    keep = lambda d: {k: v for k, v in d.items() if k not in _BUDGET_KEYS}  # noqa: E731
    if keep(saved) != keep(spec.raw):
        changed = sorted(k for k in set(saved) | set(spec.raw)
                         if k not in _BUDGET_KEYS and saved.get(k) != spec.raw.get(k))
        raise SweepError(f"{out} holds another sweep (its {SPEC_FILE} differs in {changed}); "
                         f"give another --out, or the same spec to continue it (only \"trials\" "
                         f"and \"timeout_s\" may change)")


def default_out(spec: SweepSpec) -> Path:
    return Path("sweeps") / spec.name


def run_sweep(spec, out=None, workers: int = 1, ray_address: str | None = None, data_dir=None,
              cpus_per_trial: int = 1, log=print) -> dict:
    """Run (or continue) a sweep; returns {"best": trial record or None, "records": [...],
    "out": folder, "files": [...]}. `spec` is a SweepSpec, a dict or a spec file."""
    if not isinstance(spec, SweepSpec):
        spec = parse_spec(spec) if isinstance(spec, dict) else load_spec(spec)
    require("optuna", "sweep")
    if ray_address is not None:
        require("ray.tune", "ray")
    out = Path(out) if out is not None else default_out(spec)
    if not isinstance(workers, int) or workers < 1:
        raise SweepError(f"workers must be at least 1, got {workers!r}")
    out.mkdir(parents=True, exist_ok=True)
    data_dir = None if data_dir is None else str(Path(data_dir).resolve())
    with _file_lock(out / LOCK_FILE, blocking=False, what="its lock file is held") as lock_fd:
        _check_same_sweep(spec, out)
        _write_json(out / SPEC_FILE, spec.raw)
        if ray_address is not None:
            from . import sweep_ray
            records = sweep_ray.run(spec, out, ray_address, data_dir, log, cpus_per_trial)
        else:
            records = _run_local(spec, out, workers, data_dir, lock_fd, log)
        return finish(spec, out, records, log)


def _run_local(spec: SweepSpec, out: Path, workers: int, data_dir, lock_fd, log) -> list:
    study = _load_study(spec, out, spec.sampler_seed)
    again = _recover(study)
    if again:
        log(f"continuing sweep {spec.name}: trial(s) {again} were interrupted and are asked again")
    done = _counted(study)
    log(f"sweep {spec.name}: {done} of {spec.trials} trials done; {workers} worker(s), "
        f"{len(spec.seeds)} seed(s) per trial, results in {out}")
    deadline = time.time() + spec.timeout_s if spec.timeout_s else None
    if done < spec.trials:
        if workers == 1:
            run_worker(out, 0, deadline, data_dir, log=log)
        else:
            _run_worker_processes(out, workers, deadline, data_dir, lock_fd)
    return local_records(_load_study(spec, out, spec.sampler_seed))


def _worker_env(threads: int) -> dict:
    env = dict(os.environ, **{k: str(threads) for k in _THREAD_VARS})
    env.update(PYTHONPATH=os.pathsep.join(filter(None, [_package_root(), env.get("PYTHONPATH")])))
    return env


def _package_root() -> str | None:
    """The folder minivgg is imported from, if it is a source checkout rather than an installed
    package: worker processes (and Ray workers) must import this same code."""
    import site
    root = str(Path(__file__).resolve().parent.parent)
    installed = set(site.getsitepackages()) | {site.getusersitepackages()}
    return None if root in installed else root


def _run_worker_processes(out: Path, workers: int, deadline, data_dir, lock_fd) -> None:
    threads = max(1, (os.cpu_count() or 1) // workers)
    command = [sys.executable, "-m", "minivgg.sweep", "--worker", str(out)]
    procs = []
    for index in range(workers):
        args = command + ["--index", str(index)]
        if deadline:
            args += ["--deadline", str(deadline)]
        if data_dir:
            args += ["--data-dir", data_dir]
        # own session: a terminal's Ctrl-C reaches only this process, which passes exactly one
        # SIGINT on (a second would stop a worker mid-step, before its checkpoint); the lock's
        # descriptor goes with them, so the folder stays locked while any worker lives
        procs.append(subprocess.Popen(args, env=_worker_env(threads), start_new_session=True,
                                      pass_fds=(lock_fd,)))
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    try:
        for p in procs:
            p.wait()
    except (KeyboardInterrupt, SystemExit):
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGINT)
        for p in procs:
            p.wait()
        raise KeyboardInterrupt from None
    finally:
        signal.signal(signal.SIGTERM, previous)
    failed = [p.returncode for p in procs if p.returncode not in (0,)]
    if failed:
        raise SweepError(f"{len(failed)} sweep worker(s) failed (exit status {failed}); see the "
                         f"messages above. Running the same command again continues the sweep")


def run_worker(out, index: int = 0, deadline: float | None = None, data_dir=None, log=print) -> None:
    """Ask and run trials of the sweep in `out` until its trials are all asked (or the deadline)."""
    from optuna.trial import TrialState
    from .train import TrainingDiverged, TrainingInterrupted
    out = Path(out)
    spec = parse_spec(json.loads((out / SPEC_FILE).read_text()), where=str(out / SPEC_FILE))
    probe = _load_study(spec, out, spec.sampler_seed)
    # a seed of its own for each worker and each continuation, so no two propose the same points
    sampler_seed = spec.sampler_seed * 1_000_003 + len(probe.trials) * 101 + index
    study = _load_study(spec, out, sampler_seed)
    distributions = spec.distributions()
    while True:
        with _file_lock(out / ASK_LOCK_FILE):
            if _counted(study) >= spec.trials or (deadline and time.time() > deadline):
                return
            trial = study.ask(distributions)
        name = trial.user_attrs.get("dir", _trial_dir_name(trial.number))
        trial.set_user_attr("dir", name)
        trial.set_user_attr("node", socket.gethostname())
        trial.set_user_attr("worker", index)

        def report(progress, value, trial=trial):
            trial.report(value, progress)
            return trial.should_prune()

        def on_seed(accs, times, trial=trial):
            trial.set_user_attr("seed_val_acc", {str(k): v for k, v in accs.items()})
            trial.set_user_attr("time_s", round(sum(times.values()), 1))

        shown = ", ".join(f"{k}={_short(v)}" for k, v in trial.params.items())
        try:
            result = run_trial(spec, trial.params, out / name, report, data_dir, on_seed=on_seed)
        except _Pruned as e:
            study.tell(trial, state=TrialState.PRUNED)
            log(f"trial {trial.number} ({shown}): {e}")
        except (TrainingInterrupted, KeyboardInterrupt):
            study.tell(trial, state=TrialState.FAIL)
            log(f"trial {trial.number} ({shown}): interrupted; run the same command again to continue")
            raise
        except (TrainingDiverged, ValueError, OSError, FloatingPointError) as e:
            trial.set_user_attr("error", str(e))
            study.tell(trial, state=TrialState.FAIL)
            log(f"trial {trial.number} ({shown}): failed: {e}")
        else:
            study.tell(trial, result["val_acc"])
            accs = " / ".join(f"{v:.4f}" for v in result["seed_val_acc"].values())
            log(f"trial {trial.number} ({shown}): val acc {result['val_acc']:.4f} ({accs}), "
                f"{result['time_s']:.0f}s")


def local_records(study) -> list:
    """The table's rows, one per trial, from the Optuna study."""
    rows = []
    retried_as = {t.user_attrs["retry_of"]: t.number for t in study.get_trials(deepcopy=False)
                  if "retry_of" in t.user_attrs}
    for t in study.get_trials(deepcopy=False):
        state = t.state.name
        note = t.user_attrs.get("error", "")
        if t.number in retried_as:
            note = f"interrupted; asked again as trial {retried_as[t.number]}"
        if "retry_of" in t.user_attrs:
            note = (note + "; " if note else "") + f"continues trial {t.user_attrs['retry_of']}"
        if state == "PRUNED" and t.intermediate_values:
            note = f"pruned at {max(t.intermediate_values)}% of its schedule"
        rows.append({"number": t.number, "state": state, "params": dict(t.params),
                     "val_acc": t.value if state == "COMPLETE" else None,
                     "seed_val_acc": t.user_attrs.get("seed_val_acc", {}),
                     "progress_val_acc": {str(k): v for k, v in sorted(t.intermediate_values.items())},
                     "time_s": t.user_attrs.get("time_s"), "node": t.user_attrs.get("node"),
                     "dir": t.user_attrs.get("dir"), "note": note})
    return rows


# ---- output: table, best recipe, plots ----------------------------------------------------------
def finish(spec: SweepSpec, out: Path, records: list, log=print) -> dict:
    _write_json(out / "trials.json", {"sweep": spec.name, "spec": spec.raw, "trials": records})
    table = format_table(spec, records)
    _write_text(out / "trials.md", table + "\n")
    _write_csv(out / "trials.csv", spec, records)
    files = ["trials.md", "trials.csv", "trials.json"]
    complete = [r for r in records if r["state"] == "COMPLETE"]
    best = max(complete, key=lambda r: r["val_acc"]) if complete else None
    log(table)
    if best is not None:
        recipe = spec.best_recipe(best["params"], best["val_acc"])
        _write_json(out / "best_recipe.json", recipe.to_dict())
        files.append("best_recipe.json")
        log(f"best: trial {best['number']}, mean validation accuracy {best['val_acc']:.4f}; "
            f"train it with: minivgg train --recipe-file {out / 'best_recipe.json'}")
    files += write_plots(spec, out, records, log)
    log(f"wrote {out}: " + ", ".join(files))
    return {"best": best, "records": records, "out": out, "files": files}


def format_table(spec: SweepSpec, records: list) -> str:
    names = [p.name for p in spec.space]
    seeds = [str(s) for s in spec.seeds]
    header = (["trial", "state"] + names + [f"val acc s{s}" for s in seeds]
              + ["mean val acc", "minutes", "node", "note"])
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    order = sorted(records, key=lambda r: (r["val_acc"] is None, -(r["val_acc"] or 0), r["number"]))
    for r in order:
        accs = r.get("seed_val_acc", {})
        cells = ([str(r["number"]), r["state"].lower()] + [_short(r["params"].get(n, "")) for n in names]
                 + [f"{accs[s]:.4f}" if s in accs else "-" for s in seeds]
                 + [f"{r['val_acc']:.4f}" if r["val_acc"] is not None else "-",
                    f"{r['time_s'] / 60:.1f}" if r.get("time_s") is not None else "-",
                    str(r.get("node") or "-")[:12], r.get("note", "")])
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _write_csv(path: Path, spec: SweepSpec, records: list) -> None:
    names = [p.name for p in spec.space]
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["trial", "state"] + names + [f"val_acc_s{s}" for s in spec.seeds]
                    + ["val_acc", "time_s", "node", "note"])
    for r in sorted(records, key=lambda r: r["number"]):
        accs = r.get("seed_val_acc", {})
        writer.writerow([r["number"], r["state"]] + [r["params"].get(n, "") for n in names]
                        + [accs.get(str(s), "") for s in spec.seeds]
                        + [r["val_acc"] if r["val_acc"] is not None else "", r.get("time_s") or "",
                           r.get("node") or "", r.get("note", "")])
    _write_text(path, buffer.getvalue())


def records_study(spec: SweepSpec, records: list):
    """An in-memory Optuna study holding the records, for Optuna's plots."""
    optuna = require("optuna", "sweep")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize", study_name=spec.name)
    distributions = spec.distributions()
    for r in sorted(records, key=lambda r: r["number"]):
        state = optuna.trial.TrialState[r["state"]]
        if state not in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED):
            continue
        study.add_trial(optuna.trial.create_trial(
            params=r["params"], distributions=distributions, state=state,
            value=r["val_acc"] if state == optuna.trial.TrialState.COMPLETE else None,
            intermediate_values={int(k): v for k, v in r.get("progress_val_acc", {}).items()}))
    return study


PLOTS = {"history.png": "plot_optimization_history", "importance.png": "plot_param_importances",
         "parallel.png": "plot_parallel_coordinate"}


def write_plots(spec: SweepSpec, out: Path, records: list, log=print) -> list:
    """Optimisation history, parameter importance and parallel coordinates as PNG files; a plot
    that needs more finished trials than there are is left out, with a line saying so."""
    import warnings
    import matplotlib
    matplotlib.use("Agg")
    from matplotlib import pyplot as plt
    vis = require("optuna.visualization.matplotlib", "sweep")
    study = records_study(spec, records)
    complete = [r for r in records if r["state"] == "COMPLETE"]
    written = []
    for name, function in PLOTS.items():
        if function == "plot_param_importances" and (len(complete) < 2 or len(spec.space) < 2):
            log(f"{name}: not drawn (parameter importance needs 2 or more finished trials and "
                f"2 or more parameters)")
            continue
        if not complete:
            log(f"{name}: not drawn (no finished trial)")
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ax = getattr(vis, function)(study, target_name="mean validation accuracy")
        figure = (ax.flat[0] if hasattr(ax, "flat") else ax).figure
        figure.set_size_inches(9, 5.5)
        figure.suptitle(f"sweep {spec.name}: mean validation accuracy over seeds {list(spec.seeds)}",
                        fontsize=10)
        figure.tight_layout()
        with atomic_write_path(out / name) as tmp:
            figure.savefig(tmp, format="png", dpi=110)
        plt.close(figure)
        written.append(name)
    return written


def _write_json(path: Path, obj) -> None:
    _write_text(path, json.dumps(obj, indent=2) + "\n")


def _write_text(path: Path, text: str) -> None:
    with atomic_write_path(path) as tmp:
        Path(tmp).write_text(text)


def _worker_main(argv=None) -> int:
    import argparse
    p = argparse.ArgumentParser(description="a worker process of `minivgg sweep` (started by it)")
    p.add_argument("--worker", required=True, help="the sweep's folder")
    p.add_argument("--index", type=int, default=0)
    p.add_argument("--deadline", type=float)
    p.add_argument("--data-dir")
    args = p.parse_args(argv)
    from .train import TrainingInterrupted
    try:
        run_worker(args.worker, args.index, args.deadline, args.data_dir,
                   log=lambda line: print(line, flush=True))
    except (TrainingInterrupted, KeyboardInterrupt):
        return 130
    except SweepError as e:
        print(f"minivgg sweep worker {args.index}: error: {e}", file=sys.stderr)
        return 2
    return 0


__all__ = ["SweepSpec", "SweepError", "Param", "load_spec", "parse_spec", "run_sweep", "run_trial",
           "run_worker", "load_recipe_file", "apply_changes", "format_table", "write_plots",
           "local_records", "records_study"]

if __name__ == "__main__":
    sys.exit(_worker_main())
