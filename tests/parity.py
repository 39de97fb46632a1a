"""The tests' one torch-parity helper: the same computation in minivgg and in torch, forward
and backward from the same output gradient, compared.

- `run_ours` / `run_torch`: an op on tensors made from the same arrays, then backward.
- `assert_close`: one result against torch's (dtype, shape, values).
- `assert_op_matches_torch`: an op's output and its inputs' gradients.
- `assert_module_matches_torch`: a layer loaded with a torch layer's weights, over steps:
  output, input gradient, parameter gradients and buffers.
- `assert_model_matches_torch`: a model and its `to_torch` twin under cross-entropy: logits,
  loss and parameter gradients.

Tolerances are each test's own: they are arguments here, with no defaults.
"""
import numpy as np

import minivgg
import minivgg.functional as F


def _numpy(value):
    """An ndarray from an ndarray or a torch tensor."""
    return value.detach().numpy() if hasattr(value, "detach") else np.asarray(value)


def run_ours(fn, arrays, grad, requires_grad=None):
    """fn on minivgg Tensors of `arrays` (None stays None), then backward from `grad`: an
    array, or a function of the output's shape that makes one.

    Returns (output, [each input's gradient, None where it needs none], the grad used)."""
    requires_grad = [True] * len(arrays) if requires_grad is None else requires_grad
    tensors = [None if a is None else minivgg.Tensor(a, requires_grad=needs)
               for a, needs in zip(arrays, requires_grad)]
    out = fn(*tensors)
    grad = grad(tuple(out.shape)) if callable(grad) else grad
    out.backward(grad)
    return out.data, [None if t is None else t.grad for t in tensors], grad


def run_torch(torch, fn, arrays, grad, requires_grad=None):
    """The same in torch, from the gradient array `grad`: (output, [each input's gradient])."""
    requires_grad = [True] * len(arrays) if requires_grad is None else requires_grad
    tensors = [None if a is None else torch.tensor(a, requires_grad=needs)
               for a, needs in zip(arrays, requires_grad)]
    out = fn(*tensors)
    out.backward(torch.tensor(grad))
    grads = [None if t is None or t.grad is None else t.grad.numpy() for t in tensors]
    return out.detach().numpy(), grads


def assert_close(ours, theirs, what, *, rtol, atol, dtype=None, scale_floor=None):
    """ours (an ndarray) equals theirs (an ndarray or a torch tensor) within rtol and atol,
    with the same shape, and with dtype `dtype` when given. With scale_floor, atol is
    relative: multiplied by max(largest |theirs|, scale_floor)."""
    theirs = _numpy(theirs)
    if dtype is not None:
        assert ours.dtype == dtype, f"{what}: dtype {ours.dtype}, expected {np.dtype(dtype)}"
    assert ours.shape == theirs.shape, f"{what}: shape {ours.shape} != {theirs.shape}"
    if scale_floor is not None:
        atol = atol * max(float(np.abs(theirs).max()), scale_floor)
    np.testing.assert_allclose(ours, theirs, rtol=rtol, atol=atol, err_msg=what)


def assert_op_matches_torch(torch, ours_fn, torch_fn, arrays, grad, *, rtol, atol,
                            grad_rtol=None, grad_atol=None, requires_grad=None, names=None,
                            dtype=np.float32, scale_floor=None):
    """ours_fn on minivgg Tensors and torch_fn on torch tensors of the same `arrays`, each
    backward from the same `grad` (see run_ours): the outputs, and each input's gradients
    (with grad_rtol / grad_atol when given, else rtol / atol), agree; an input that needs no
    gradient gets none on either side. names: one per input, for the messages.

    Returns ours and theirs, each (output, gradients)."""
    out, grads, grad = run_ours(ours_fn, arrays, grad, requires_grad)
    t_out, t_grads = run_torch(torch, torch_fn, arrays, grad, requires_grad)
    assert_close(out, t_out, "output", rtol=rtol, atol=atol, dtype=dtype, scale_floor=scale_floor)
    names = names or [f"gradient of input {i}" for i in range(len(arrays))]
    grad_rtol = rtol if grad_rtol is None else grad_rtol
    grad_atol = atol if grad_atol is None else grad_atol
    for name, ours, theirs in zip(names, grads, t_grads):
        assert (ours is None) == (theirs is None), f"{name}: {ours} here, {theirs} in torch"
        if ours is not None:
            assert_close(ours, theirs, name, rtol=grad_rtol, atol=grad_atol, dtype=dtype,
                         scale_floor=scale_floor)
    return (out, grads), (t_out, t_grads)


