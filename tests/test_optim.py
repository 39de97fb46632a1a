"""SGD, Adam and AdamW against torch.optim: identical gradients in, same trajectories out."""
import json

import numpy as np
import pytest

import minivgg
from minivgg.optim import SGD, Adam, AdamW, Optimizer
from minivgg.optim.lr_scheduler import OneCycleLR

SHAPES = [(4, 3), (5,), (2, 3, 3, 3)]
STEPS = 120


def make_params(torch, seed=0, shapes=SHAPES, dtype=np.float32):
    """The same random initial values as minivgg Tensors and as torch Parameters."""
    rng = np.random.default_rng(seed)
    values = [rng.standard_normal(s).astype(dtype) for s in shapes]
    ours = [minivgg.Tensor(v.copy(), requires_grad=True) for v in values]
    theirs = [torch.nn.Parameter(torch.tensor(v.copy())) for v in values]
    return ours, theirs


def gradient_stream(seed, shapes=SHAPES, dtype=np.float32):
    rng = np.random.default_rng(seed + 1000)
    while True:
        yield [rng.standard_normal(s).astype(dtype) for s in shapes]


def feed(ours, theirs, grads, torch):
    for a, b, g in zip(ours, theirs, grads):
        a.grad = g.copy()
        b.grad = torch.tensor(g)


def assert_tracks(torch, ours, theirs, opt, ref, steps=STEPS, seed=0, dtype=np.float32,
                  rtol=1e-5, atol=1e-6):
    """Step both optimizers on the same gradients and compare parameters after every step."""
    arrays = [p.data for p in ours]
    start = [p.data.copy() for p in ours]
    grads = gradient_stream(seed, [p.shape for p in ours], dtype)
    for step in range(steps):
        feed(ours, theirs, next(grads), torch)
        opt.step()
        ref.step()
        for i, (a, b) in enumerate(zip(ours, theirs)):
            np.testing.assert_allclose(a.data, b.detach().numpy(), rtol=rtol, atol=atol,
                                       err_msg=f"parameter {i} after step {step + 1}")
    for p, array in zip(ours, arrays):
        assert p.data is array, "the update must be in place"
        assert p.data.dtype == dtype
    for p, s in zip(ours, start):
        assert not np.allclose(p.data, s, rtol=1e-3, atol=1e-3), "a parameter did not move"


SGD_SETTINGS = [
    dict(lr=0.05),
    dict(lr=0.01, momentum=0.9),
    dict(lr=0.01, momentum=0.9, dampening=0.5),
    dict(lr=0.01, momentum=0.9, nesterov=True),
    dict(lr=0.05, weight_decay=0.1),
    dict(lr=0.01, momentum=0.8, dampening=0.2, weight_decay=5e-2),
    dict(lr=0.01, momentum=0.9, nesterov=True, weight_decay=5e-4),
]


@pytest.mark.parametrize("kwargs", SGD_SETTINGS, ids=lambda k: ",".join(map(str, k.items())))
def test_sgd_tracks_torch(torch, kwargs):
    ours, theirs = make_params(torch)
    assert_tracks(torch, ours, theirs, SGD(ours, **kwargs), torch.optim.SGD(theirs, **kwargs))


ADAM_SETTINGS = [
    dict(),
    dict(lr=1e-2, weight_decay=0.05),
    dict(lr=1e-2, betas=(0.5, 0.99), eps=1e-3),
    dict(lr=1e-2, betas=(0.3, 0.9)),  # 1 - beta1 >= 0.5: torch's other lerp formula
    dict(lr=1e-2, betas=(0.0, 0.0)),
]


@pytest.mark.parametrize("kwargs", ADAM_SETTINGS, ids=lambda k: ",".join(map(str, k.items())))
def test_adam_tracks_torch(torch, kwargs):
    ours, theirs = make_params(torch)
    assert_tracks(torch, ours, theirs, Adam(ours, **kwargs), torch.optim.Adam(theirs, **kwargs))


