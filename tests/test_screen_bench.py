"""The recipe screen (benchmarks/screen_recipes.py): candidate checking, the table, a smoke run."""
from __future__ import annotations

import importlib.util
import json
import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
spec = importlib.util.spec_from_file_location("bench_screen_recipes",
                                              ROOT / "benchmarks" / "screen_recipes.py")
screen = importlib.util.module_from_spec(spec)
sys.modules[spec.name] = screen
spec.loader.exec_module(screen)


def _write(tmp_path, candidates, name="c.json"):
    path = tmp_path / name
    path.write_text(json.dumps(candidates))
    return path


@pytest.mark.parametrize("candidates, message", [
    ([], "non-empty JSON list"),
    ({"name": "a"}, "non-empty JSON list"),
    ([{"name": "a"}], "needs at least"),
    ([{"name": "a", "recipe": "mnist_5k"}, {"name": "a", "recipe": "mnist_20k"}], "appears twice"),
    ([{"name": "a", "recipe": "no_such_recipe"}], "unknown recipe"),
    ([{"name": "a", "recipe": "mnist_5k", "set": {"learning_rate": 0.1}}], "unknown recipe field"),
    ([{"name": "a", "recipe": "mnist_7k_plus", "model_options": {"widths": [8, 8, 8, 8, 8]}}],
     "unexpected keyword argument 'widths'"),
    ([{"name": "a", "recipe": "vgg_v1"}], "epoch-based"),
    ([{"name": "a", "recipe": "mnist_5k", "eval_variants": {"v": {"lr": 0.1}}}], "eval_variants must map"),
    ([{"name": "a", "recipe": "mnist_5k", "eval_variants": {"v": {"tta_shift": -1}}}], "tta_shift"),
    ([{"name": "a", "recipe": "mnist_5k", "eval_variants": {"v": {"bn_images": 0}}}], "bn_images"),
])
def test_bad_candidates_are_refused_with_the_reason(tmp_path, candidates, message):
    with pytest.raises(SystemExit, match=message):
        screen.load_candidates(_write(tmp_path, candidates))


def test_missing_or_broken_candidates_file(tmp_path):
    with pytest.raises(SystemExit, match="does not exist"):
        screen.load_candidates(tmp_path / "missing.json")
    broken = tmp_path / "broken.json"
    broken.write_text("[{")
    with pytest.raises(SystemExit, match="not valid JSON"):
        screen.load_candidates(broken)


def test_candidate_recipe_gets_a_validation_split_and_the_seed():
    recipe = screen.make_recipe({"name": "a", "recipe": "mnist_7k_plus",
                                 "set": {"ema": 0.999, "augment": [
                                     {"name": "RandomAffine", "degrees": 5.0, "translate": [0.05, 0.05]}]}},
                                seed=3)
    assert recipe.val_fraction == 0.1 and recipe.seed == 3 and recipe.ema == 0.999
    assert recipe.augment[0]["degrees"] == 5.0
    fashion = screen.make_recipe({"name": "b", "recipe": "minivgg_fashion"}, seed=0)
    assert fashion.val_fraction == pytest.approx(1 / 12)  # a recipe's own split is kept


def _result(name, seed, last3, params=7304):
    return {"candidate": {"name": name}, "seed": seed, "parameters": params, "last3_val_acc": last3,
            "final_val_acc": last3,
            "wall_s": 120.0, "epochs": [{"epoch": 1, "train_acc": 0.99, "val_acc": last3}]}


def test_summary_sorts_by_mean_over_seeds():
    table = screen.summarize([_result("low", 0, 0.9920), _result("high", 1, 0.9950),
                              _result("high", 0, 0.9940), _result("low", 1, 0.9930)])
    lines = table.splitlines()
    assert lines[2].startswith("| high | 7,304 | 1 | 0 1 | 0.9945 ± 0.0007 | 0.9940 / 0.9950 |")
    assert lines[3].startswith("| low |")


def test_eval_variants_get_rows_of_their_own_from_the_same_runs():
    runs = []
    for seed, (plain, shifted) in enumerate([(0.9930, 0.9936), (0.9940, 0.9942)]):
        run = _result("7k", seed, plain)
        run["epochs"] = [dict(e, variant_val_acc={"shift1": shifted}) for e in run["epochs"]]
        runs.append(run)
    lines = screen.summarize(runs).splitlines()
    assert lines[2].startswith("| 7k+shift1 | 7,304 | 1 | 0 1 | 0.9939 ± 0.0004 | 0.9936 / 0.9942 |")
    assert lines[3].startswith("| 7k | 7,304 | 1 | 0 1 | 0.9935 ± 0.0007 | 0.9930 / 0.9940 |")


