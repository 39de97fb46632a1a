"""airbench94 in minivgg against the same recipe in PyTorch: the time of a training step.

`compare` times one training step of the airbench94 recipe (forward, label-smoothed cross
entropy, backward, Nesterov SGD with the recipe's parameter groups, Lookahead) at the
recipe's batch size in both frameworks, from the same initial weights, each in a child
process of its own, taking turns (minivgg, torch, torch, minivgg, ...), and reports the
medians, their ratio and the full run they project: the recipe's steps plus its evaluations
(each epoch's plain pass over the test set, the final one with 6 TTA views).

    python benchmarks/airbench94.py compare --reps 3 --steps 2    # writes results/airbench94/step_time.json
    python benchmarks/airbench94.py step --framework torch        # one child, prints JSON
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import common

if __name__ == "__main__":
    common.pin_threads(sys.argv[1:])  # before NumPy loads OpenBLAS

import numpy as np  # noqa: E402

from minivgg import functional as F  # noqa: E402
from minivgg.autograd import Tensor, no_grad  # noqa: E402
from minivgg.experiment import make_lookahead, make_optimizer, param_groups  # noqa: E402
from minivgg.models import build, get_recipe  # noqa: E402
from minivgg.run_record import machine  # noqa: E402
from minivgg.summary import count_flops  # noqa: E402

RESULTS = common.ROOT / "benchmarks" / "results" / "airbench94"

RECIPE = get_recipe("airbench94")
STEPS_PER_EPOCH = 50_000 // RECIPE.batch_size


def _batch(n, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, 3, 32, 32)).astype(np.float32), rng.integers(0, 10, n)


def minivgg_stepper(batch):
    model = build("airbench94", seed=0)
    optimizer = make_lookahead(RECIPE, make_optimizer(RECIPE, param_groups(RECIPE, model)), model,
                               STEPS_PER_EPOCH)
    x, y = _batch(batch)

    def step():
        loss = F.cross_entropy(model(Tensor(x)), y, label_smoothing=RECIPE.label_smoothing)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    def infer():
        model.eval()
        with no_grad():
            model(Tensor(x))
        model.train()

    return step, infer


def torch_twin(torch):
    """The recipe's model (same weights) and optimizer in PyTorch: minivgg's parameter groups
    (experiment.param_groups) mapped onto the twin's parameters by name."""
    from minivgg.interop import to_torch
    model = build("airbench94", seed=0)
    twin = to_torch(model)
    names = {id(p): name for name, p in model.named_parameters()}
    twin_params = dict(twin.named_parameters())
    groups = [{**group, "params": [twin_params[names[id(p)]] for p in group["params"]]}
              for group in param_groups(RECIPE, model)]
    optimizer = torch.optim.SGD(groups, lr=RECIPE.lr, momentum=RECIPE.momentum,
                                nesterov=RECIPE.nesterov, weight_decay=RECIPE.weight_decay)
    return twin, optimizer


class TorchLookahead:
    """airbench's: every k steps, slow.lerp_(fast, alpha); fast.copy_(slow), over the
    parameters and BatchNorm statistics."""

    def __init__(self, model, k):
        self.model, self.k = model, k
        self.steps, self.slow = 0, None

    def tensors(self):
        return [t for t in self.model.state_dict().values() if t.is_floating_point()]

    def step(self, total):
        self.steps += 1
        if self.steps % self.k:
            return
        if self.slow is None:
            self.slow = [t.clone() for t in self.tensors()]
            return
        alpha = 1 - RECIPE.lookahead_rho ** self.k * min(self.steps / total, 1) ** RECIPE.lookahead_pow
        for slow, fast in zip(self.slow, self.tensors()):
            slow.lerp_(fast, alpha)
            fast.copy_(slow)


