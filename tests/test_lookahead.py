"""Lookahead around SGD and Adam against a reference written on torch (airbench's own rule:
slow.lerp_(fast, alpha); fast.copy_(slow) every k steps), over many steps, with resume."""
import numpy as np
import pytest

import minivgg
from minivgg.checkpoint import flatten_state, unflatten_state
from minivgg.optim import SGD, Adam, Lookahead

SHAPES = [(4, 3), (5,), (2, 3, 3, 3)]


def _start(torch, seed=0):
    rng = np.random.default_rng(seed)
    values = [rng.standard_normal(s).astype(np.float32) for s in SHAPES]
    ours = [minivgg.Tensor(v.copy(), requires_grad=True) for v in values]
    theirs = [torch.nn.Parameter(torch.tensor(v.copy())) for v in values]
    return ours, theirs


def _grads(step):
    rng = np.random.default_rng(1000 + step)
    return [rng.standard_normal(s).astype(np.float32) for s in SHAPES]


class TorchLookahead:
    def __init__(self, params, opt, k, alpha, start, buffers):
        self.params, self.opt, self.k, self.alpha, self.start = params, opt, k, alpha, start
        self.buffers, self.steps, self.slow = buffers, 0, None

    def step(self, torch):
        self.opt.step()
        self.steps += 1
        if self.steps % self.k or self.steps <= self.start:
            return
        tensors = [p.data for p in self.params] + self.buffers
        if self.slow is None:
            self.slow = [t.clone() for t in tensors]
            return
        alpha = self.alpha(self.steps) if callable(self.alpha) else self.alpha
        for slow, fast in zip(self.slow, tensors):
            slow.lerp_(fast, alpha)
            fast.copy_(slow)


def _pair(torch, kind, k, alpha, start):
    ours, theirs = _start(torch)
    buffer = np.linspace(0, 1, 6, dtype=np.float32)
    tbuffer = torch.from_numpy(buffer.copy())
    if kind == "sgd":
        inner, tinner = (SGD(ours, lr=0.05, momentum=0.85, nesterov=True, weight_decay=1e-3),
                         torch.optim.SGD(theirs, lr=0.05, momentum=0.85, nesterov=True, weight_decay=1e-3))
    else:
        inner, tinner = Adam(ours, lr=0.01), torch.optim.Adam(theirs, lr=0.01)
    ours_la = Lookahead(inner, k=k, alpha=alpha, start=start, buffers=[buffer])
    ref = TorchLookahead(theirs, tinner, k, alpha, start, [tbuffer])
    return ours, theirs, buffer, tbuffer, ours_la, ref


def _run(torch, ours, theirs, buffer, tbuffer, opt, ref, steps, first=0):
    for step in range(first, first + steps):
        for p, t, g in zip(ours, theirs, _grads(step)):
            p.grad, t.grad = g.copy(), torch.from_numpy(g.copy())
        buffer += np.float32(0.01)  # a running statistic moving on its own
        tbuffer += 0.01
        opt.step()
        ref.step(torch)
        for i, (p, t) in enumerate(zip(ours, theirs)):
            np.testing.assert_allclose(p.data, t.detach().numpy(), rtol=1e-5, atol=1e-6,
                                       err_msg=f"parameter {i} after step {step + 1}")
        np.testing.assert_allclose(buffer, tbuffer.numpy(), rtol=1e-6)


@pytest.mark.parametrize("kind, k, alpha, start", [
    ("sgd", 5, 0.5, 0), ("adam", 3, 0.8, 0), ("sgd", 5, lambda t: 1 - 0.95 ** 5 * (t / 150) ** 3, 40)])
def test_tracks_the_reference_over_many_steps(torch, kind, k, alpha, start):
    pair = _pair(torch, kind, k, alpha, start)
    _run(torch, *pair, steps=150)
    assert pair[4].step_count == 150 and pair[4].slow is not None


def test_state_dict_resume_continues_exactly(torch):
    alpha = lambda t: 1 - 0.9 * (t / 60) ** 2  # noqa: E731
    ours, theirs, buffer, tbuffer, opt, ref = _pair(torch, "sgd", 4, alpha, 8)
    _run(torch, ours, theirs, buffer, tbuffer, opt, ref, steps=30)
    arrays, tree = flatten_state(opt.state_dict(), "optimizer")  # as a resume file stores it
    saved = unflatten_state(arrays, tree)
    params = [minivgg.Tensor(p.data.copy(), requires_grad=True) for p in ours]
    fresh_buffer = buffer.copy()
    resumed = Lookahead(SGD(params, lr=0.05, momentum=0.85, nesterov=True, weight_decay=1e-3),
                        k=4, alpha=alpha, start=8, buffers=[fresh_buffer])
    resumed.load_state_dict(saved)
    assert resumed.step_count == 30
    _run(torch, params, theirs, fresh_buffer, tbuffer, resumed, ref, steps=30, first=30)


def test_reset_to_slow_and_param_groups(torch):
    ours, theirs, buffer, tbuffer, opt, ref = _pair(torch, "sgd", 5, 0.5, 0)
    opt.reset_to_slow()  # before any sync: nothing to reset to
    _run(torch, ours, theirs, buffer, tbuffer, opt, ref, steps=12)
    opt.reset_to_slow()
    for p, slow in zip(ours, opt.slow):
        np.testing.assert_array_equal(p.data, slow)
    assert opt.param_groups is opt.optimizer.param_groups
    opt.param_groups[0]["lr"] = 0.01
    assert opt.optimizer.param_groups[0]["lr"] == 0.01


def test_bad_arguments_and_states():
    params = [minivgg.Tensor(np.zeros(3, np.float32), requires_grad=True)]
    inner = SGD(params, lr=0.1)
    for kwargs, match in [(dict(k=0), "positive int"), (dict(alpha=1.5), "alpha"),
                          (dict(start=-1), "start"), (dict(buffers=[np.zeros(2, np.int64)]), "buffer 0")]:
        with pytest.raises((ValueError, TypeError), match=match):
            Lookahead(inner, **kwargs)
    with pytest.raises(TypeError, match="wraps a minivgg Optimizer"):
        Lookahead(object())
    la = Lookahead(inner, k=1, alpha=lambda t: 2.0)
    params[0].grad = np.ones(3, np.float32)
    la.step()  # the first sync takes the slow copy
    with pytest.raises(ValueError, match="alpha must be in"):
        la.step()
    with pytest.raises(ValueError, match="expected keys"):
        la.load_state_dict({"optimizer": inner.state_dict()})
    state = la.state_dict()
    state["slow"] = {0: np.zeros(4, np.float32)}
    with pytest.raises(ValueError, match="shape"):
        la.load_state_dict(state)
