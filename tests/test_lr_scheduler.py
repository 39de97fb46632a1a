"""LR schedules against torch.optim.lr_scheduler: same LR (and momentum) at every step."""
import json

import numpy as np
import pytest

import minivgg
from minivgg.optim import SGD, Adam, AdamW, Optimizer
from minivgg.optim import lr_scheduler as ours_lrs

STEPS = 150


def make_optimizers(torch, kind="sgd", lrs=(0.1, 0.02)):
    """Our optimizer and torch's, each with one param group per entry of lrs."""
    ours = [minivgg.Tensor(np.zeros(3, np.float32), requires_grad=True) for _ in lrs]
    theirs = [torch.nn.Parameter(torch.zeros(3)) for _ in lrs]
    def groups(params):
        return [{"params": [p], "lr": lr} for p, lr in zip(params, lrs)]
    if kind == "sgd":
        return SGD(groups(ours), momentum=0.9), torch.optim.SGD(groups(theirs), momentum=0.9)
    return Adam(groups(ours)), torch.optim.Adam(groups(theirs))


def momentum_of(group):
    return group["betas"][0] if "betas" in group else group["momentum"]


def trajectory(scheduler, optimizer, steps, torch_step=None):
    """(LR per group, momentum per group) at steps 0..steps-1; steps the optimizer first, as
    a training loop does (torch warns otherwise)."""
    lrs, momentums = [], []
    for _ in range(steps):
        assert scheduler.get_last_lr() == [g["lr"] for g in optimizer.param_groups]
        lrs.append(scheduler.get_last_lr())
        momentums.append([momentum_of(g) for g in optimizer.param_groups])
        if torch_step is not None:
            torch_step()
        scheduler.step()
    return np.array(lrs), np.array(momentums)


# (name, kwargs for both libraries, optimizer kind, steps); SequentialLR is built below
SCHEDULES = [
    ("StepLR", dict(step_size=7), "sgd", STEPS),
    ("StepLR", dict(step_size=30, gamma=0.5), "adam", STEPS),
    ("MultiStepLR", dict(milestones=[10, 40, 40, 90]), "sgd", STEPS),
    ("MultiStepLR", dict(milestones=[120, 5, 60], gamma=0.3), "sgd", STEPS),
    ("CosineAnnealingLR", dict(T_max=STEPS), "sgd", STEPS),
    ("CosineAnnealingLR", dict(T_max=100, eta_min=1e-3), "adam", 100),
    ("CosineAnnealingLR", dict(T_max=40, eta_min=5e-4), "sgd", STEPS),  # past T_max, periodic
    ("LinearLR", dict(), "sgd", STEPS),
    ("LinearLR", dict(start_factor=0.01, end_factor=1.0, total_iters=100), "sgd", STEPS),
    ("LinearLR", dict(start_factor=1.0, end_factor=0.1, total_iters=60), "adam", STEPS),
    ("OneCycleLR", dict(max_lr=0.4, total_steps=STEPS), "sgd", STEPS),
    ("OneCycleLR", dict(max_lr=[0.4, 1.0], total_steps=STEPS, anneal_strategy="linear"), "sgd", STEPS),
    ("OneCycleLR", dict(max_lr=0.01, total_steps=STEPS, three_phase=True), "adam", STEPS),
    ("OneCycleLR", dict(max_lr=0.3, epochs=5, steps_per_epoch=24, pct_start=0.25,
                        anneal_strategy="linear", three_phase=True, div_factor=10.0,
                        final_div_factor=100.0, base_momentum=[0.8, 0.7],
                        max_momentum=0.9), "sgd", 120),
    ("OneCycleLR", dict(max_lr=0.01, epochs=4, steps_per_epoch=30, cycle_momentum=False),
     "adam", 120),
]


def _id(case):
    name, kwargs, kind, _ = case
    return f"{name}-{kind}-" + ",".join(f"{k}={v}" for k, v in kwargs.items())