def test_runs_already_in_the_output_folder_are_not_run_again(tmp_path, monkeypatch, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "a-s0.json").write_text(json.dumps(_result("a", 0, 0.9931)))
    trained = []
    monkeypatch.setattr(screen, "train_one", lambda job: trained.append(job[:2]) or
                        _result(job[0]["name"], job[1], 0.9925))
    candidates = _write(tmp_path, [{"name": "a", "recipe": "mnist_5k"}])
    assert screen.main([str(candidates), "--seeds", "0", "1", "--out", str(out)]) == 0
    assert [seed for _, seed in trained] == [1]
    printed = capsys.readouterr().out
    assert f"1 runs (1 candidates x 2 seeds, less 1 already in {out})" in printed
    assert "| a | 7,304 | 1 | 0 1 | 0.9928 ± 0.0004 |" in printed


def test_summarize_reads_a_folder(tmp_path, capsys):
    with pytest.raises(SystemExit, match="no screening results"):
        screen.main(["--summarize", str(tmp_path)])
    (tmp_path / "a-s0.json").write_text(json.dumps(_result("a", 0, 0.9931)))
    assert screen.main(["--summarize", str(tmp_path)]) == 0
    assert "| a | 7,304 | 1 | 0 | 0.9931 ± 0.0000 |" in capsys.readouterr().out


@pytest.mark.realdata
@pytest.mark.skipif(not os.environ.get("MINIVGG_DATA"),
                    reason="MINIVGG_DATA is not set: the screening smoke run needs MNIST")
def test_smoke_run_trains_on_the_split_and_never_loads_the_test_set(tmp_path, torch, monkeypatch):
    import minivgg.data
    splits = []
    real_load = minivgg.data.load_dataset

    def recording_load(name, split, **kwargs):
        splits.append(split)
        return real_load(name, split, **kwargs)

    monkeypatch.setattr(minivgg.data, "load_dataset", recording_load)
    candidates = _write(tmp_path, [{"name": "tiny", "recipe": "mnist_7k_plus",
                                    "set": {"epochs": 2, "ema": 0.99},
                                    "eval_variants": {"shift1": {"tta_shift": 1}}}])
    out = tmp_path / "out"
    assert screen.main([str(candidates), "--limit-train", "600", "--seeds", "0", "--out", str(out)]) == 0
    assert splits == ["train"]
    result = json.loads((out / "tiny-s0.json").read_text())
    assert result["train_images"] == 540 and result["val_images"] == 60
    assert result["parameters"] == 7304 and [e["epoch"] for e in result["epochs"]] == [1, 2]
    assert 0.0 <= result["last3_val_acc"] <= 1.0 and result["recipe"]["ema"] == 0.99
    assert all(0.0 <= e["variant_val_acc"]["shift1"] <= 1.0 for e in result["epochs"])


@pytest.mark.realdata
@pytest.mark.skipif(not os.environ.get("MINIVGG_DATA"),
                    reason="MINIVGG_DATA is not set: the screening smoke run needs MNIST")
def test_a_bn_images_variant_leaves_the_training_as_it_was(tmp_path, torch):
    # mnist_20k has dropout, so re-measuring in train mode draws from torch's RNG
    base = {"name": "tiny", "recipe": "mnist_20k", "set": {"epochs": 2, "ema": 0.99}}
    results = {}
    for name, variants in [("plain", {}), ("probed", {"bn": {"bn_images": 64}})]:
        candidates = _write(tmp_path, [dict(base, eval_variants=variants)], name=f"{name}.json")
        out = tmp_path / name
        assert screen.main([str(candidates), "--limit-train", "600", "--seeds", "0",
                            "--out", str(out)]) == 0
        results[name] = json.loads((out / "tiny-s0.json").read_text())["epochs"]
    for plain, probed in zip(results["plain"], results["probed"]):
        assert plain["train_loss"] == probed["train_loss"] and plain["val_acc"] == probed["val_acc"]
        assert 0.0 <= probed["variant_val_acc"]["bn"] <= 1.0
