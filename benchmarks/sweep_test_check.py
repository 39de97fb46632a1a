"""The one test-set check of a finished sweep: each finished trial's weights scored on the test set.

The sweep chose its best trial on validation accuracy alone; this runs after it, once, to see
whether that choice (and the order of the finished trials) holds on the test set. It scores
the model.safetensors of every seed of every finished trial (minivgg.inference, the recipe's
test-time augmentation) and writes test_check.json beside the committed table. Usage:

    MINIVGG_DATA=../shared/datasets python benchmarks/sweep_test_check.py SWEEP_DIR \\
        --into benchmarks/results/sweeps/NAME
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from minivgg.experiment import write_json  # noqa: E402
from minivgg.inference import evaluate_checkpoint  # noqa: E402


def check(sweep_dir: Path, data_dir=None) -> dict:
    table = json.loads((sweep_dir / "trials.json").read_text())
    rows = []
    for r in sorted(table["trials"], key=lambda r: -(r["val_acc"] or 0)):
        if r["state"] != "COMPLETE":
            continue
        seeds = {}
        for seed, val_acc in sorted(r["seed_val_acc"].items()):
            run, = [p for p in (sweep_dir / r["dir"] / f"seed{seed}").iterdir() if p.is_dir()]
            result = evaluate_checkpoint(run, split="test", data_dir=data_dir)
            seeds[seed] = {"val_acc": val_acc, "test_acc": result["accuracy"], "run": run.name}
            print(f"trial {r['number']} seed {seed}: val {val_acc:.4f}  test {result['accuracy']:.4f}",
                  flush=True)
        tests = [s["test_acc"] for s in seeds.values()]
        rows.append({"number": r["number"], "params": r["params"], "val_acc": r["val_acc"],
                     "test_acc": sum(tests) / len(tests), "seeds": seeds})
    return {"sweep": table["sweep"], "best": rows[0]["number"] if rows else None, "trials": rows}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("sweep_dir", type=Path, help="the folder `minivgg sweep` wrote (with trials/)")
    p.add_argument("--into", type=Path, help="folder for test_check.json (default: SWEEP_DIR)")
    p.add_argument("--data-dir", help="default $MINIVGG_DATA")
    args = p.parse_args(argv)
    result = check(args.sweep_dir, args.data_dir)
    out = (args.into or args.sweep_dir) / "test_check.json"
    write_json(out, result)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