def torch_stepper(batch, torch):
    twin, optimizer = torch_twin(torch)
    lookahead = TorchLookahead(twin, RECIPE.lookahead)
    x, y = (torch.from_numpy(a) for a in _batch(batch))
    loss_fn = torch.nn.CrossEntropyLoss(label_smoothing=RECIPE.label_smoothing)

    def step():
        loss = loss_fn(twin(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        lookahead.step(total=10 * STEPS_PER_EPOCH)

    def infer():
        twin.eval()
        with torch.no_grad():
            twin(x)
        twin.train()

    return step, infer


def child(args) -> dict:
    torch = None
    if args.framework == "torch":
        import torch
        torch.set_num_threads(args.threads)
        step, infer = torch_stepper(args.batch, torch)
    else:
        step, infer = minivgg_stepper(args.batch)
    step()  # warm-up: first-touch allocations, caches
    times, cpu = [], []
    for _ in range(args.steps):
        start, start_cpu = time.perf_counter(), time.process_time()
        step()
        times.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    infer()
    start = time.perf_counter()
    infer()
    infer_s = time.perf_counter() - start
    return {"framework": args.framework, "batch": args.batch, "step_s": times, "step_cpu_s": cpu,
            "infer_s_per_image": infer_s / args.batch, "load_average": os.getloadavg()}


def project(step_s: float, infer_per_image: float) -> dict:
    """Wall time of one full run from the recipe's step time and the time per image of
    inference: the recipe's steps, each epoch's plain evaluation of the 10,000 test images,
    and the final TTA's 5 extra views."""
    steps = RECIPE.epochs * STEPS_PER_EPOCH
    evals = 10_000 * (RECIPE.epochs + 5)
    return {"steps": steps, "train_s": steps * step_s, "eval_s": evals * infer_per_image,
            "total_min": (steps * step_s + evals * infer_per_image) / 60}


def compare(args) -> dict:
    runs = {"minivgg": [], "torch": []}
    order = ["minivgg", "torch"]
    for rep in range(args.reps):
        for framework in (order if rep % 2 == 0 else order[::-1]):
            cmd = [sys.executable, __file__, "step", "--framework", framework, "--batch",
                   str(args.batch), "--steps", str(args.steps), "--threads", str(args.threads)]
            out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
            result = json.loads(out.strip().splitlines()[-1])
            runs[framework].append(result)
            print(framework, [round(s, 2) for s in result["step_s"]], flush=True)
    summary = {}
    scale = RECIPE.batch_size / args.batch   # the recipe's step from this batch's, linearly
    for framework, results in runs.items():
        step_s = statistics.median(s for r in results for s in r["step_s"])
        cpu_s = statistics.median(s for r in results for s in r["step_cpu_s"])
        infer = statistics.median(r["infer_s_per_image"] for r in results)
        summary[framework] = {"median_step_s": step_s, "median_step_cpu_s": cpu_s,
                              "median_infer_s_per_image": infer,
                              "projected_run": project(step_s * scale, infer), "runs": results}
    summary["ratio_minivgg_over_torch_step"] = (summary["minivgg"]["median_step_s"]
                                                / summary["torch"]["median_step_s"])
    summary["ratio_minivgg_over_torch_step_cpu"] = (summary["minivgg"]["median_step_cpu_s"]
                                                    / summary["torch"]["median_step_cpu_s"])
    # 3 x forward (forward, input and weight gradients), as BENCHMARKS.md's airbench94 part counts
    forward = count_flops(build("airbench94", seed=0), (3, 32, 32))["forward"]
    summary["flops_per_step"] = 3 * forward * args.batch
    return summary


def main(argv=None):
    shared = argparse.ArgumentParser(add_help=False)
    shared.add_argument("--batch", type=int, default=RECIPE.batch_size)
    shared.add_argument("--steps", type=int, default=2)
    shared.add_argument("--threads", type=int, default=2)
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    s = sub.add_parser("step", parents=[shared])
    s.add_argument("--framework", choices=["minivgg", "torch"], required=True)
    c = sub.add_parser("compare", parents=[shared])
    c.add_argument("--reps", type=int, default=3)
    c.add_argument("--out", type=Path, default=RESULTS / "step_time.json")
    args = parser.parse_args(argv)
    if args.command == "step":
        print(json.dumps(child(args)))
        return
    summary = compare(args)
    summary["command"] = "python benchmarks/airbench94.py " + " ".join(argv or sys.argv[1:])
    summary["machine"] = {**machine(), "git_commit": common.short_commit(),
                          "load_average_at_end": os.getloadavg()}
    common.write_json(args.out, summary)
    for framework in ("minivgg", "torch"):
        print(framework, summary[framework]["median_step_s"], summary[framework]["projected_run"])
    print("ratio", summary["ratio_minivgg_over_torch_step"])


if __name__ == "__main__":
    main()