@pytest.mark.parametrize("kwargs", [dict(), dict(weight_decay=0.0), dict(lr=1e-2, weight_decay=0.1),
                                    dict(lr=1e-2, betas=(0.8, 0.95), weight_decay=0.3)],
                         ids=lambda k: ",".join(map(str, k.items())))
def test_adamw_tracks_torch(torch, kwargs):
    ours, theirs = make_params(torch)
    assert_tracks(torch, ours, theirs, AdamW(ours, **kwargs), torch.optim.AdamW(theirs, **kwargs))


def test_adamw_decay_differs_from_adam_decay(torch):
    ours, _ = make_params(torch)
    other, _ = make_params(torch)
    a, b = Adam(ours, lr=1e-2, weight_decay=0.1), AdamW(other, lr=1e-2, weight_decay=0.1)
    for grads, _ in zip(gradient_stream(0), range(10)):
        for p, q, g in zip(ours, other, grads):
            p.grad, q.grad = g.copy(), g.copy()
        a.step()
        b.step()
    assert not np.allclose(ours[0].data, other[0].data, rtol=1e-4, atol=0)


def test_float64_params_stay_float64(torch):
    ours, theirs = make_params(torch, dtype=np.float64)
    assert_tracks(torch, ours, theirs, Adam(ours, lr=1e-2, weight_decay=0.01),
                  torch.optim.Adam(theirs, lr=1e-2, weight_decay=0.01), steps=30,
                  dtype=np.float64, rtol=1e-12, atol=1e-13)


def test_state_stays_float32(torch):
    ours, _ = make_params(torch)
    opt = Adam(ours)
    ours[0].grad = np.ones(ours[0].shape, np.float32)
    opt.step()
    state = opt.state[ours[0]]
    assert state["step"] == 1
    assert state["exp_avg"].dtype == np.float32 and state["exp_avg_sq"].dtype == np.float32


# ---- parameter groups ---------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["sgd", "adam"])
def test_param_groups_with_their_own_hyperparameters(torch, kind):
    ours, theirs = make_params(torch)
    if kind == "sgd":
        make = lambda cls, p: cls([{"params": p[:2], "lr": 0.02},
                                   {"params": p[2:], "momentum": 0.5, "weight_decay": 0.1}],
                                  lr=0.005, momentum=0.9, nesterov=False)
        opt, ref = make(SGD, ours), make(torch.optim.SGD, theirs)
    else:
        make = lambda cls, p: cls([{"params": p[:1]}, {"params": p[1:], "lr": 0.02,
                                                       "betas": (0.8, 0.99)}], lr=1e-3)
        opt, ref = make(Adam, ours), make(torch.optim.Adam, theirs)
    assert len(opt.param_groups) == 2
    assert opt.param_groups[1]["lr"] == ref.param_groups[1]["lr"]
    assert_tracks(torch, ours, theirs, opt, ref)


def test_add_param_group(torch):
    ours, theirs = make_params(torch)
    opt, ref = SGD(ours[:1], lr=0.01, momentum=0.9), torch.optim.SGD(theirs[:1], lr=0.01, momentum=0.9)
    opt.add_param_group({"params": ours[1:], "lr": 0.03})
    ref.add_param_group({"params": theirs[1:], "lr": 0.03})
    assert opt.param_groups[1]["momentum"] == 0.9
    assert_tracks(torch, ours, theirs, opt, ref, steps=20)


# ---- grads that are None, zero_grad -------------------------------------------------------
@pytest.mark.parametrize("cls,kwargs", [(SGD, dict(lr=0.01, momentum=0.9)), (Adam, dict(lr=1e-2)),
                                        (AdamW, dict(lr=1e-2))])
