"""benchmarks/accuracy.py: result files -> the BENCHMARKS.md accuracy table, the staleness
check CI relies on, the pass/fail rules, and one run written through a stand-in trainer (plus
a few real iterations on MNIST when MINIVGG_DATA is set)."""
import importlib.util
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

from minivgg import run_record
from minivgg.models import RECIPES

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "benchmarks" / "accuracy.py"
REAL = os.environ.get("MINIVGG_DATA")


def _load_bench():
    sys.path.insert(0, str(SCRIPT.parent))   # the script imports its sibling modules
    spec = importlib.util.spec_from_file_location("accuracy_bench", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module   # dataclasses look their module up while the file runs
    spec.loader.exec_module(module)
    return module


bench = _load_bench()
import accuracy_render as render  # noqa: E402  (on sys.path once the script is loaded)
import accuracy_targets as targets  # noqa: E402

MD = """# Benchmarks

hand-written text stays

<!-- accuracy:begin -->
<!-- accuracy:end -->

<!-- speed:begin -->
speed rows written by someone else
<!-- speed:end -->
"""


def record(recipe, seed, test_accs, *, batch_size=None, changes=None, status="completed",
           params=5178, wall=100.0):
    """A result file as `run` writes it, from a list of per-epoch test accuracies."""
    batch_size = batch_size or RECIPES[recipe].batch_size
    changes = dict(changes or {})
    if batch_size != RECIPES[recipe].batch_size:
        changes["batch_size"] = batch_size
    history = [{"epoch": i + 1, "time": 10.0, "train_loss": 0.1, "train_acc": 0.9, "test_loss": 0.05,
                "test_acc": acc, "images_per_s": 600.0} for i, acc in enumerate(test_accs)]
    iteration_based = bool(RECIPES[recipe].iters)
    return {"format": run_record.FORMAT, "version": 1, "status": status, "recipe": recipe,
            "changes": changes, "seed": seed, "batch_size": batch_size, "num_parameters": params,
            "unit": "iterations" if iteration_based else "epochs", "epochs_run": len(history),
            "iterations": 1000, "wall_time_s": wall, "images_per_s": 600.0, "history": history,
            **run_record.epoch_figures(history, iteration_based)}


def write(results_dir, rec):
    name = f"{rec['recipe']}-b{rec['batch_size']}-s{rec['seed']}"
    if set(rec["changes"]) - {"batch_size", "seed"}:
        name += "-x"
    path = results_dir / f"{name}.json"
    path.write_text(json.dumps(rec))
    return path


@pytest.fixture
def workspace(tmp_path):
    results = tmp_path / "results"
    results.mkdir()
    md = tmp_path / "BENCHMARKS.md"
    md.write_text(MD)
    return results, md


def row_of(text, recipe, batch=None):
    for line in text.splitlines():
        cells = [c.strip() for c in line.split("|")]
        if len(cells) > 3 and cells[1] == recipe and (batch is None or cells[2] == str(batch)):
            return cells
    raise AssertionError(f"no row for {recipe} in\n{text}")


HEADER_CELLS = [c.strip() for c in render.HEADER.split("|")]
COL = {name: HEADER_CELLS.index(name) for name in HEADER_CELLS if name}


def test_table_from_fixture_json(workspace):
    results, md = workspace
    finals = [0.9890, 0.9900, 0.9896]
    for seed, final in enumerate(finals):
        write(results, record("mnist_8k_a", seed, [0.98, 0.985, 0.987, final], params=7998))
    assert render.write_table(results, md) is True
    text = md.read_text()
    assert "hand-written text stays" in text and "speed rows written by someone else" in text
    cells = row_of(text, "mnist_8k_a")
    mean, std = statistics.fmean(finals), statistics.stdev(finals)
    assert cells[COL["final test acc (mean ± std)"]] == f"{mean:.4f} ± {std:.4f} (n=3)"
    assert cells[COL["published"]] == "0.988" and cells[COL["target"]] == "≥ 0.988"
    assert cells[COL["params"]] == "7,998"
    assert cells[COL["result"]] == "pass (3/3 seeds reach it)"
    assert cells[COL["time per run"]] == "100.0 s"
    assert cells[COL["command"]] == "`python benchmarks/accuracy.py run mnist_8k_a --seeds 0 1 2`"
    last3 = statistics.fmean(statistics.fmean([0.985, 0.987, f]) for f in finals)
    assert cells[COL["mean of last 3 epochs"]].startswith(f"{last3:.4f} ±")
    assert render.write_table(results, md) is False   # regenerating is idempotent


def test_rows_without_json_say_not_run_yet(workspace):
    results, md = workspace
    render.write_table(results, md)
    text = md.read_text()
    for target in targets.all_targets():
        cells = row_of(text, target.recipe, target.batch())
        assert cells[COL["result"]] == "not run yet"
        assert cells[COL["final test acc (mean ± std)"]] == "not run yet"
    assert "falls short" not in text


def test_every_recipe_has_a_row_and_published_figures_come_from_recipes():
    assert {t.recipe for t in targets.all_targets()} == set(RECIPES)
    default_v1 = next(t for t in targets.all_targets() if t.key == "vgg_v1")
    assert default_v1.published_figure() == RECIPES["vgg_v1"].published
    assert default_v1.target() == RECIPES["vgg_v1"].published
    keys = [t.key for t in targets.all_targets()]
    assert len(keys) == len(set(keys))


def test_check_detects_a_stale_table(workspace, capsys):
    results, md = workspace
    write(results, record("mnist_20k", 0, [0.993, 0.994, 0.9942]))
    args = ["--results-dir", str(results), "--md", str(md)]
    assert bench.main(["check", *args]) == 1          # markers still empty: stale
    assert "stale" in capsys.readouterr().err
    assert bench.main(["table", *args]) == 0
    assert bench.main(["check", *args]) == 0
    write(results, record("mnist_20k", 1, [0.99, 0.991, 0.992]))
    assert bench.main(["check", *args]) == 1
    out = capsys.readouterr().out
    assert "+| mnist_20k" in out and "-| mnist_20k" in out   # the diff shows the changed row


def test_mean_std():
    mean, std = render.mean_std([0.99, 0.991, 0.992])
    assert mean == pytest.approx(0.991) and std == pytest.approx(0.001)
    assert render.mean_std([0.5]) == (0.5, None)
    assert render.mean_std([]) == (None, None)
    assert render.mean_std([None, 0.4, 0.6])[0] == pytest.approx(0.5)
    assert render._acc_spread([0.5]) == "0.5000 (n=1)"


def test_epoch_figures_final_best_last3():
    history = [{"epoch": i + 1, "test_acc": a} for i, a in enumerate([0.90, 0.99, 0.95, 0.96, 0.94])]
    figures = run_record.epoch_figures(history, iteration_based=False)
    assert figures["final_test_acc"] == 0.94                          # not the best epoch
    assert (figures["best_epoch_test_acc"], figures["best_epoch"]) == (0.99, 2)
    assert figures["mean_last3_test_acc"] == pytest.approx(0.95)
    assert figures["min_last3_test_acc"] == 0.94
    assert run_record.epoch_figures(history, iteration_based=True)["mean_last3_test_acc"] is None
    assert run_record.epoch_figures(history[:2], iteration_based=False)["min_last3_test_acc"] is None


def test_rules():
    by_key = {t.key: t for t in targets.all_targets()}
    each = by_key["mnist_7k_15ep"]   # >= 0.994 in each of the last 3 epochs, 3 seeds
    good = [record("mnist_7k_15ep", s, [0.99, 0.9941, 0.9945, 0.9950]) for s in range(3)]
    assert render.judge(each, good).status == "pass"
    one_dip = good[:2] + [record("mnist_7k_15ep", 2, [0.99, 0.9939, 0.9960, 0.9960])]
    verdict = render.judge(each, one_dip)
    assert verdict.status == "FAIL" and "2/3 seeds" in verdict.text
    assert "0.9939" in verdict.shortfall and "0.01 points short" in verdict.shortfall
    assert render.judge(each, good[:1]).status == "pending"
    assert render.judge(each, good[:2] + [record("mnist_7k_15ep", 2, [], status="diverged")]).status == "FAIL"
    six = by_key["mnist_5k"]          # judged on the seed-averaged curve, over 6 seeds
    assert six.seeds == (0, 1, 2, 3, 4, 5) and six.rule == "last3_seed_mean"
    assert render.judge(six, [dict(r, recipe="mnist_5k") for r in good]).status == "pending"

    ours = by_key["mnist_5k_plus"]   # > 0.995 mean of last 3, under 8,000 parameters
    exact = [record("mnist_5k_plus", s, [0.99, 0.995, 0.995, 0.995]) for s in range(3)]
    assert render.judge(ours, exact).status == "FAIL"      # "above" is strict
    above = [record("mnist_5k_plus", s, [0.99, 0.9955, 0.996, 0.9956]) for s in range(3)]
    assert render.judge(ours, above).status == "pass"
    too_big = [record("mnist_5k_plus", s, [0.99, 0.9955, 0.996, 0.9956], params=8000) for s in range(3)]
    assert "not under 8,000" in render.judge(ours, too_big).shortfall

    final = by_key["vgg_v1-b16"]     # the mean of the final figures against the published one
    near = [record("vgg_v1", s, [a], batch_size=16) for s, a in enumerate([0.84, 0.838, 0.835])]
    verdict = render.judge(final, near)
    assert verdict.status == "pass" and "2/3 seeds" in verdict.text


def test_shortfall_and_notes_are_written_under_the_group(workspace):
    results, md = workspace
    for seed in range(3):
        write(results, record("vgg_v1", seed, [0.80], batch_size=32))
    notes = md.with_name("NOTES.md")
    notes.write_text("# Notes\n\nintro, not a note\n\n## vgg_v1-b32\n\nan honest\nremark\n\n## vgg_v2\n\nother\n")
    render.write_table(results, md, notes)
    text = md.read_text()
    assert row_of(text, "vgg_v1", 32)[COL["result"]] == "FAIL (0/3 seeds reach it)"
    assert ("- **vgg_v1 (batch 32)** falls short: final test accuracy 0.8000 vs the target 0.8507, "
            "5.07 points short; 0/3 seeds reach it. an honest remark.") in text


def test_figures_are_drawn_and_linked(workspace):
    results, md = workspace
    for batch, final in ((16, 0.85), (32, 0.86)):
        rec = record("vgg_v1", 0, [final], batch_size=batch)
        rec["train_loss_by_iteration"] = {"iterations": [0, 500, 999], "loss": [2.3, 0.8, 0.5]}
        write(results, rec)
    written = render.write_figures(results)
    assert [p.name for p in written] == ["vgg_v1.png"]
    assert (results / "figures" / "vgg_v1-iterations.png").read_bytes()[:4] == b"\x89PNG"
    render.write_table(results, md)
    text = md.read_text()
    assert "[curves](results/figures/vgg_v1.png)" in text
    assert "[training loss per iteration](results/figures/vgg_v1-iterations.png)" in text
    assert "figures/vgg_v2" not in text


def test_changed_recipes_are_listed_apart(workspace):
    results, md = workspace
    write(results, record("vgg_v1", 0, [0.5], changes={"iters": 20}))
    render.write_table(results, md)
    text = md.read_text()
    assert row_of(text, "vgg_v1", 64)[COL["result"]] == "not run yet"
    assert "### Other runs" in text and "iters=20" in text


def test_two_files_for_one_seed_are_an_error(workspace, capsys):
    results, md = workspace
    rec = record("mnist_20k", 0, [0.99])
    (results / "a.json").write_text(json.dumps(rec))
    (results / "b.json").write_text(json.dumps(rec))
    assert bench.main(["table", "--results-dir", str(results), "--md", str(md)]) == 2
    assert "two result files for the same seed" in capsys.readouterr().err


def test_missing_markers_are_an_error(workspace):
    results, md = workspace
    md.write_text("# no markers\n")
    with pytest.raises(ValueError, match="accuracy:begin"):
        render.write_table(results, md)


def test_result_names_and_set_values():
    r = bench.make_recipe("vgg_v1", 1, 16, {})
    assert bench.result_name(r) == "vgg_v1-b16-s1.json"
    assert bench.result_name(bench.make_recipe("vgg_v1", 2, 64, {})) == "vgg_v1-s2.json"
    changed = bench.make_recipe("vgg_v1", 0, None, bench.common.parse_set(["iters=20", "optimizer=sgd"]))
    assert changed.iters == 20 and changed.optimizer == "sgd"
    assert bench.result_name(changed) == "vgg_v1-s0-x-iters20_optimizersgd.json"
    augment = bench.make_recipe("mnist_5k", 0, None, bench.common.parse_set(['augment=[]']))
    assert augment.augment == ()
    with pytest.raises(ValueError, match="field=value"):
        bench.common.parse_set(["epochs"])
    with pytest.raises(ValueError, match="unknown recipe field"):
        bench.make_recipe("vgg_v1", 0, None, {"epoch": 3})


def test_run_writes_one_json_per_run(tmp_path, monkeypatch):
    """`run` through a stand-in trainer that writes results.json as run_recipe does."""
    import minivgg.experiment as experiment
    from minivgg.train import LoopState

    def fake_run_recipe(recipe, *, data_dir=None, out="runs", progress=None, **_):
        run_dir = experiment.new_run_dir(out, recipe.name)
        hist = [{"epoch": e, "time": 5.0, "test_acc": 0.9 + e / 100, "images_per_s": 400.0 + e}
                for e in (1, 2, 3)]
        state = LoopState(epoch=3, iteration=300, history=hist)
        record = run_record.RunRecord.begin(recipe, run_dir=str(run_dir))
        record.end(state, num_parameters=5178, wall_time_s=17.0, final={"acc": 0.93, "loss": 0.2})
        record.write(run_dir / "results.json")
        return experiment.RunResult(run_dir, hist, 0.93, 0.2, 17.0, False)

    monkeypatch.setattr(experiment, "run_recipe", fake_run_recipe)
    states = iter([{"git_commit": "at-the-start", "git_dirty": False}])
    monkeypatch.setattr(bench, "git_state", lambda: next(states, {"git_commit": "later", "git_dirty": True}))
    out_dir = tmp_path / "results"
    argv = ["run", "mnist_5k", "--seeds", "0", "1", "--set", "epochs=3", "--out-dir", str(out_dir),
            "--runs-dir", str(tmp_path / "runs")]
    assert bench.main(argv) == 0
    files = sorted(p.name for p in out_dir.iterdir())
    assert files == ["mnist_5k-s0-x-epochs3.json", "mnist_5k-s1-x-epochs3.json"]
    rec = json.loads((out_dir / files[1]).read_text())
    assert rec["seed"] == 1 and rec["changes"] == {"epochs": 3, "seed": 1}
    assert rec["final_test_acc"] == 0.93 and rec["mean_last3_test_acc"] == pytest.approx(0.92)
    assert rec["best_epoch"] == 3 and rec["images_per_s"] == pytest.approx(402.0)
    assert rec["command"].startswith("python benchmarks/accuracy.py run mnist_5k --seeds 0 1")
    assert rec["machine"]["cpu_count"] == os.cpu_count()
    # the commit the command started from (whose code it imported), for every seed it runs
    assert [json.loads((out_dir / f).read_text())["git_commit"] for f in files] == ["at-the-start"] * 2
    assert rec["git_dirty"] is False
    assert rec["status"] == "completed" and rec["train_loss_by_iteration"] is None


def test_diverged_run_is_recorded(tmp_path, monkeypatch):
    import minivgg.experiment as experiment

    def diverging(recipe, **_):
        raise experiment.TrainingDiverged("the training loss became nan at epoch 1")

    monkeypatch.setattr(experiment, "run_recipe", diverging)
    path = bench.run_one(bench.make_recipe("mnist_20k", 4, None, {}), out_dir=tmp_path,
                         runs_dir=tmp_path / "runs", data_dir=None, progress=False, command="test")
    rec = json.loads(path.read_text())
    assert path.name == "mnist_20k-s4.json"
    assert rec["status"] == "diverged" and "nan" in rec["error"] and rec["final_test_acc"] is None
    mnist_20k = next(t for t in targets.all_targets() if t.key == "mnist_20k")
    assert render.judge(mnist_20k, [rec]).status == "FAIL"


def test_committed_benchmarks_md_matches_committed_json():
    """CI: the accuracy section of BENCHMARKS.md is generated from benchmarks/results/accuracy."""
    proc = subprocess.run([sys.executable, str(SCRIPT), "check"], capture_output=True, text=True,
                          cwd=ROOT, timeout=120)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr


@pytest.mark.slow
@pytest.mark.realdata
@pytest.mark.skipif(not REAL or not Path(REAL, "mnist").is_dir(),
                    reason="MINIVGG_DATA does not point at the real datasets")
def test_real_smoke_run(tmp_path):
    """A few real vgg_v1 iterations on MNIST, end to end, into a scratch results folder."""
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "run", "vgg_v1", "--set", "iters=5", "log_every=1", "--seeds", "0",
         "--out-dir", str(tmp_path / "out"), "--runs-dir", str(tmp_path / "runs"), "--no-progress"],
        capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rec = json.loads((tmp_path / "out" / "vgg_v1-s0-x-iters5_log_every1.json").read_text())
    assert rec["iterations"] == 5 and rec["unit"] == "iterations"
    assert 0.0 < rec["final_test_acc"] <= 1.0 and rec["num_parameters"] == 94_474
    assert len(rec["train_loss_by_iteration"]["loss"]) == 5
    assert "BENCHMARKS.md left as it is" in proc.stdout