def torch_state(torch_module) -> dict:
    """A torch module's state_dict as ndarrays."""
    return {k: v.detach().numpy() for k, v in torch_module.state_dict().items()}


def assert_module_matches_torch(torch, ours, theirs, x, *, atol, rtol, steps=1):
    """Load torch's weights into ours; compare outputs, input gradient, every parameter
    gradient (float32) and every buffer, over `steps` forward/backward passes (the first on
    x, the next on x plus noise)."""
    ours.load_state_dict(torch_state(theirs))
    assert list(ours.state_dict()) == list(theirs.state_dict())
    rng = np.random.default_rng(1)
    for step in range(steps):
        xs = x if step == 0 else x + rng.standard_normal(x.shape).astype(np.float32)
        x_ours = minivgg.Tensor(xs.copy(), requires_grad=True)
        x_theirs = torch.tensor(xs, requires_grad=True)
        y_ours, y_theirs = ours(x_ours), theirs(x_theirs)
        assert y_ours.dtype == np.float32
        np.testing.assert_allclose(y_ours.data, y_theirs.detach().numpy(), atol=atol, rtol=rtol,
                                   err_msg="forward")
        g = rng.standard_normal(y_ours.shape).astype(np.float32)
        ours.zero_grad()
        theirs.zero_grad()
        y_ours.backward(g)
        y_theirs.backward(torch.from_numpy(g))
        assert x_ours.grad.dtype == np.float32
        np.testing.assert_allclose(x_ours.grad, x_theirs.grad.numpy(), atol=atol, rtol=rtol,
                                   err_msg="input gradient")
        their_params = dict(theirs.named_parameters())
        assert [name for name, _ in ours.named_parameters()] == list(their_params)
        for name, p in ours.named_parameters():
            assert p.grad is not None and p.grad.dtype == np.float32, name
            np.testing.assert_allclose(p.grad, their_params[name].grad.numpy(), atol=atol,
                                       rtol=rtol, err_msg=f"gradient of {name}")
        for key, value in torch_state(theirs).items():
            np.testing.assert_allclose(ours.state_dict()[key], value, atol=atol, rtol=rtol,
                                       err_msg=f"state {key} after step {step}")


def assert_model_matches_torch(torch, model, twin, x, y, *, rtol, atol, name):
    """model and its torch twin on x with labels y: logits (within rtol, atol), the mean
    cross-entropy (within rtol), and each trainable parameter's gradient (atol relative to
    its largest torch value); a frozen parameter gets no gradient on either side."""
    logits = model(minivgg.Tensor(x))
    loss = F.cross_entropy(logits, y)
    loss.backward()
    tlogits = twin(torch.from_numpy(x))
    tloss = torch.nn.functional.cross_entropy(tlogits, torch.from_numpy(y))
    tloss.backward()
    np.testing.assert_allclose(logits.data, tlogits.detach().numpy(), rtol=rtol, atol=atol)
    np.testing.assert_allclose(float(loss.data), float(tloss.detach()), rtol=rtol)
    tparams = dict(twin.named_parameters())
    for pname, p in model.named_parameters():
        if not p.requires_grad:
            assert p.grad is None and tparams[pname].grad is None, pname
            continue
        assert_close(p.grad, tparams[pname].grad, f"{name}: gradient of {pname}", rtol=rtol,
                     atol=atol, scale_floor=1e-6)