def test_params_without_grad_are_skipped(torch, cls, kwargs):
    ours, theirs = make_params(torch)
    opt, ref = cls(ours, **kwargs), getattr(torch.optim, cls.__name__)(theirs, **kwargs)
    grads = gradient_stream(3)
    frozen = ours[1].data.copy()
    for step in range(30):
        g = next(grads)
        for i, (a, b) in enumerate(zip(ours, theirs)):
            has_grad = i != 1 or step >= 20  # parameter 1 gets gradients only from step 20 on
            a.grad = g[i].copy() if has_grad else None
            b.grad = torch.tensor(g[i]) if has_grad else None
        opt.step()
        ref.step()
        if step < 20:
            np.testing.assert_array_equal(ours[1].data, frozen)
            assert ours[1] not in opt.state or not opt.state[ours[1]]
        for a, b in zip(ours, theirs):
            np.testing.assert_allclose(a.data, b.detach().numpy(), rtol=1e-5, atol=1e-6)
    assert not np.array_equal(ours[1].data, frozen)


def test_zero_grad(torch):
    ours, _ = make_params(torch)
    opt = SGD(ours, lr=0.1)
    for p in ours:
        p.grad = np.ones(p.shape, np.float32)
    kept = [p.grad for p in ours]
    opt.zero_grad(set_to_none=False)
    for p, g in zip(ours, kept):
        assert p.grad is g and not g.any()
    opt.zero_grad()
    assert all(p.grad is None for p in ours)
    before = [p.data.copy() for p in ours]
    opt.step()  # nothing has a gradient: nothing moves
    for p, b in zip(ours, before):
        np.testing.assert_array_equal(p.data, b)


def test_closure_is_called_and_its_loss_returned(torch):
    ours, _ = make_params(torch)
    opt = SGD(ours, lr=0.1)

    def closure():
        ours[0].grad = np.ones(ours[0].shape, np.float32)
        return 3.5

    start = ours[0].data.copy()
    assert opt.step(closure) == 3.5
    np.testing.assert_allclose(ours[0].data, start - 0.1, rtol=1e-6)


def test_works_with_autograd_gradients(torch):
    w = minivgg.Tensor(np.full((3,), 2.0, np.float32), requires_grad=True)
    opt = SGD([w], lr=0.25)
    for _ in range(3):
        opt.zero_grad()
        (w * w).sum().backward()  # d/dw = 2w: w <- w - 0.25 * 2w = w / 2
        opt.step()
    np.testing.assert_allclose(w.data, np.full(3, 0.25, np.float32))


# ---- validation ---------------------------------------------------------------------------
@pytest.mark.parametrize("cls,kwargs,match", [
    (SGD, dict(lr=-0.1), "learning rate"),
    (SGD, dict(lr=0.1, momentum=-0.5), "momentum"),
    (SGD, dict(lr=0.1, weight_decay=-1e-4), "weight_decay"),
    (SGD, dict(lr=0.1, nesterov=True), "Nesterov momentum requires a momentum"),
    (SGD, dict(lr=0.1, momentum=0.9, dampening=0.1, nesterov=True), "zero dampening"),
    (Adam, dict(lr=-1e-3), "learning rate"),
    (Adam, dict(eps=-1e-8), "epsilon"),
    (Adam, dict(betas=(1.0, 0.999)), "beta parameter at index 0"),
    (Adam, dict(betas=(0.9, -0.1)), "beta parameter at index 1"),
    (Adam, dict(betas=(0.9, 0.99, 0.9)), "pair"),
    (Adam, dict(weight_decay=-0.1), "weight_decay"),
    (AdamW, dict(lr=float("nan")), "learning rate"),
])
def test_bad_hyperparameters(torch, cls, kwargs, match):
    ours, _ = make_params(torch)
    with pytest.raises(ValueError, match=match):
        cls(ours, **kwargs)


def test_bad_group_hyperparameters_are_caught_too(torch):
    ours, _ = make_params(torch)
    with pytest.raises(ValueError, match="learning rate"):
        SGD([{"params": ours[:1]}, {"params": ours[1:], "lr": -1.0}], lr=0.1)