def test_result_names_of_long_changes_stay_distinct():
    affine = [{"name": "RandomAffine", "degrees": 7.0, "translate": [0.1, 0.1], "scale": [0.95, 1.05]}]
    a = bench._slug({"augment": affine, "val_fraction": 0.1})
    b = bench._slug({"augment": affine, "max_lr": 0.1, "val_fraction": 0.1})
    assert a != b and len(a) <= 60 and len(b) <= 60
    assert bench._slug({"epochs": 2}) == "epochs2"


def test_results_of_an_older_version_of_a_recipe_stop_counting(workspace):
    """A result counts against the recipe as it is now: its training fields must still match."""
    results, md = workspace
    current = RECIPES["mnist_20k"].to_dict()
    same = dict(record("mnist_20k", 0, [0.99, 0.9945, 0.9946]),
                recipe_config=dict(current, description="worded differently then", seed=0))
    older = dict(record("mnist_20k", 1, [0.99, 0.9945, 0.9946]),
                 recipe_config=dict(current, lr=0.5, seed=1))
    write(results, same)
    write(results, older)
    by_key, others = render.rows_for(render.load_results(results))
    assert [r["seed"] for r in by_key["mnist_20k"]] == [0]
    assert [r["seed"] for r in others] == [1] and others[0]["changes"] == {"lr": 0.5, "seed": 1}


