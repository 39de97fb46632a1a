"""The speed benchmark's tools: FLOP counting, the BENCHMARKS.md section, a smoke run."""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest


ROOT = Path(__file__).resolve().parent.parent
BENCHMARKS = ROOT / "benchmarks"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


speed = _load("speed")
profile_step = _load("profile_step")


# ---- the BENCHMARKS.md section ---------------------------------------------------------------

def _fixture_data():
    def timed(ours, theirs):
        return {"minivgg": {"median": ours, "samples": [ours]}, "torch": {"median": theirs, "samples": [theirs]},
                "ratio": ours / theirs, "other_cores": 0.1}

    def memory(ours, theirs):
        return {"minivgg": {"delta_mib": ours}, "torch": {"delta_mib": theirs}, "ratio": ours / theirs}

    return {
        "meta": {"command": "python benchmarks/speed.py --reps 1", "date": "2026-01-01T00:00:00",
                 "commit": "abc1234", "wall_s": 12.0,
                 "timing": {"reps": 5, "infer_reps": 3, "slow_reps": 3, "slow_step": 0.5},
                 "loadavg_start": [0.5, 0.4, 0.3], "loadavg_end": [0.7, 0.5, 0.3]},
        "machine": {"cpu": "Test CPU", "cpu_count": 2, "threads": 2, "openblas_threads": 2,
                    "torch_threads": 2, "python": "3.11", "numpy": "2.0", "torch": "2.13.0"},
        "gemm": {"n": 2048, "repeat": 5, "numpy": 100.0, "torch": 125.0},
        "ceiling_gflops": 125.0,
        "results": [
            {"model": "mnist_5k", "dataset": "mnist", "params": 5178, "batch": 64, "target": 1.5,
             "infer_target": None,
             "flops": {"forward": 1_000_000, "train": 2_500_000},
             "train": timed(2000.0, 4000.0), "infer": timed(9000.0, 10000.0),
             "memory": memory(30.0, 10.0)},
            {"model": "minivggnet", "dataset": "cifar10", "params": 2169770, "batch": 128,
             "target": 1.0, "infer_target": 1.5,
             "flops": {"forward": 10_000_000, "train": 25_000_000},
             "train": timed(450.0, 500.0), "infer": timed(1500.0, 2000.0),
             "memory": memory(100.0, 90.0)},
        ],
    }


def test_render_section_tables_targets_and_ceiling():
    profile = {"model": "minivggnet", "batch": 128, "command": "python benchmarks/profile_step.py",
               "step_ms": 200.0, "ops": [{"name": "Conv2d.backward", "ms": 80.0, "calls": 4}],
               "torch": {"step_ms": 90.0, "profiled_ms": 100.0,
                         "ops": [{"name": "aten::convolution_backward", "ms": 40.0, "calls": 4}]}}
    text = speed.render_section(_fixture_data(), [profile], "### Analysis\n\nwhy it is slow")
    assert text.startswith(speed.BEGIN) and text.rstrip().endswith(speed.END)
    assert "`python benchmarks/speed.py --reps 1`" in text
    assert "NumPy/OpenBLAS 100.0 GFLOP/s, PyTorch 125.0 GFLOP/s" in text
    # 2,500,000 FLOPs x 2000 img/s = 5 GFLOP/s = 4% of 125
    assert ("| mnist_5k | 5,178 | 64 | 2,000 | 4,000 | 0.50 | ✗ ≥ 1.5 | 5.0 (4%) | 10.0 (8%) | 0.10 |"
            in text)
    assert "| minivggnet | 2,169,770 | 128 | 450 | 500 | 0.90 | ✗ ≥ 1 |" in text
    assert "| minivggnet | 128 | 1,500 | 2,000 | 0.75 | ✗ ≥ 1.5 | 0.10 |" in text
    assert "| mnist_5k | 64 | 9,000 | 10,000 | 0.90 | – | 0.10 |" in text
    assert "| mnist_5k | 64 | 30.0 | 10.0 | 3.00 | ✗ ≤ 1.2 |" in text
    assert "1 of 5 targets met." in text
    assert "- mnist_5k: training ≥ 1.5: ✗ 0.50 at batch 64; memory ≤ 1.2: ✗ 3.00 at batch 64" in text
    assert ("- minivggnet: training ≥ 1: ✗ 0.90 at batch 128; inference ≥ 1.5: ✗ 0.75 at batch "
            "128; memory ≤ 1.2: ✓ at every batch") in text
    assert "| Conv2d.backward | 80.00 | 40% | aten::convolution_backward | 40.00 | 40% |" in text
    assert "why it is slow" in text


