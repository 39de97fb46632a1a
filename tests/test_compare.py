"""minivgg.compare and `minivgg compare`: fake run directories written the way experiment.py
writes them (config.json, metrics.csv, results.json, resume checkpoint), one overlay PNG,
the table of final figures, and clear errors for what is not a run."""
import json

import numpy as np
import pytest

from minivgg.cli import main
from minivgg.compare import (compare_runs, format_table, iterations_figure_path, load_run,
                             read_iteration_log)
from minivgg.experiment import write_csv, write_json, write_metrics_csv
from minivgg.models import get_recipe
from minivgg.run_record import FORMAT, iteration_loss_curve

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def history(test_accs, seconds=2.0):
    return [{"epoch": i + 1, "iteration": 100 * (i + 1), "time": seconds, "lr": 0.01,
             "train_loss": 1.0 / (i + 1), "train_acc": acc - 0.01, "val_loss": None, "val_acc": None,
             "test_loss": 1.2 / (i + 1), "test_acc": acc, "images_per_s": 500.0}
            for i, acc in enumerate(test_accs)]


def fake_run(root, name, test_accs, *, finished=True, recipe="mnist_5k", iter_log=None):
    run_dir = root / name
    run_dir.mkdir()
    config = get_recipe(recipe)
    if iter_log is not None:
        config = config.override(iters=len(iter_log))
    write_json(run_dir / "config.json", {"format": "minivgg-run", "recipe": config.to_dict(),
                                         "dataset": config.dataset})
    hist = history(test_accs)
    write_metrics_csv(run_dir / "metrics.csv", hist)
    if finished:
        write_json(run_dir / "results.json", {
            "recipe": config.name, "model": config.model, "dataset": config.dataset, "seed": 0,
            "epochs_run": len(hist), "iterations": hist[-1]["iteration"],
            "final_test_acc": test_accs[-1], "final_test_loss": hist[-1]["test_loss"],
            "wall_time_s": 12.5, "history": hist})
    if iter_log is not None:
        write_csv(run_dir / "iterations.csv", ["iteration", "loss", "step_ms"], iter_log)
    return run_dir


def test_compare_two_runs_writes_png_and_table(tmp_path):
    a = fake_run(tmp_path, "a", [0.90, 0.95, 0.97])
    b = fake_run(tmp_path, "b", [0.91, 0.99, 0.98])
    out = tmp_path / "cmp.png"
    runs = compare_runs([a, b], out, labels=["first", "second"], title="two runs")
    assert out.read_bytes()[:8] == PNG_MAGIC and out.stat().st_size > 10_000
    assert not iterations_figure_path(out).exists()   # epoch runs: no iteration figure
    assert [r.label for r in runs] == ["first", "second"]
    assert runs[1].final_test_acc == 0.98
    assert (runs[1].best_test_acc, runs[1].best_epoch) == (0.99, 2)
    table = format_table(runs)
    lines = table.splitlines()
    second = next(line for line in lines if line.startswith("second"))
    assert "mnist_5k" in second and "3 epochs" in second and "0.9800" in second
    assert "0.9900 (2)" in second and "12.5 s" in second
    assert "for reference only" in table


def test_run_still_training_is_read_from_metrics_csv(tmp_path):
    run = load_run(fake_run(tmp_path, "live", [0.5, 0.6], finished=False))
    assert not run.finished
    assert run.final_test_acc == 0.6 and run.epochs_run == 2 and run.wall_time_s == 4.0
    assert run.history[0]["epoch"] == 1 and run.history[0]["val_loss"] is None
    assert "(running)" in format_table([run])


def test_iteration_runs_get_an_iteration_loss_figure(tmp_path):
    log = [[i, 2.3 - i / 100, 5.0] for i in range(40)]
    run_dir = fake_run(tmp_path, "it", [0.8], recipe="vgg_v1", iter_log=log)
    assert read_iteration_log(run_dir) == log
    out = tmp_path / "sweep.png"
    runs = compare_runs([run_dir], out)
    assert runs[0].iteration_based and runs[0].label == "it"
    assert iterations_figure_path(out).read_bytes()[:8] == PNG_MAGIC
    assert "100 iters" in format_table(runs)   # the run's iteration count, not its epochs


def test_iteration_loss_curve_averages_windows():
    log = [[i, float(i), 1.0] for i in range(1000)]
    iterations, losses = iteration_loss_curve(log, points=200)
    assert len(iterations) == 200
    assert iterations[:2] == [4, 9] and losses[:2] == [2.0, 7.0]   # means of 0..4, 5..9
    short_its, short_losses = iteration_loss_curve([[0, 2.0, 1], [1, float("nan"), 1], [2, 1.0, 1]])
    assert short_its == [0, 2] and short_losses == [2.0, 1.0]
    assert iteration_loss_curve([]) == ([], [])


def test_benchmark_json_is_a_run(tmp_path):
    path = tmp_path / "mnist_5k-s0.json"
    path.write_text(json.dumps({"format": FORMAT, "recipe": "mnist_5k", "status": "completed",
                                "recipe_config": get_recipe("mnist_5k").to_dict(),
                                "history": history([0.9, 0.95]), "final_test_acc": 0.95,
                                "epochs_run": 2, "iterations": 200, "wall_time_s": 3.0,
                                "train_loss_by_iteration": None}))
    run = load_run(path)
    assert run.label == "mnist_5k-s0" and run.final_test_acc == 0.95 and not run.iteration_based
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(ValueError, match="benchmarks/accuracy.py"):
        load_run(other)


def test_cli_compare_prints_table_and_writes_figure(tmp_path, capsys):
    a = fake_run(tmp_path, "a", [0.9, 0.95])
    b = fake_run(tmp_path, "b", [0.92, 0.96])
    out = tmp_path / "c.png"
    assert main(["compare", str(a), str(b), "--out", str(out), "--labels", "bs64, bs128"]) == 0
    printed = capsys.readouterr().out
    assert "bs64" in printed and "bs128" in printed and "0.9600" in printed
    assert out.read_bytes()[:8] == PNG_MAGIC


def test_cli_compare_errors(tmp_path, capsys):
    a = fake_run(tmp_path, "a", [0.9])
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["compare", str(a), str(empty), "--out", str(tmp_path / "x.png")]) == 2
    err = capsys.readouterr().err
    assert "is not a run directory" in err and "empty" in err and "Traceback" not in err
    assert main(["compare", str(a), str(tmp_path / "missing")]) == 2
    assert "no such run directory" in capsys.readouterr().err
    assert main(["compare", str(a), "--labels", "x,y", "--out", str(tmp_path / "x.png")]) == 2
    assert "2 labels for 1 runs" in capsys.readouterr().err
    assert main(["compare", str(a), "--out", str(tmp_path / "x.gif")]) == 2
    assert ".png" in capsys.readouterr().err
    assert not (tmp_path / "x.png").exists()


def test_damaged_results_json_is_named(tmp_path):
    run_dir = fake_run(tmp_path, "bad", [0.9])
    (run_dir / "results.json").write_text("{not json")
    with pytest.raises(ValueError, match="results.json is not valid JSON"):
        load_run(run_dir)
    assert np.isclose(load_run(fake_run(tmp_path, "good", [0.9])).final_test_acc, 0.9)