def test_bad_params(torch):
    ours, _ = make_params(torch)
    with pytest.raises(ValueError, match="empty parameter list"):
        SGD([], lr=0.1)
    with pytest.raises(TypeError, match="single Tensor"):
        SGD(ours[0], lr=0.1)
    with pytest.raises(TypeError, match="not a minivgg Tensor"):
        SGD([np.zeros(3, np.float32)], lr=0.1)
    with pytest.raises(ValueError, match="twice"):
        SGD([ours[0], ours[0]], lr=0.1)
    with pytest.raises(ValueError, match="earlier parameter group"):
        SGD([{"params": ours[:2]}, {"params": ours[1:]}], lr=0.1)
    with pytest.raises(ValueError, match="floating-point"):
        SGD([minivgg.Tensor(np.zeros(3, np.int64))], lr=0.1)
    derived = ours[0] * 2.0
    with pytest.raises(ValueError, match="not a leaf"):
        SGD([derived], lr=0.1)


def test_mismatched_grad_is_a_clear_error(torch):
    ours, _ = make_params(torch)
    opt = Adam(ours)
    ours[1].grad = np.zeros((4,), np.float32)
    with pytest.raises(ValueError, match=r"parameter 1 of group 0 has shape \(5,\).*grad has shape \(4,\)"):
        opt.step()
    ours[1].grad = np.zeros((5,), np.float64)
    with pytest.raises(ValueError, match="dtype float64"):
        opt.step()