def test_render_time_to_accuracy():
    tta = {"command": "python benchmarks/time_to_accuracy.py", "date": "2026-01-01T00:00:00",
           "recipe": {"name": "mnist_5k_plus", "model": "mnist_5k", "batch_size": 128},
           "target": 0.994, "max_epochs": 15, "threads": 2, "train_images": 60000,
           "test_images": 10000,
           "results": {"minivgg": {"parameters": 5178, "wall_s": 100.0, "epochs": [],
                                   "reached": {"epoch": 4, "test_acc": 0.9941, "elapsed_s": 85.5}},
                       "torch": {"parameters": 5178, "wall_s": 400.0,
                                 "epochs": [{"epoch": 1, "test_acc": 0.99}], "reached": None}}}
    text = speed.render_section(_fixture_data(), time_to_accuracy=tta)
    assert "### Time to 99.4% MNIST test accuracy" in text
    assert "| minivgg | 5,178 | 4 | 0.9941 | 85.5 s | ✓ |" in text
    assert "| torch | 5,178 | not reached | best 0.9900 | 400.0 s | – |" in text
    assert "Figure:" not in text
    text = speed.render_section(_fixture_data(), time_to_accuracy={**tta, "figure": "r/tta.png"})
    assert "Figure: [test accuracy against wall time, both frameworks](r/tta.png)." in text


def test_update_markdown_rewrites_only_between_markers(tmp_path):
    path = tmp_path / "BENCHMARKS.md"
    path.write_text(f"# Benchmarks\n\nintro\n\n{speed.BEGIN}\nold table\n{speed.END}\n\n## Accuracy\nkept\n")
    section = speed.render_section(_fixture_data())
    speed.update_markdown(path, section)
    first = path.read_text()
    assert first.startswith("# Benchmarks\n\nintro\n\n")
    assert first.endswith(f"{speed.END}\n\n## Accuracy\nkept\n")
    assert "old table" not in first and "| mnist_5k | 64 |" in first
    speed.update_markdown(path, section)
    assert path.read_text() == first  # regenerating is idempotent


def test_update_markdown_creates_file_and_refuses_missing_markers(tmp_path):
    created = tmp_path / "new.md"
    speed.update_markdown(created, speed.render_section(_fixture_data()))
    assert created.read_text().count(speed.BEGIN) == 1 and created.read_text().count(speed.END) == 1
    unmarked = tmp_path / "unmarked.md"
    unmarked.write_text("# Benchmarks\nno markers here\n")
    with pytest.raises(ValueError, match="markers"):
        speed.update_markdown(unmarked, "x")
    assert unmarked.read_text() == "# Benchmarks\nno markers here\n"


def test_targets_follow_the_issue():
    assert speed.training_target("mnist_5k", 16) is None
    assert speed.training_target("mnist_5k", 64) == speed.training_target("lenet5", 128) == 1.5
    assert speed.training_target("minivggnet", 128) == speed.training_target("minivgg_fashion", 64) == 1.0
    assert speed.training_target("airbench94", 128) is None
    assert speed.inference_target("vgg_v1", 128) == 1.5 and speed.inference_target("vgg_v1", 64) is None
    assert speed.default_batch_sizes("mnist_5k") == speed.default_batch_sizes("minivggnet") == [64, 128]
    assert speed.MEMORY_TARGET == 1.2 and speed.TIME_TO_ACCURACY_TARGET_S == 90


# ---- running it ------------------------------------------------------------------------------

def test_memory_child_reports_a_peak():
    result = speed.memory_child("minivgg", "mnist_5k", 16, steps=1)
    assert result["peak_kib"] >= result["baseline_kib"] > 0
    assert result["delta_mib"] >= 0


def test_committed_section_matches_committed_json():
    """CI: the speed section of BENCHMARKS.md is generated from benchmarks/results/speed."""
    json_path = BENCHMARKS / "results" / "speed" / "speed.json"
    if not json_path.exists():
        pytest.skip("no committed speed results yet (benchmarks/results/speed/speed.json)")
    assert speed.check_markdown(json_path, ROOT / "BENCHMARKS.md"), \
        "run: python benchmarks/speed.py --render-only"


def test_check_flags_a_hand_edited_section(tmp_path):
    folder = tmp_path / "speed"
    folder.mkdir()
    (folder / "speed.json").write_text(json.dumps(_fixture_data()))
    markdown = tmp_path / "BENCHMARKS.md"
    speed.render_from_files(folder / "speed.json", markdown)
    assert speed.check_markdown(folder / "speed.json", markdown)
    markdown.write_text(markdown.read_text().replace("2,000", "3,000"))
    assert not speed.check_markdown(folder / "speed.json", markdown)


