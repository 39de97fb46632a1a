"""minivgg sweep: spec checking, the recipe file, a tiny local sweep (never the test set),
resuming after Ctrl-C and after a crash, and the same sweep on a two-node Ray cluster."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest

from minivgg import sweep
from minivgg.cli import main
from minivgg.models import get_recipe

optuna = pytest.importorskip("optuna", reason="the sweep tests need Optuna: pip install 'minivgg[sweep]'")

ROOT = Path(__file__).resolve().parent.parent
REAL = os.environ.get("MINIVGG_DATA")
needs_real_data = pytest.mark.skipif(
    not (REAL and (Path(REAL) / "mnist").is_dir()),
    reason="MINIVGG_DATA does not point at the real datasets (.ci/run sets it to ../shared/datasets)")

LIGHT = [{"name": "RandomAffine", "degrees": 5.0, "translate": [0.05, 0.05]}]


def tiny_spec(**changes) -> dict:
    spec = {"name": "tiny", "recipe": "mnist_5k", "set": {"epochs": 2, "batch_size": 32},
            "space": {"max_lr": {"low": 0.05, "high": 0.4, "log": True},
                      "augment": {"choices": {"none": [], "light": LIGHT}}},
            "trials": 3, "seeds": 2, "val_fraction": 0.2, "train_images": 400}
    spec.update(changes)
    return spec


# ---- the spec ----------------------------------------------------------------------------------
@pytest.mark.parametrize("change, message", [
    ({"recipe": "no_such_recipe"}, "unknown recipe 'no_such_recipe'"),
    ({"space": {"learning_rate": {"low": 0.1, "high": 0.2}}}, "unknown recipe field 'learning_rate'"),
    ({"set": {"epochz": 3}}, "unknown recipe field 'epochz'"),
    ({"space": {"max_lr": {"low": 0.4, "high": 0.1}}}, "\"low\" must be below \"high\""),
    ({"space": {"max_lr": {"low": 0.0, "high": 0.1, "log": True}}}, "log range needs \"low\" above 0"),
    ({"space": {"epochs": {"choices": ["five", 6]}}}, "epochs takes a int"),
    ({"space": {"epochs": {"low": 2.5, "high": 6}}}, "whole-number field"),
    ({"space": {"max_lr": {"low": "a", "high": 0.1}}}, "must be numbers"),
    ({"space": {"optimizer": {"low": 1, "high": 2}}}, "search it with \"choices\""),
    ({"space": {"augment": {"choices": [[], LIGHT]}}}, "needs a label"),
    ({"space": {"augment.3.degrees": {"low": 1, "high": 5}}}, "no index 3"),
    ({"space": {"lr": {"choices": [-0.1, 0.1]}}}, "lr = -0.1: recipe 'mnist_5k': learning rate must be positive"),
    ({"space": {"augment": {"choices": {"bad": [{"name": "Nope"}]}}}}, "unknown augmentation 'Nope'"),
    ({"space": {}}, "name at least one"),
    ({"trials": 0}, "\"trials\" must be a whole number, at least 1"),
    ({"seeds": [0, 0]}, "\"seeds\" must be a count or a list of distinct"),
    ({"val_fraction": 0}, "never the test set"),
    ({"pruner": "hyperband"}, "\"pruner\" must be one of"),
    ({"budget": 3}, "unknown key(s) ['budget']"),
    ({"recipe": "vgg_v1", "set": {}}, "epoch-based recipe"),
    ({"set": {"max_lr": 0.1}, "space": {"max_lr": {"low": 0.1, "high": 0.2}}}, "both searched"),
])
def test_bad_specs_are_refused_naming_the_problem(change, message):
    with pytest.raises(sweep.SweepError) as info:
        sweep.parse_spec(tiny_spec(**change), where="spec.json")
    assert message in str(info.value) and str(info.value).startswith("spec.json")


def test_the_module_docs_example_spec_is_valid():
    doc = sweep.__doc__
    example = json.loads(doc[doc.index("    {"):doc.index("\n\n`choices`")])
    assert sweep.parse_spec(example).name == "mnist_5k_lr"


def test_the_committed_sweep_specs_are_valid():
    for path in sorted((ROOT / "benchmarks" / "sweeps").glob("*.json")):
        assert sweep.load_spec(path).name == path.stem


def test_spec_turns_suggestions_into_recipes():
    spec = sweep.parse_spec(tiny_spec(set={"batch_size": 32}, space={
        "max_lr": {"low": 0.05, "high": 0.4, "log": True}, "epochs": {"choices": [2, 3]},
        "augment": {"choices": {"none": [], "light": LIGHT}}}))
    recipe = spec.trial_recipe({"max_lr": 0.3, "epochs": 3, "augment": "light"})
    assert (recipe.max_lr, recipe.epochs, recipe.iters, recipe.batch_size) == (0.3, 3, None, 32)
    assert recipe.val_fraction == 0.2 and recipe.to_dict()["augment"] == LIGHT
    dists = spec.distributions()
    assert isinstance(dists["epochs"], optuna.distributions.CategoricalDistribution)
    assert dists["max_lr"].log and dists["max_lr"].low == 0.05
    best = spec.best_recipe({"max_lr": 0.3, "epochs": 3, "augment": "none"}, 0.97)
    assert best.name == "tiny_best" and best.augment == () and best.val_fraction == 0.0
    assert "0.9700" in best.description


def test_transform_arguments_can_be_searched():
    spec = sweep.parse_spec(tiny_spec(recipe="mnist_5k", set={}, space={
        "augment.0.degrees": {"low": 0, "high": 10}, "epochs": {"low": 1, "high": 3}}))
    recipe = spec.trial_recipe({"augment.0.degrees": 2.5, "epochs": 2})
    assert recipe.augment[0]["degrees"] == 2.5 and recipe.augment[0]["name"] == "RandomAffine"
    assert get_recipe("mnist_5k").augment[0]["degrees"] == 5.0  # the named recipe is untouched
    assert isinstance(spec.distributions()["epochs"], optuna.distributions.IntDistribution)


def test_yaml_and_json_spec_files(tmp_path):
    (tmp_path / "s.json").write_text(json.dumps(tiny_spec()))
    assert sweep.load_spec(tmp_path / "s.json").name == "tiny"
    (tmp_path / "broken.json").write_text("{")
    with pytest.raises(sweep.SweepError, match="not valid JSON"):
        sweep.load_spec(tmp_path / "broken.json")
    yaml = pytest.importorskip("yaml", reason="YAML specs need PyYAML: pip install 'minivgg[sweep]'")
    (tmp_path / "named_by_file.yaml").write_text(yaml.safe_dump({k: v for k, v in tiny_spec().items()
                                                                 if k != "name"}))
    spec = sweep.load_spec(tmp_path / "named_by_file.yaml")
    assert spec.name == "named_by_file" and spec.seeds == (0, 1)


def test_missing_yaml_support_is_one_clear_line(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "yaml", None)
    (tmp_path / "s.yaml").write_text("recipe: mnist_5k\n")
    with pytest.raises(sweep.SweepError, match=r"YAML specs need PyYAML: pip install 'minivgg\[sweep\]'"):
        sweep.load_spec(tmp_path / "s.yaml")


def test_missing_engine_names_the_pip_command(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)
    monkeypatch.setitem(sys.modules, "ray.tune", None)
    with pytest.raises(sweep.SweepError, match=r"pip install 'minivgg\[ray\]'"):
        sweep.require("ray.tune", "ray")


def test_cli_bad_spec_is_one_line_and_loses_nothing(tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "spec.json").write_text(json.dumps(tiny_spec()))
    before = (out / "spec.json").read_bytes()
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(tiny_spec(space={"max_lr": {"low": 1, "high": 0.5}})))
    assert main(["sweep", str(bad), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("minivgg sweep: error:") and "\"low\" must be below" in err
    assert "Traceback" not in err and len(err.splitlines()) == 1
    other = tmp_path / "other.json"
    other.write_text(json.dumps(tiny_spec(seeds=3)))
    assert main(["sweep", str(other), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "holds another sweep" in err and "['seeds']" in err
    assert (out / "spec.json").read_bytes() == before


# ---- the recipe file ---------------------------------------------------------------------------
def test_train_recipe_file_trains_that_recipe(tmp_path, monkeypatch, capsys):
    import minivgg.experiment as experiment
    recipe = get_recipe("mnist_5k").override(name="found", max_lr=0.123, epochs=3)
    path = tmp_path / "best_recipe.json"
    path.write_text(json.dumps(recipe.to_dict()))
    seen = {}

    def fake_run(r, **kwargs):
        seen["recipe"] = r
        return experiment.RunResult(tmp_path, [], 0.5, 1.0, 1.0, False)

    monkeypatch.setattr(experiment, "run_recipe", fake_run)
    assert main(["train", "--recipe-file", str(path), "--seed", "4"]) == 0
    as_json = lambda r: json.loads(json.dumps(r.to_dict()))  # noqa: E731
    assert as_json(seen["recipe"]) == as_json(recipe.override(seed=4))
    assert main(["train", "--recipe-file", str(path), "--recipe", "mnist_5k"]) == 2
    assert "not both" in capsys.readouterr().err
    path.write_text(json.dumps(dict(recipe.to_dict(), epochs="many")))
    assert main(["train", "--recipe-file", str(path)]) == 2
    assert "epochs takes a int" in capsys.readouterr().err


# ---- a tiny sweep on synthetic data, in this process -------------------------------------------
def synthetic_mnist(monkeypatch):
    """minivgg.experiment's loader replaced: learnable random images for 'train'; loading the
    'test' split fails the test."""
    import minivgg.experiment as experiment
    loads = []

    def load(name, split="train", data_dir=None, download=False, **kwargs):
        loads.append((name, split))
        if split != "train":
            raise AssertionError(f"the sweep loaded the {split!r} split")
        rng = np.random.default_rng(0)
        labels = np.arange(600) % 10
        images = rng.integers(0, 60, size=(600, 1, 28, 28), dtype=np.uint8)
        for k in range(10):   # a bright bar whose row is the class
            images[labels == k, 0, 2 + 2 * k: 4 + 2 * k, 4:24] = 250
        return images, labels.astype(np.int64)

    monkeypatch.setattr(experiment, "load_dataset", load)
    return loads


def test_tiny_sweep_never_loads_the_test_set_and_writes_its_outputs(tmp_path, monkeypatch):
    loads = synthetic_mnist(monkeypatch)
    lines = []
    result = sweep.run_sweep(tiny_spec(trials=3, seeds=2, pruner="none"), out=tmp_path / "s",
                             log=lines.append)
    assert loads and all(split == "train" for _, split in loads)
    records = result["records"]
    assert [r["state"] for r in records] == ["COMPLETE"] * 3
    for r in records:
        assert set(r["seed_val_acc"]) == {"0", "1"}
        assert r["val_acc"] == pytest.approx(np.mean(list(r["seed_val_acc"].values())))
        assert set(r["progress_val_acc"]) == {"50", "100"}   # the first seed, every epoch
        for seed in (0, 1):
            run, = (tmp_path / "s" / r["dir"] / f"seed{seed}").iterdir()
            results = json.loads((run / "results.json").read_text())
            assert results["final_test_acc"] is None and results["seed"] == seed
            assert results["history"][-1]["val_acc"] == r["seed_val_acc"][str(seed)]
            assert all(e["test_acc"] is None for e in results["history"])
    best = max(records, key=lambda r: r["val_acc"])
    assert result["best"]["number"] == best["number"]
    saved = sweep.load_recipe_file(tmp_path / "s" / "best_recipe.json")
    assert saved.max_lr == pytest.approx(best["params"]["max_lr"]) and saved.name == "tiny_best"
    table = (tmp_path / "s" / "trials.md").read_text()
    assert table.splitlines()[2].startswith(f"| {best['number']} | complete |")
    for name in ("history.png", "importance.png", "parallel.png"):
        assert (tmp_path / "s" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # the finished sweep run again trains nothing and keeps its trials
    again = sweep.run_sweep(tiny_spec(trials=3, seeds=2, pruner="none"), out=tmp_path / "s",
                            log=lines.append)
    assert [r["val_acc"] for r in again["records"]] == [r["val_acc"] for r in records]


def test_weak_trials_are_pruned_on_the_first_seed(tmp_path, monkeypatch):
    synthetic_mnist(monkeypatch)
    spec = tiny_spec(trials=4, seeds=2, set={"epochs": 3, "batch_size": 32},
                     space={"max_lr": {"choices": [0.2, 1e-5]}})
    out = tmp_path / "s"
    out.mkdir()
    (out / "spec.json").write_text(json.dumps(spec))
    s = sweep._load_study(sweep.parse_spec(spec), out, 0)
    for lr in (0.2, 0.2, 0.2, 1e-5):   # three good trials first, then one that cannot learn
        s.enqueue_trial({"max_lr": lr})
    result = sweep.run_sweep(spec, out=out, log=lambda line: None)
    states = {r["params"]["max_lr"]: r["state"] for r in result["records"]}
    assert states[0.2] == "COMPLETE" and states[1e-5] == "PRUNED"
    pruned, = [r for r in result["records"] if r["state"] == "PRUNED"]
    assert not (out / pruned["dir"] / "seed1").exists()   # pruned before its second seed


def test_a_crashed_sweep_continues_its_running_trial(tmp_path, monkeypatch):
    """A trial left running by a crash (killed worker) is asked again with its parameters and
    folder; its finished seed is kept, not trained again."""
    synthetic_mnist(monkeypatch)
    spec_dict = tiny_spec(trials=2, seeds=2, pruner="none")
    spec = sweep.parse_spec(spec_dict)
    out = tmp_path / "s"
    out.mkdir()
    (out / "spec.json").write_text(json.dumps(spec_dict))
    study = sweep._load_study(spec, out, 0)
    crashed = study.ask(spec.distributions())          # left RUNNING, as a crash leaves it
    crashed.set_user_attr("dir", "trials/0000")
    sweep.run_trial(spec, crashed.params, out / "trials/0000", data_dir=None)
    seed1 = next((out / "trials/0000/seed1").iterdir())
    (seed1 / "results.json").unlink()                  # the second seed died before its end
    result = sweep.run_sweep(spec_dict, out=out, log=lambda line: None)
    by_number = {r["number"]: r for r in result["records"]}
    assert by_number[0]["state"] == "FAIL" and "asked again as trial" in by_number[0]["note"]
    retry = [r for r in result["records"] if "continues trial 0" in r["note"]]
    assert len(retry) == 1 and retry[0]["params"] == crashed.params and retry[0]["dir"] == "trials/0000"
    assert sum(r["state"] == "COMPLETE" for r in result["records"]) == 2
    assert len(list((out / "trials/0000/seed0").iterdir())) == 1   # seed 0 not trained again
    assert len(list((out / "trials/0000/seed1").iterdir())) == 1   # seed 1 resumed in place


# ---- Ctrl-C and continue, with worker processes, on the real data ------------------------------
def _env():
    return dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))


def _study_states(out: Path) -> list:
    if not (out / sweep.JOURNAL_FILE).exists():
        return []
    try:
        s = optuna.load_study(study_name="tiny", storage=sweep._storage(out))
    except KeyError:
        return []
    return [t.state.name for t in s.get_trials(deepcopy=False)]


@needs_real_data
@pytest.mark.slow
@pytest.mark.realdata
def test_interrupted_sweep_continues_with_no_trial_lost_or_repeated(tmp_path):
    spec_path = tmp_path / "tiny.json"
    # six trials on two workers: after the first one ends there are several still to run, so the
    # Ctrl-C below always lands in the middle of the sweep
    spec_path.write_text(json.dumps(tiny_spec(trials=6, seeds=2, pruner="none", train_images=600,
                                              set={"epochs": 3, "batch_size": 32})))
    out = tmp_path / "out"
    command = [sys.executable, "-m", "minivgg", "sweep", str(spec_path), "--out", str(out),
               "--workers", "2"]
    first = subprocess.Popen(command, env=_env(), cwd=tmp_path, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.time() + 240
        while time.time() < deadline:    # Ctrl-C once a trial's seeds are done (files: cheaper to
            if list(out.glob("trials/*/seed1/*/results.json")):   # poll than the journal)
                break
            time.sleep(0.2)
        else:
            pytest.fail(f"no trial finished in time: {_study_states(out)}")
        assert first.poll() is None, "the sweep ended before it could be interrupted"
        first.send_signal(signal.SIGINT)
        output, _ = first.communicate(timeout=120)
    finally:
        if first.poll() is None:
            first.kill()
    assert first.returncode == 130, output
    assert "interrupted" in output
    before = {t.number: t for t in optuna.load_study(study_name="tiny", storage=sweep._storage(out)).trials}
    finished_before = {n for n, t in before.items() if t.state.name == "COMPLETE"}
    # failed by the interrupt, or left running if it came between asking a trial and starting it
    interrupted = {n for n, t in before.items() if t.state.name in ("FAIL", "RUNNING")}
    assert finished_before and interrupted

    second = subprocess.run(command, env=_env(), cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert second.returncode == 0, second.stdout + second.stderr
    assert "asked again" in second.stdout
    records = json.loads((out / "trials.json").read_text())["trials"]
    complete = [r for r in records if r["state"] == "COMPLETE"]
    assert len(complete) == 6                           # the budget, no more, no fewer
    for n in finished_before:                           # kept, not trained again
        r = next(r for r in records if r["number"] == n)
        assert r["state"] == "COMPLETE" and r["val_acc"] == before[n].value
        for seed_dir in (out / r["dir"]).iterdir():
            assert len(list(seed_dir.iterdir())) == 1
    for n in interrupted:                               # asked again once, same parameters
        retries = [r for r in records if f"continues trial {n}" in r["note"]]
        assert len(retries) == 1 and retries[0]["state"] == "COMPLETE"
        assert retries[0]["params"] == before[n].params
        assert retries[0]["dir"] == before[n].user_attrs.get("dir", f"trials/{n:04d}")
    params = [json.dumps(r["params"], sort_keys=True) for r in complete]
    assert len(set(params)) == len(params)


# ---- Ray: a two-node cluster on this machine ---------------------------------------------------
@needs_real_data
@pytest.mark.slow
@pytest.mark.realdata
def test_the_same_sweep_on_a_two_node_ray_cluster(tmp_path):
    pytest.importorskip("ray.tune", reason="the Ray test needs Ray Tune: pip install 'minivgg[ray]'")
    from ray_cluster import RayCluster

    # a short folder: Ray's socket paths must stay under the OS limit
    cluster = RayCluster(Path(tempfile.mkdtemp(prefix="mvray", dir="/tmp")), cpus=1, timeout=90)
    try:
        cluster.start()
        # two trials at once on two 1-CPU nodes: one on each
        spec = tiny_spec(trials=2, seeds=1, train_images=300, set={"epochs": 2, "batch_size": 32},
                         pruner="none")
        out = tmp_path / "ray"
        result = sweep.run_sweep(spec, out=out, ray_address=cluster.address, data_dir=REAL,
                                 log=lambda line: None)
    finally:
        cluster.stop()
    assert not cluster.processes()
    records = result["records"]
    assert sorted(r["number"] for r in records) == [0, 1]
    assert all(r["state"] == "COMPLETE" for r in records), records
    assert len({r["node"] for r in records}) == 2       # trials ran on both nodes
    for r in records:
        run, = (out / r["dir"] / "seed0").iterdir()
        saved = json.loads((run / "results.json").read_text())
        assert saved["final_test_acc"] is None
        assert saved["history"][-1]["val_acc"] == pytest.approx(r["val_acc"])
    assert (out / "best_recipe.json").exists() and (out / "history.png").exists()
    assert json.loads((out / "trials.json").read_text())["trials"] == json.loads(json.dumps(records))