# ---- state_dict ---------------------------------------------------------------------------
def json_round_trip(state):
    """Store a state dict as a checkpoint would: JSON for the plain values, arrays by name."""
    arrays = {}

    def strip(value, path):
        if isinstance(value, np.ndarray):
            arrays[path] = value
            return {"__array__": path}
        if isinstance(value, dict):
            return {k: strip(v, f"{path}.{k}") for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [strip(v, f"{path}.{i}") for i, v in enumerate(value)]
        return value

    def restore(value):
        if isinstance(value, dict):
            if set(value) == {"__array__"}:
                return arrays[value["__array__"]].copy()
            return {k: restore(v) for k, v in value.items()}
        if isinstance(value, list):
            return [restore(v) for v in value]
        return value

    return restore(json.loads(json.dumps(strip(state, "optim"))))


OPTIMIZERS = [
    (SGD, dict(lr=0.01, momentum=0.9, nesterov=True, weight_decay=5e-4)),
    (SGD, dict(lr=0.05)),
    (Adam, dict(lr=1e-2)),
    (AdamW, dict(lr=1e-2, weight_decay=0.1)),
]


@pytest.mark.parametrize("cls,kwargs", OPTIMIZERS, ids=lambda x: getattr(x, "__name__", str(x)))
def test_state_dict_resume_continues_exactly(torch, cls, kwargs):
    def groups(params):
        return [{"params": params[:2]}, {"params": params[2:], "lr": 0.003}]

    ours, _ = make_params(torch)
    opt = cls(groups(ours), **kwargs)
    grads = list(zip(range(100), gradient_stream(7)))
    saved_params, saved_state = None, None
    for step, g in grads:
        if step == 50:
            saved_params = [p.data.copy() for p in ours]
            saved_state = json_round_trip(opt.state_dict())
        for p, gi in zip(ours, g):
            p.grad = gi.copy()
        opt.step()

    resumed = [minivgg.Tensor(v, requires_grad=True) for v in saved_params]
    fresh = cls(groups(resumed), **dict(kwargs, lr=123.0))  # hyper-parameters come from the state
    fresh.load_state_dict(saved_state)
    assert fresh.param_groups[1]["lr"] == 0.003
    for step, g in grads[50:]:
        for p, gi in zip(resumed, g):
            p.grad = gi.copy()
        fresh.step()
    for a, b in zip(ours, resumed):
        np.testing.assert_array_equal(a.data, b.data)


def test_state_dict_layout_and_copies(torch):
    ours, _ = make_params(torch)
    opt = Adam([{"params": ours[:1]}, {"params": ours[1:], "lr": 0.1}])
    for p in ours[1:]:
        p.grad = np.ones(p.shape, np.float32)
    opt.step()
    state = opt.state_dict()
    assert [g["params"] for g in state["param_groups"]] == [[0], [1, 2]]
    assert state["param_groups"][1]["lr"] == 0.1
    assert state["param_groups"][0]["betas"] == (0.9, 0.999)
    assert sorted(state["state"]) == [1, 2]  # parameter 0 has no gradient, so no state
    assert state["state"][1]["step"] == 1
    assert state["state"][2]["exp_avg"].shape == SHAPES[2]
    state["state"][1]["exp_avg"][...] = 99.0  # a copy: the optimizer is not affected
    assert not (opt.state[ours[1]]["exp_avg"] == 99.0).any()
    json.dumps(state["param_groups"])


def test_state_dict_carries_scheduler_entries(torch):
    ours, _ = make_params(torch)
    opt = SGD(ours, lr=0.1, momentum=0.9)
    OneCycleLR(opt, max_lr=0.5, total_steps=10)
    group = json_round_trip(opt.state_dict())["param_groups"][0]
    assert group["max_lr"] == 0.5 and group["initial_lr"] == 0.5 / 25.0
    assert group["momentum"] == 0.95


def _trained(torch, cls=Adam, shapes=SHAPES, **kwargs):
    ours, _ = make_params(torch, shapes=shapes)
    opt = cls(ours, **kwargs)
    for p, g in zip(ours, next(gradient_stream(0, shapes))):
        p.grad = g
    opt.step()
    return opt


def test_load_state_dict_rejects_mismatches(torch):
    state = _trained(torch).state_dict()
    ours, _ = make_params(torch)

    with pytest.raises(ValueError, match="2 parameter groups but this optimizer has 1"):
        two_groups = dict(state, param_groups=state["param_groups"] * 2)
        Adam(ours).load_state_dict(two_groups)
    with pytest.raises(ValueError, match="group 0 has 3 parameters but this optimizer's group 0 has 2"):
        Adam(ours[:2]).load_state_dict(state)
    swapped, _ = make_params(torch, shapes=[(3, 4), (5,), (2, 3, 3, 3)])
    with pytest.raises(ValueError, match=r"'exp_avg' of parameter 0 has shape \(4, 3\) but the "
                                         r"parameter has shape \(3, 4\)"):
        Adam(swapped).load_state_dict(state)
    with pytest.raises(ValueError, match="saved from another optimizer"):
        SGD(ours, lr=0.1, momentum=0.9).load_state_dict(state)
    sgd_state = _trained(torch, SGD, lr=0.1, momentum=0.9).state_dict()
    with pytest.raises(ValueError, match="saved from another optimizer"):
        Adam(ours).load_state_dict(sgd_state)
    with pytest.raises(ValueError, match="refers to parameter 7"):
        Adam(ours).load_state_dict(dict(state, state={7: state["state"][0]}))
    with pytest.raises(ValueError, match="keys 'param_groups' and 'state'"):
        Adam(ours).load_state_dict({"state": {}})


def test_failed_load_changes_nothing(torch):
    state = _trained(torch).state_dict()
    state["state"][2]["exp_avg"] = np.zeros((1, 1), np.float32)
    ours, _ = make_params(torch)
    opt = Adam(ours, lr=0.5)
    with pytest.raises(ValueError):
        opt.load_state_dict(state)
    assert opt.param_groups[0]["lr"] == 0.5 and not opt.state


def test_is_an_optimizer_and_has_a_readable_repr(torch):
    ours, _ = make_params(torch)
    opt = SGD(ours, lr=0.1, momentum=0.9)
    assert isinstance(opt, Optimizer)
    assert "momentum: 0.9" in repr(opt) and "SGD" in repr(opt)