def test_profile_accounts_for_the_step_and_restores_the_ops():
    from minivgg.functional import conv
    original_forward, original_im2col = conv.Conv2dOp.forward, conv.im2col
    case = speed.Case("mnist_5k", 8)
    result = profile_step.profile_minivgg(case, steps=2, by_shape=True)
    names = {op["name"]: op for op in result["ops"]}
    assert {"Conv2dOp.forward", "Conv2dOp.backward", "conv.im2col", "optimizer.step (SGD)"} <= set(names)
    assert names["Conv2dOp.forward"]["calls"] == 6  # six convolutions per step
    # self times add up to the step: "other" is the remainder, never negative
    assert sum(op["ms"] for op in result["ops"]) == pytest.approx(result["profiled_step_ms"], rel=1e-6)
    assert any(op["name"].startswith("Conv2dOp.backward (8,") for op in result["by_shape"])
    assert conv.Conv2dOp.forward is original_forward and conv.im2col is original_im2col
    assert "step" not in vars(case.optimizer)  # the instance attribute wrapper is gone


def test_self_timer_takes_children_out_of_their_parent():
    timer = profile_step.SelfTimer()
    inner = timer.wrap("inner", lambda: __import__("time").sleep(0.02))

    def outer_body():
        inner()
        return 7

    outer = timer.wrap("outer", outer_body)
    assert outer() == 7
    assert timer.ms[("inner", "")] >= 15 and timer.ms[("outer", "")] < 10
    assert timer.calls[("outer", "")] == 1


@pytest.mark.realdata
@pytest.mark.skipif(not os.environ.get("MINIVGG_DATA"),
                    reason="MINIVGG_DATA is not set: the time-to-accuracy smoke run needs MNIST")
def test_time_to_accuracy_smoke(tmp_path, torch):
    tta = _load("time_to_accuracy")
    out = tmp_path / "tta.json"
    assert tta.main(["--recipe", "mnist_5k", "--limit-train", "512", "--limit-test", "200",
                     "--max-epochs", "1", "--target", "0.0", "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    for framework in ("minivgg", "torch"):
        result = data["results"][framework]
        assert result["reached"]["epoch"] == 1 and result["parameters"] == 5178
        assert 0.0 <= result["reached"]["test_acc"] <= 1.0 and result["wall_s"] > 0
    assert data["train_images"] == 512 and data["recipe"]["name"] == "mnist_5k"
    figure = out.with_suffix(".png")
    assert figure.stat().st_size > 10_000
    figure.unlink()
    assert tta.main(["--plot-only", "--json", str(out)]) == 0 and figure.exists()
    with pytest.raises(SystemExit, match="does not exist"):
        tta.main(["--plot-only", "--json", str(tmp_path / "missing.json")])


def test_smoke_run_writes_json_and_section(tmp_path, torch):
    out, markdown = tmp_path / "speed.json", tmp_path / "BENCHMARKS.md"
    markdown.write_text(f"before\n{speed.BEGIN}\n{speed.END}\nafter\n")
    command = [sys.executable, str(BENCHMARKS / "speed.py"), "--models", "mnist_5k",
               "--batch-sizes", "16", "--reps", "1", "--infer-reps", "1", "--min-time", "0.01", "--pause", "0", "--max-wait", "0",
               "--gemm-size", "256",
               "--json", str(out), "--markdown", str(markdown)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "OPENBLAS_NUM_THREADS": "8"})
    assert done.returncode == 0, done.stderr[-3000:]
    assert "the minivgg worker" not in done.stderr
    data = json.loads(out.read_text())
    assert data["machine"]["openblas_threads"] in (1, None)  # minivgg's policy, whatever the environment
    assert data["machine"]["torch_threads"] == 2
    (row,) = data["results"]
    assert (row["model"], row["batch"]) == ("mnist_5k", 16)
    for kind in ("train", "infer"):
        assert row[kind]["minivgg"]["median"] > 0 and row[kind]["torch"]["median"] > 0
        assert np.isclose(row[kind]["ratio"], row[kind]["minivgg"]["median"] / row[kind]["torch"]["median"])
    assert row["memory"]["minivgg"]["delta_mib"] >= 0 and row["memory"]["torch"]["delta_mib"] >= 0
    assert data["gemm"]["numpy"] > 0 and data["ceiling_gflops"] >= data["gemm"]["numpy"]
    text = markdown.read_text()
    assert text.startswith("before\n") and text.endswith("after\n")
    assert "| mnist_5k | 5,178 | 16 |" in text


def test_ab_step_times_two_trees_and_names_a_bad_revision(tmp_path):
    # a directory holding a package counts as a tree: a copy of this one, unchanged
    copy = tmp_path / "copy"
    copy.mkdir()
    (copy / "minivgg").symlink_to(ROOT / "minivgg", target_is_directory=True)
    script = str(BENCHMARKS / "ab_step.py")
    done = subprocess.run([sys.executable, script, "mnist_5k", "4", "--b", str(copy), "--a", ".",
                           "--rounds", "2", "--steps", "1", "--warmup", "0", "--threads", "1"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("round ") == 2
    assert "mnist_5k batch 4, 1 threads: A (.)" in done.stdout and "B/A time" in done.stdout
    bad = subprocess.run([sys.executable, script, "mnist_5k", "4", "--a", "no-such-revision"],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode != 0 and "'no-such-revision' is not a revision" in bad.stderr
