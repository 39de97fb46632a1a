"""A sweep across machines: its trials run on a Ray cluster through Ray Tune.

Each trial is a Ray task with its own CPUs (`cpus_per_trial`, and as many BLAS / Numba
threads) that trains the trial's recipe for every seed with minivgg.sweep.run_trial, in the
trial's working folder. Optuna's TPE sampler proposes the parameters through Ray's
OptunaSearch; ASHA stops weak trials on the first seed's validation accuracy after each
epoch. When Tune is done, every trial's run directories are copied from Ray's storage into
OUT/trials/NNNN (as a local sweep leaves them) and the table, best recipe and plots are
written by minivgg.sweep.finish.

A minivgg imported from a source checkout, not an installed package, is shipped to the
cluster's workers (Ray's py_modules), so they run this same code. Across machines the data
folder (`data_dir`) must exist on every node, and OUT must be on a file system all nodes
share (Ray's storage for the trials' files is OUT/ray). A Ray sweep is not resumed: running
it again starts a new Tune experiment.
"""
from __future__ import annotations

import re
import shutil
import socket
import time
from pathlib import Path

from .sweep import _THREAD_VARS, SweepSpec, _package_root, parse_spec, require, run_trial

STORAGE = "ray"


def _trainable(config: dict, spec_raw: dict, data_dir):
    """One Tune trial: the trial's seeds, reporting the first seed's epochs to ASHA."""
    import ray
    from ray import tune

    spec = parse_spec(spec_raw)
    context = tune.get_context()
    node = ray.get_runtime_context().get_node_id()
    last = {}

    def report(progress, value):
        last.update(progress=progress, val_acc=value)
        tune.report({"progress": progress, "progress_val_acc": value, "node": node, "final": False})
        return False  # ASHA stops the trial from outside

    result = run_trial(spec, config, Path.cwd() / "trial", report=report, data_dir=data_dir)
    tune.report({"progress": last.get("progress", 100),
                 "progress_val_acc": last.get("val_acc", result["val_acc"]),
                 "val_acc": result["val_acc"],
                 "seed_val_acc": {str(k): v for k, v in result["seed_val_acc"].items()},
                 "time_s": result["time_s"], "node": node, "host": socket.gethostname(),
                 "trial_id": context.get_trial_id(), "final": True})


def _searcher(spec: SweepSpec):
    """OptunaSearch that records a trial ASHA stopped as pruned, not as finished with its
    first seed's last epoch for a score."""
    optuna = require("optuna", "sweep")
    from ray.tune.search.optuna import OptunaSearch

    class Search(OptunaSearch):
        def on_trial_complete(self, trial_id, result=None, error=False):
            if result is not None:
                result = dict(result, progress_val_acc=result["val_acc"]) if result.get("final") else None
            super().on_trial_complete(trial_id, result, error)

    return Search(space=spec.distributions(), metric="progress_val_acc", mode="max",
                  sampler=optuna.samplers.TPESampler(seed=spec.sampler_seed))


def _scheduler(spec: SweepSpec):
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
    if spec.pruner == "none":
        return FIFOScheduler()
    # progress: the percentage of a trial's epochs done (minivgg.sweep._Reporter), so trials of
    # different lengths meet ASHA's rungs (20%, 40%, 80%) at the same point of their schedules
    return ASHAScheduler(time_attr="progress", metric="progress_val_acc", mode="max", max_t=100,
                         grace_period=20, reduction_factor=2, stop_last_trials=False)


def runtime_env(cpus_per_trial: int) -> dict:
    env = {"env_vars": {k: str(cpus_per_trial) for k in _THREAD_VARS}}
    root = _package_root()
    if root is not None:
        env["py_modules"] = [str(Path(root) / "minivgg")]
        env["excludes"] = ["__pycache__", "*.pyc"]
    return env


def run(spec: SweepSpec, out: Path, address: str, data_dir, log=print, cpus_per_trial: int = 1) -> list:
    """Run the sweep's trials on the Ray cluster at `address` ("auto": the one this machine is
    part of); returns the table's records."""
    ray = require("ray", "ray")
    tune = require("ray.tune", "ray")
    started = time.time()
    ray.init(address=address, runtime_env=runtime_env(cpus_per_trial), log_to_driver=False,
             logging_level="WARNING")
    try:
        nodes = [n for n in ray.nodes() if n.get("Alive")]
        log(f"sweep {spec.name} on Ray at {address}: {len(nodes)} node(s), "
            f"{ray.cluster_resources().get('CPU', 0):.0f} CPUs, {spec.trials} trials of "
            f"{cpus_per_trial} CPU(s), {len(spec.seeds)} seed(s) each")
        trainable = tune.with_resources(
            tune.with_parameters(_trainable, spec_raw=spec.raw, data_dir=data_dir), {"cpu": cpus_per_trial})
        tuner = tune.Tuner(
            trainable,
            tune_config=tune.TuneConfig(search_alg=_searcher(spec), scheduler=_scheduler(spec),
                                        num_samples=spec.trials, time_budget_s=spec.timeout_s),
            run_config=tune.RunConfig(name=spec.name, storage_path=str((out / STORAGE).resolve()),
                                      sync_config=tune.SyncConfig(sync_artifacts=True), verbose=0))
        grid = tuner.fit()
        records = [_record(spec, out, result) for result in grid]
    finally:
        ray.shutdown()
    log(f"Ray finished {len(records)} trial(s) in {time.time() - started:.0f}s")
    return records


def _record(spec: SweepSpec, out: Path, result) -> dict:
    """A row of the table, as local_records makes it, from a Tune result; the trial's run
    directories are copied to OUT/trials/NNNN."""
    metrics = result.metrics or {}
    trial_id = metrics.get("trial_id") or Path(result.path).name
    number = _trial_number(result)
    frame = result.metrics_dataframe
    progress = {}
    if frame is not None and "progress_val_acc" in frame:
        for _, row in frame.iterrows():
            if not row.get("final"):
                progress[str(int(row["progress"]))] = float(row["progress_val_acc"])
    if result.error is not None:
        state, note = "FAIL", str(result.error).strip().splitlines()[-1]
    elif metrics.get("final"):
        state, note = "COMPLETE", ""
    else:
        state, note = "PRUNED", f"pruned at {max(map(int, progress), default=0)}% of its schedule (ASHA)"
    target = out / f"trials/{number:04d}"
    source = Path(result.path) / "trial"
    if source.is_dir():
        shutil.copytree(source, target, dirs_exist_ok=True)
    elif state == "COMPLETE":
        note = f"run directories not found in Ray's storage ({source})"
    return {"number": number, "state": state, "params": dict(result.config),
            "val_acc": metrics.get("val_acc") if state == "COMPLETE" else None,
            "seed_val_acc": metrics.get("seed_val_acc", {}), "progress_val_acc": progress,
            "time_s": metrics.get("time_s"), "node": metrics.get("node"), "host": metrics.get("host"),
            "ray_trial": trial_id, "dir": str(target.relative_to(out)), "note": note}


def _trial_number(result) -> int:
    """Tune names a trial's folder <trainable>_<trial id>_<N>_<parameters>_<date>, N counting
    trials from 1; the table counts from 0, as Optuna does."""
    match = re.search(r"_[0-9a-f]{5,}(?:_\d{5})?_(\d+)_", Path(result.path).name)
    if match is None:
        raise ValueError(f"cannot read a trial number from Ray's trial folder {result.path}")
    return int(match.group(1)) - 1
