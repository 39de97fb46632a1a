"""minivgg.run_record: one record per run, written by `minivgg train` as results.json and kept
by benchmarks/accuracy.py; built from the Trainer's state, written and read back."""
import json
from pathlib import Path

import pytest

from minivgg.models import get_recipe
from minivgg.run_record import FORMAT, RunRecord, recipe_changes
from minivgg.train import LoopState

ACCURACY_RESULTS = Path(__file__).resolve().parent.parent / "benchmarks" / "results" / "accuracy"


def test_a_run_from_begin_to_end_and_back(tmp_path):
    recipe = get_recipe("mnist_5k").override(epochs=4, seed=2)
    history = [{"epoch": e, "time": 2.0, "test_acc": acc, "images_per_s": 100.0 * e}
               for e, acc in enumerate([0.9, 0.97, 0.95, 0.96], start=1)]
    record = RunRecord.begin(recipe, run_dir="runs/x")
    assert record.status == "running" and record.changes == {"epochs": 4, "seed": 2}
    assert record.unit == "epochs" and record.machine["cpu_count"] > 0 and record.started
    record.end(LoopState(epoch=4, iteration=400, history=history), num_parameters=5178,
               wall_time_s=9.876, final={"acc": 0.961, "loss": 0.1})
    assert record.status == "completed" and record.wall_time_s == 9.88
    assert record.final_test_acc == 0.961                    # the last evaluation, not the best
    assert (record.best_epoch_test_acc, record.best_epoch) == (0.97, 2)
    assert record.mean_last3_test_acc == pytest.approx(0.96) and record.min_last3_test_acc == 0.95
    assert record.images_per_s == 250.0 and record.train_loss_by_iteration is None
    record.write(tmp_path / "results.json")
    data = json.loads((tmp_path / "results.json").read_text())
    assert data["format"] == FORMAT and data["recipe_config"]["epochs"] == 4
    assert RunRecord.read(tmp_path / "results.json").to_dict() == data   # tuples come back as lists


def test_iteration_runs_keep_a_loss_curve_and_no_last3():
    recipe = get_recipe("vgg_v1").override(iters=400)
    state = LoopState(epoch=1, iteration=400, history=[{"epoch": 1, "test_acc": 0.8}],
                      iter_log=[[i + 1, 2.0 - i / 400, 1.0] for i in range(400)])
    record = RunRecord.begin(recipe).end(state, num_parameters=1, wall_time_s=1.0)
    curve = record.train_loss_by_iteration
    assert len(curve["loss"]) == 200 and curve["iterations"][-1] == 400
    assert record.unit == "iterations" and record.mean_last3_test_acc is None
    assert record.final_test_acc == 0.8 and record.final_test_loss is None   # no test set given


def test_diverged_and_unregistered_recipes():
    record = RunRecord.begin(get_recipe("mnist_20k")).diverged("the loss became nan")
    assert record.status == "diverged" and record.error == "the loss became nan"
    assert recipe_changes(get_recipe("mnist_20k").override(name="from-a-file")) is None


def test_other_files_are_refused_with_their_path(tmp_path):
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(ValueError, match="other.json: not a run record"):
        RunRecord.read(other)
    other.write_text("{cut short")
    with pytest.raises(ValueError, match="other.json: not valid JSON"):
        RunRecord.read(other)


def test_a_record_missing_later_fields_reads_with_their_defaults(tmp_path):
    path = tmp_path / "old.json"
    path.write_text(json.dumps({"format": FORMAT, "version": 1, "recipe": "mnist_5k",
                                "status": "completed", "final_test_acc": 0.99}))
    record = RunRecord.read(path)
    assert record.final_test_acc == 0.99 and record.per_class_test_acc is None and record.history == []


def test_the_committed_benchmark_results_are_run_records():
    paths = sorted(ACCURACY_RESULTS.glob("*.json"))
    assert paths
    for path in paths:
        assert RunRecord.read(path).status in ("completed", "diverged"), path
