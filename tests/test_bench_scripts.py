"""The smaller benchmark scripts: each BENCHMARKS.md section one of them owns regenerates
identically from the committed JSON (their --check), and one smoke run per script at tiny
sizes, into tmp_path (accuracy.py, speed.py, profile_step.py, ab_step.py and
time_to_accuracy.py have theirs in test_accuracy_bench.py and test_speed_bench.py)."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BENCHMARKS = ROOT / "benchmarks"
MODEL = ROOT / "tests" / "data" / "mnist_20k_digits.safetensors"
REAL = os.environ.get("MINIVGG_DATA")
needs_mnist = pytest.mark.skipif(not REAL or not Path(REAL, "mnist").is_dir(),
                                 reason="MINIVGG_DATA does not point at the real datasets")


def run(script: str, *args, timeout: int = 300) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, str(BENCHMARKS / script), *map(str, args)],
                          capture_output=True, text=True, cwd=ROOT, timeout=timeout)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


def _load_script(name: str):
    import importlib.util
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(BENCHMARKS))
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(BENCHMARKS))
    return module


def markdown(tmp_path, section: str) -> Path:
    path = tmp_path / "BENCHMARKS.md"
    path.write_text(f"before\n<!-- {section}:begin -->\n<!-- {section}:end -->\nafter\n")
    return path


@pytest.mark.parametrize("command", [["conv_paths.py", "--check"], ["threading_policy.py", "--check"],
                                     ["serve_load.py", "--check"], ["predict_preprocess.py", "check"]])
def test_committed_section_matches_committed_json(command):
    """CI: each generated section of BENCHMARKS.md is what its script makes of the kept JSON."""
    assert "matches its results" in run(*command).stdout


def test_check_flags_a_hand_edited_section(tmp_path):
    md = tmp_path / "BENCHMARKS.md"
    shutil.copy(ROOT / "BENCHMARKS.md", md)
    md.write_text(md.read_text().replace("| mnist_5k 1st | 1 -> 6 | 28x28 |", "| mnist_5k 1st | 1 -> 7 | 28x28 |"))
    done = subprocess.run([sys.executable, str(BENCHMARKS / "conv_paths.py"), "--check", "--markdown", str(md)],
                          capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert done.returncode == 1 and "stale" in done.stderr and "+| mnist_5k 1st | 1 -> 6" in done.stdout


def test_conv_paths_smoke(tmp_path):
    md, out = markdown(tmp_path, "conv-paths"), tmp_path / "conv_paths.json"
    run("conv_paths.py", "--batch", 2, "--repeat", 1, "--json", out, "--markdown", md)
    rows = json.loads(out.read_text())["rows"]
    assert len(rows) == 13 and all(ms > 0 for row in rows for ms in row["ms"].values())
    text = md.read_text()
    assert text.startswith("before\n") and text.endswith("after\n")
    assert "| mnist_5k 1st | 1 -> 6 | 28x28 |" in text and "batch 2, 1 thread" in text
    run("conv_paths.py", "--check", "--json", out, "--markdown", md)


def test_threading_policy_smoke(tmp_path):
    md, out = markdown(tmp_path, "threads-startup"), tmp_path / "threading_policy.json"
    run("threading_policy.py", "mnist_5k", 4, "--rounds", 1, "--steps", 1, "--json", out, "--markdown", md)
    result = json.loads(out.read_text())
    policies = _load_script("threading_policy").POLICIES
    assert list(result["medians"]) == list(policies)
    assert all(m["wall_ms"] > 0 for m in result["medians"].values())
    assert "| workqueue, OpenBLAS single-threaded |" in md.read_text()
    assert "mnist_5k training step at batch 4" in md.read_text()


def test_serve_load_smoke(tmp_path):
    md, out = markdown(tmp_path, "serve"), tmp_path / "load.json"
    run("serve_load.py", "--model", MODEL, "--requests", 8, "--warmup", 2, "--clients", 2, "--out", out,
        "--render", "--markdown", md)
    record = json.loads(out.read_text())
    assert record["sequential"]["requests"] == 8 and record["concurrent"]["requests"] == 8
    assert record["rss_mib"]["after_concurrent"] > 0 and record["model"] == "tests/data/mnist_20k_digits.safetensors"
    assert "| one after another, 1 connection | 8 |" in md.read_text()


@pytest.mark.realdata
@needs_mnist
def test_data_loading_smoke():
    done = run("data_loading.py", "--batches", 2)
    assert "load MNIST train+test" in done.stdout and "prefetch=True" in done.stdout


@pytest.mark.realdata
@needs_mnist
def test_sweep_test_check_smoke(tmp_path):
    """A finished one-trial sweep whose seed 0 model is the committed mnist_20k test model."""
    sweep = tmp_path / "sweep"
    run_dir = sweep / "trials" / "0000" / "seed0" / "mnist_20k-s0"
    run_dir.mkdir(parents=True)
    shutil.copy(MODEL, run_dir / "model.safetensors")
    (sweep / "trials.json").write_text(json.dumps({"sweep": "tiny", "trials": [
        {"number": 0, "state": "COMPLETE", "params": {"max_lr": 0.1}, "val_acc": 0.9,
         "seed_val_acc": {"0": 0.9}, "dir": "trials/0000"},
        {"number": 1, "state": "PRUNED", "params": {"max_lr": 1.0}, "val_acc": None,
         "seed_val_acc": {}, "dir": "trials/0001"}]}))
    run("sweep_test_check.py", sweep, "--into", tmp_path)
    check = json.loads((tmp_path / "test_check.json").read_text())
    assert check["best"] == 0 and [t["number"] for t in check["trials"]] == [0]
    assert 0.9 < check["trials"][0]["test_acc"] <= 1.0


def test_predict_preprocess_smoke(tmp_path):
    pytest.importorskip("sklearn", reason="predict_preprocess.py needs scikit-learn (its UCI digits), "
                                          "which minivgg's test extra does not install")
    run("predict_preprocess.py", "run", MODEL, "--name", "smoke", "--results-dir", tmp_path)
    scores = json.loads((tmp_path / "smoke.json").read_text())["scores"]
    assert 0 < scores["mnist_style"]["accuracy"] <= 1 and scores["as_saved"]["correct"] >= 0
