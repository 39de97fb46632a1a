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


def markdown(tmp_path, section: str) -> Path:
    path = tmp_path / "BENCHMARKS.md"
    path.write_text(f"before\n<!-- {section}:begin -->\n<!-- {section}:end -->\nafter\n")
    return path


@pytest.mark.parametrize("command", [["conv_paths.py", "--check"], ["cold_start.py", "--check"],
                                     ["serve_load.py", "--check"], ["predict_preprocess.py", "check"]])
def test_committed_section_matches_committed_json(command):
    """CI: each generated section of BENCHMARKS.md is what its script makes of the kept JSON."""
    assert "matches its results" in run(*command).stdout


def test_check_flags_a_hand_edited_section(tmp_path):
    md = tmp_path / "BENCHMARKS.md"
    shutil.copy(ROOT / "BENCHMARKS.md", md)
    md.write_text(md.read_text().replace("| mnist_5k 1st | 1 -> 6 | 3x3 | 28x28 |", "| mnist_5k 1st | 1 -> 7 | 3x3 | 28x28 |"))
    done = subprocess.run([sys.executable, str(BENCHMARKS / "conv_paths.py"), "--check", "--markdown", str(md)],
                          capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert done.returncode == 1 and "stale" in done.stderr and "+| mnist_5k 1st | 1 -> 6" in done.stdout


def test_conv_paths_smoke(tmp_path):
    md, out = markdown(tmp_path, "conv-paths"), tmp_path / "conv_paths.json"
    run("conv_paths.py", "--batch", 2, "--repeat", 1, "--json", out, "--markdown", md)
    rows = json.loads(out.read_text())["rows"]
    assert len(rows) == 23 and all(ms > 0 for row in rows for ms in row["ms"].values())
    text = md.read_text()
    assert text.startswith("before\n") and text.endswith("after\n")
    assert "| mnist_5k 1st | 1 -> 6 | 3x3 | 28x28 |" in text and "batch 2, 1 thread" in text
    run("conv_paths.py", "--check", "--json", out, "--markdown", md)


@pytest.mark.realdata
@needs_mnist
def test_cold_start_smoke(tmp_path):
    md, out = markdown(tmp_path, "cold-start"), tmp_path / "cold_start.json"
    run("cold_start.py", "--rounds", 1, "--json", out, "--markdown", md, timeout=600)
    result = json.loads(out.read_text())
    assert result["recipe"] == "mnist_5k" and result["command"] == "python benchmarks/cold_start.py --rounds 1"
    assert len(result["cold_s"]) == len(result["warm_s"]) == 1 and result["cold_s"][0] > 0 < result["warm_s"][0]
    text = md.read_text()
    assert text.startswith("before\n") and text.endswith("after\n")
    assert "`minivgg train --recipe mnist_5k` from launch to the end of its first training step, median of 1" in text


def test_serve_load_smoke(tmp_path):
    md, out = markdown(tmp_path, "serve"), tmp_path / "load.json"
    run("serve_load.py", "--model", MODEL, "--requests", 8, "--warmup", 2, "--clients", 2, "--json", out,
        "--markdown", md)
    record = json.loads(out.read_text())
    assert record["sequential"]["requests"] == 8 and record["concurrent"]["requests"] == 8
    assert record["rss_mib"]["after_concurrent"] > 0 and record["model"] == "tests/data/mnist_20k_digits.safetensors"
    assert "| one after another, 1 connection | 8 |" in md.read_text()
    parts = record["rss_parts_mib"]  # the server loaded Numba's kernels through LLVM
    assert parts["llvm_library"] > 0 and parts["anonymous"] > 0
    assert sum(parts.values()) == pytest.approx(record["rss_mib"]["after_concurrent"], abs=2)
    assert "MiB are pages of LLVM's library" in md.read_text()


def test_airbench94_compare_smoke(tmp_path, torch):
    out = tmp_path / "step_time.json"
    run("airbench94.py", "compare", "--batch", 2, "--reps", 1, "--steps", 1, "--out", out)
    summary = json.loads(out.read_text())
    for framework in ("minivgg", "torch"):
        (only,) = summary[framework]["runs"]
        assert only["batch"] == 2 and len(only["step_s"]) == 1 and summary[framework]["median_step_s"] > 0
        assert summary[framework]["projected_run"]["total_min"] > 0
    assert summary["ratio_minivgg_over_torch_step"] > 0 and summary["flops_per_step"] > 0
    assert summary["command"].startswith("python benchmarks/airbench94.py compare --batch 2")


def test_predict_preprocess_smoke(tmp_path):
    pytest.importorskip("sklearn", reason="predict_preprocess.py needs scikit-learn (its UCI digits), "
                                          "which minivgg's test extra does not install")
    run("predict_preprocess.py", "run", MODEL, "--name", "smoke", "--results-dir", tmp_path)
    scores = json.loads((tmp_path / "smoke.json").read_text())["scores"]
    assert 0 < scores["mnist_style"]["accuracy"] <= 1 and scores["as_saved"]["correct"] >= 0