@pytest.mark.parametrize("case", SCHEDULES, ids=[_id(c) for c in SCHEDULES])
def test_schedule_tracks_torch(torch, case):
    name, kwargs, kind, steps = case
    opt, ref = make_optimizers(torch, kind)
    ours = getattr(ours_lrs, name)(opt, **kwargs)
    theirs = getattr(torch.optim.lr_scheduler, name)(ref, **kwargs)
    # the initial LR (and the entries torch records in the groups) are set at construction
    for ours_group, torch_group in zip(opt.param_groups, ref.param_groups):
        assert ours_group["initial_lr"] == pytest.approx(torch_group["initial_lr"], rel=1e-15)
        assert ours_group["lr"] == pytest.approx(torch_group["lr"], rel=1e-12)
    lrs, momentums = trajectory(ours, opt, steps)
    torch_lrs, torch_momentums = trajectory(theirs, ref, steps, torch_step=ref.step)
    np.testing.assert_allclose(lrs, torch_lrs, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(momentums, torch_momentums, rtol=1e-12, atol=1e-15)
    assert ours.last_epoch == theirs.last_epoch == steps
    assert len(np.unique(lrs[:, 0])) > 2, "the schedule should change the LR"


def _warmup_then(torch_or_ours, opt, kind):
    lrs = torch_or_ours
    if kind == "warmup+cosine":
        return lrs.SequentialLR(opt, [lrs.LinearLR(opt, start_factor=0.01, total_iters=10),
                                      lrs.CosineAnnealingLR(opt, T_max=110, eta_min=1e-4)],
                                milestones=[10])
    return lrs.SequentialLR(opt, [lrs.LinearLR(opt, start_factor=0.1, total_iters=5),
                                  lrs.StepLR(opt, step_size=10, gamma=0.5),
                                  lrs.CosineAnnealingLR(opt, T_max=60)],
                            milestones=[5, 40])


@pytest.mark.parametrize("kind", ["warmup+cosine", "three schedules"])
def test_sequential_tracks_torch(torch, kind):
    opt, ref = make_optimizers(torch)
    ours = _warmup_then(ours_lrs, opt, kind)
    theirs = _warmup_then(torch.optim.lr_scheduler, ref, kind)
    lrs, _ = trajectory(ours, opt, 120)
    torch_lrs, _ = trajectory(theirs, ref, 120, torch_step=ref.step)
    np.testing.assert_allclose(lrs, torch_lrs, rtol=1e-12, atol=1e-15)
    assert lrs[0, 0] == pytest.approx(0.1 * (0.01 if kind == "warmup+cosine" else 0.1))


def test_inverse_time_tracks_torch_lambda(torch):
    """Keras' per-batch `decay`; torch has no class for it, so compare with LambdaLR."""
    opt, ref = make_optimizers(torch)
    ours = ours_lrs.InverseTimeLR(opt, decay=0.01 / 40 * 100)
    theirs = torch.optim.lr_scheduler.LambdaLR(ref, lambda step: 1.0 / (1.0 + 0.01 / 40 * 100 * step))
    lrs, _ = trajectory(ours, opt, STEPS)
    torch_lrs, _ = trajectory(theirs, ref, STEPS, torch_step=ref.step)
    np.testing.assert_allclose(lrs, torch_lrs, rtol=1e-12, atol=1e-15)
    assert lrs[-1, 0] == pytest.approx(0.1 / (1 + 0.025 * (STEPS - 1)))


def test_pure_functions_are_the_schedules(torch):
    opt, _ = make_optimizers(torch, lrs=(0.1,))
    cycle = ours_lrs.OneCycleLR(opt, max_lr=0.5, total_steps=100, three_phase=True)
    for step in range(101):
        assert cycle.get_last_lr() == [ours_lrs.one_cycle_lr(step, 0.5, 100, three_phase=True)]
        assert opt.param_groups[0]["momentum"] == ours_lrs.one_cycle_momentum(
            step, 100, three_phase=True)
        assert cycle.lrs_at(step) == cycle.get_last_lr()
        if step < 100:
            cycle.step()
    assert ours_lrs.step_lr(25, 1.0, step_size=10, gamma=0.5) == 0.25
    assert ours_lrs.multi_step_lr(25, 1.0, [5, 20, 30], gamma=0.1) == pytest.approx(0.01)
    assert ours_lrs.linear_lr(2, 1.0, start_factor=0.5, end_factor=1.0, total_iters=4) == 0.75
    assert ours_lrs.linear_lr(9, 1.0, start_factor=0.5, end_factor=1.0, total_iters=4) == 1.0
    assert ours_lrs.cosine_annealing_lr(50, 1.0, T_max=100, eta_min=0.0) == pytest.approx(0.5)
    assert ours_lrs.cosine_annealing_lr(100, 1.0, T_max=100, eta_min=0.1) == pytest.approx(0.1)
    assert ours_lrs.one_cycle_lr(0, 1.0, 100) == pytest.approx(1 / 25)
    assert ours_lrs.one_cycle_lr(29, 1.0, 100) == pytest.approx(1.0)
    assert ours_lrs.one_cycle_lr(99, 1.0, 100) == pytest.approx(1 / 25 / 1e4)


def test_onecycle_cycles_adams_beta1_and_keeps_beta2(torch):
    opt, _ = make_optimizers(torch, "adam")
    opt.param_groups[0]["betas"] = (0.9, 0.98)
    cycle = ours_lrs.OneCycleLR(opt, max_lr=0.01, total_steps=20)
    assert opt.param_groups[0]["betas"] == (0.95, 0.98)
    for _ in range(5):
        cycle.step()
    assert opt.param_groups[0]["betas"] == (0.85, 0.98)  # the LR peak: the lowest beta1


def test_onecycle_drives_the_optimizer_like_torch(torch):
    """Parameters trained under OneCycleLR with momentum cycling match torch's."""
    rng = np.random.default_rng(0)
    init = rng.standard_normal((4, 5)).astype(np.float32)
    for cls in (SGD, AdamW):
        p = minivgg.Tensor(init.copy(), requires_grad=True)
        q = torch.nn.Parameter(torch.tensor(init.copy()))
        kwargs = dict(lr=0.1, nesterov=True, momentum=0.9) if cls is SGD else dict(lr=0.1)
        opt, ref = cls([p], **kwargs), getattr(torch.optim, cls.__name__)([q], **kwargs)
        ours = ours_lrs.OneCycleLR(opt, max_lr=0.05, total_steps=100)
        theirs = torch.optim.lr_scheduler.OneCycleLR(ref, max_lr=0.05, total_steps=100)
        for _ in range(100):
            g = rng.standard_normal(init.shape).astype(np.float32)
            p.grad, q.grad = g.copy(), torch.tensor(g)
            opt.step()
            ref.step()
            ours.step()
            theirs.step()
        np.testing.assert_allclose(p.data, q.detach().numpy(), rtol=1e-5, atol=1e-6)


def test_onecycle_stepping_past_the_end_is_an_error(torch):
    opt, ref = make_optimizers(torch)
    ours = ours_lrs.OneCycleLR(opt, max_lr=0.1, total_steps=10)
    theirs = torch.optim.lr_scheduler.OneCycleLR(ref, max_lr=0.1, total_steps=10)
    for _ in range(10):  # like torch, step() may be called total_steps times
        ref.step()
        ours.step()
        theirs.step()
    assert ours.get_last_lr() == pytest.approx(theirs.get_last_lr(), rel=1e-12)
    with pytest.raises(ValueError, match="Tried to step 11 times"):
        theirs.step()
    last = ours.get_last_lr()
    with pytest.raises(ValueError, match="step 11 is past total_steps=10"):
        ours.step()
    assert ours.last_epoch == 10 and ours.get_last_lr() == last  # nothing changed


def test_onecycle_zero_length_phase_is_a_clear_error(torch):
    opt, _ = make_optimizers(torch)
    with pytest.raises(ValueError, match="zero length"):  # torch: ZeroDivisionError
        ours_lrs.OneCycleLR(opt, max_lr=0.1, total_steps=10, pct_start=0.1)


class _NoMomentum(Optimizer):
    def __init__(self, params):
        super().__init__(params, dict(lr=0.1))


@pytest.mark.parametrize("build,error,match", [
    (lambda o: ours_lrs.OneCycleLR(o, max_lr=0.1), ValueError, "total_steps, or both epochs"),
    (lambda o: ours_lrs.OneCycleLR(o, max_lr=0.1, epochs=3), ValueError, "both epochs"),
    (lambda o: ours_lrs.OneCycleLR(o, max_lr=0.1, total_steps=0), ValueError, "positive int"),
    (lambda o: ours_lrs.OneCycleLR(o, max_lr=0.1, epochs=2, steps_per_epoch=-1), ValueError,
     "steps_per_epoch must be a positive int"),
    (lambda o: ours_lrs.OneCycleLR(o, max_lr=0.1, total_steps=10, pct_start=1.5), ValueError,
     "pct_start"),
    (lambda o: ours_lrs.OneCycleLR(o, max_lr=0.1, total_steps=10, anneal_strategy="exp"),
     ValueError, "anneal_strategy"),
    (lambda o: ours_lrs.OneCycleLR(o, max_lr=[0.1, 0.2, 0.3], total_steps=10), ValueError,
     "3 values but the optimizer has 2 param groups"),
    (lambda o: ours_lrs.OneCycleLR(o, max_lr=0.1, total_steps=10, div_factor=0), ValueError,
     "div_factor"),
    (lambda o: ours_lrs.StepLR(o, step_size=0), ValueError, "step_size must be a positive int"),
    (lambda o: ours_lrs.MultiStepLR(o, milestones=[3, -1]), ValueError, "milestones"),
    (lambda o: ours_lrs.LinearLR(o, start_factor=0.0), ValueError, "start_factor"),
    (lambda o: ours_lrs.LinearLR(o, end_factor=1.5), ValueError, "end_factor"),
    (lambda o: ours_lrs.LinearLR(o, total_iters=0), ValueError, "total_iters"),
    (lambda o: ours_lrs.CosineAnnealingLR(o, T_max=0), ValueError, "T_max"),
    (lambda o: ours_lrs.InverseTimeLR(o, decay=-0.1), ValueError, "decay must be >= 0"),
    (lambda o: ours_lrs.SequentialLR(o, [ours_lrs.StepLR(o, 3)], milestones=[5]), ValueError,
     "one milestone fewer"),
    (lambda o: ours_lrs.SequentialLR(o, [ours_lrs.StepLR(o, 3), ours_lrs.StepLR(o, 3),
                                         ours_lrs.StepLR(o, 3)], milestones=[5, 5]),
     ValueError, "increase strictly"),
    (lambda o: ours_lrs.SequentialLR(o, [], milestones=[]), ValueError, "at least one"),
    (lambda o: ours_lrs.SequentialLR(o, ["warmup"], milestones=[]), TypeError, "LRScheduler"),
    (lambda o: ours_lrs.StepLR("sgd", step_size=3), TypeError, "not a minivgg Optimizer"),
])
def test_bad_settings(torch, build, error, match):
    opt, _ = make_optimizers(torch)
    lrs = [g["lr"] for g in opt.param_groups]
    with pytest.raises(error, match=match):
        build(opt)
    if match not in ("at least one", "LRScheduler", "one milestone fewer", "increase strictly"):
        assert [g["lr"] for g in opt.param_groups] == lrs  # a rejected schedule changes nothing


def test_onecycle_needs_momentum_to_cycle(torch):
    param = minivgg.Tensor(np.zeros(2, np.float32), requires_grad=True)
    with pytest.raises(ValueError, match="cycle_momentum=False"):
        ours_lrs.OneCycleLR(_NoMomentum([param]), max_lr=0.1, total_steps=10)
    cycle = ours_lrs.OneCycleLR(_NoMomentum([param]), max_lr=0.1, total_steps=10,
                                cycle_momentum=False)
    assert cycle.get_last_lr() == [pytest.approx(0.004)]


def test_sequential_rejects_a_scheduler_of_another_optimizer(torch):
    opt, _ = make_optimizers(torch)
    other, _ = make_optimizers(torch)
    with pytest.raises(ValueError, match="another optimizer"):
        ours_lrs.SequentialLR(opt, [ours_lrs.LinearLR(opt), ours_lrs.StepLR(other, 3)], [5])


# ---- state_dict ---------------------------------------------------------------------------
RESUMABLE = [
    lambda o: ours_lrs.StepLR(o, step_size=7, gamma=0.5),
    lambda o: ours_lrs.MultiStepLR(o, milestones=[30, 60, 90]),
    lambda o: ours_lrs.LinearLR(o, start_factor=0.05, total_iters=80),
    lambda o: ours_lrs.CosineAnnealingLR(o, T_max=100, eta_min=1e-4),
    lambda o: ours_lrs.InverseTimeLR(o, decay=0.05),
    lambda o: ours_lrs.OneCycleLR(o, max_lr=[0.5, 0.1], total_steps=100, three_phase=True),
    lambda o: ours_lrs.SequentialLR(o, [ours_lrs.LinearLR(o, 0.1, total_iters=20),
                                        ours_lrs.CosineAnnealingLR(o, T_max=80)], [20]),
]


@pytest.mark.parametrize("build", RESUMABLE, ids=["step", "multistep", "linear", "cosine",
                                                  "inverse_time", "onecycle", "sequential"])
@pytest.mark.parametrize("kind", ["sgd", "adam"])
def test_resume_from_state_dict_continues_exactly(torch, build, kind):
    opt, _ = make_optimizers(torch, kind)
    scheduler = build(opt)
    lrs, momentums = trajectory(scheduler, opt, 50)
    opt_state = json.loads(json.dumps(opt.state_dict()))  # no gradients yet: no arrays
    sched_state = json.loads(json.dumps(scheduler.state_dict()))
    rest, rest_momentums = trajectory(scheduler, opt, 50)

    for restore_optimizer_first in (False, True):
        fresh_opt, _ = make_optimizers(torch, kind, lrs=(7.0, 7.0))
        if restore_optimizer_first:
            fresh_opt.load_state_dict(opt_state)
            fresh = build(fresh_opt)
        else:
            fresh = build(fresh_opt)
            fresh_opt.load_state_dict(opt_state)
        fresh.load_state_dict(sched_state)
        assert fresh.last_epoch == 50
        resumed, resumed_momentums = trajectory(fresh, fresh_opt, 50)
        np.testing.assert_array_equal(resumed, rest)
        np.testing.assert_array_equal(resumed_momentums, rest_momentums)


def test_state_dict_is_plain(torch):
    opt, _ = make_optimizers(torch)
    scheduler = ours_lrs.SequentialLR(opt, [ours_lrs.LinearLR(opt), ours_lrs.StepLR(opt, 3)], [5])
    state = scheduler.state_dict()
    assert json.loads(json.dumps(state)) == state
    assert state["type"] == "SequentialLR" and state["last_epoch"] == 0
    assert [s["type"] for s in state["schedulers"]] == ["LinearLR", "StepLR"]


def test_load_state_dict_rejects_mismatches(torch):
    opt, _ = make_optimizers(torch)
    cosine = ours_lrs.CosineAnnealingLR(opt, T_max=10)
    step_state = ours_lrs.StepLR(opt, step_size=3).state_dict()
    with pytest.raises(ValueError, match="expected keys"):
        cosine.load_state_dict(step_state)
    with pytest.raises(ValueError, match="saved from a StepLR"):
        cosine.load_state_dict(dict(cosine.state_dict(), type="StepLR"))
    one_group, _ = make_optimizers(torch, lrs=(0.1,))
    with pytest.raises(ValueError, match="2 base LRs but the optimizer has 1 param groups"):
        ours_lrs.CosineAnnealingLR(one_group, T_max=10).load_state_dict(cosine.state_dict())
    seq = ours_lrs.SequentialLR(opt, [ours_lrs.LinearLR(opt), ours_lrs.StepLR(opt, 3)], [5])
    state = seq.state_dict()
    state["schedulers"] = state["schedulers"][:1]
    with pytest.raises(ValueError, match="1 schedulers, this SequentialLR has 2"):
        seq.load_state_dict(state)


def test_construction_sets_initial_lr_once(torch):
    opt, _ = make_optimizers(torch)
    ours_lrs.StepLR(opt, step_size=3)
    opt.param_groups[0]["lr"] = 0.5
    second = ours_lrs.StepLR(opt, step_size=3)  # like torch: initial_lr is kept, lr reset from it
    assert opt.param_groups[0]["initial_lr"] == 0.1 and second.get_last_lr()[0] == 0.1