def test_a_recipe_field_added_later_reads_as_its_default_in_older_results(workspace, monkeypatch):
    """Results written before `augment_epochs` existed were trained with augmentation throughout."""
    results, md = workspace
    before = {k: v for k, v in RECIPES["mnist_20k"].to_dict().items() if k != "augment_epochs"}
    write(results, dict(record("mnist_20k", 0, [0.99, 0.9945, 0.9946]), recipe_config=before))
    by_key, others = render.rows_for(render.load_results(results))
    assert [r["seed"] for r in by_key["mnist_20k"]] == [0] and not others
    monkeypatch.setitem(RECIPES, "mnist_20k", RECIPES["mnist_20k"].override(augment_epochs=10))
    by_key, others = render.rows_for(render.load_results(results))
    assert not by_key.get("mnist_20k") and others[0]["changes"] == {"augment_epochs": None}


def test_seed_mean_rule_reads_each_epoch_of_the_averaged_curve():
    target = next(t for t in targets.all_targets() if t.key == "mnist_5k")
    # seeds dip in different epochs: each epoch's mean holds 0.994, though 2 of 6 seeds alone do not
    curves = [[0.99, 0.9935, 0.9945, 0.9946], [0.99, 0.9946, 0.9935, 0.9945]] + \
             [[0.99, 0.9941, 0.9942, 0.9943]] * 4
    records = [record("mnist_5k", s, c) for s, c in enumerate(curves)]
    assert render.seed_mean_of_last3(records) == pytest.approx(
        [statistics.fmean(c[i] for c in curves) for i in (1, 2, 3)])
    verdict = render.judge(target, records)
    assert verdict.status == "pass" and verdict.text == "pass (4/6 seeds reach it)"
    low = [record("mnist_5k", s, [0.99, 0.9938, 0.9950, 0.9950]) for s in range(6)]
    verdict = render.judge(target, low)   # one epoch of the averaged curve under the bar
    assert verdict.status == "FAIL" and "0.9938" in verdict.shortfall
    assert "0.02 points short" in verdict.shortfall
