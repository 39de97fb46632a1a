"""batch_norm and layer_norm: gradient checks, PyTorch parity, running statistics, errors."""
import numpy as np
import pytest

import minivgg
import minivgg.functional as F
from conftest import gradcheck
from parity import assert_close, assert_op_matches_torch, run_ours, run_torch

BN_SHAPES = [(5, 3), (4, 2, 3), (3, 2, 3, 2)]


def _data(shape, seed=0, dtype=np.float64, loc=1.5, scale=2.0):
    return (np.random.default_rng(seed).standard_normal(shape) * scale + loc).astype(dtype)


# ---- batch_norm: gradient checks ------------------------------------------------------

@pytest.mark.parametrize("shape", BN_SHAPES)
@pytest.mark.parametrize("eps", [1e-5, 0.1])
def test_batch_norm_training_gradcheck(shape, eps):
    c = shape[1]
    x, w, b = _data(shape), _data((c,), 1), _data((c,), 2)

    def fn(x, w, b):
        running_mean, running_var = np.zeros(c), np.ones(c)
        return F.batch_norm(x, running_mean, running_var, w, b, training=True, eps=eps)

    gradcheck(fn, x, w, b)


@pytest.mark.parametrize("shape", BN_SHAPES)
def test_batch_norm_training_gradcheck_without_affine(shape):
    gradcheck(lambda x: F.batch_norm(x, None, None, training=True), _data(shape))


@pytest.mark.parametrize("shape", BN_SHAPES)
def test_batch_norm_eval_gradcheck(shape):
    c = shape[1]
    running_mean, running_var = _data((c,), 3), _data((c,), 4, loc=2.0, scale=0.3)

    def fn(x, w, b):
        return F.batch_norm(x, running_mean, running_var, w, b, training=False, eps=1e-3)

    gradcheck(fn, _data(shape), _data((c,), 1), _data((c,), 2))
    gradcheck(lambda x: F.batch_norm(x, running_mean, running_var), _data(shape))


@pytest.mark.parametrize("shape", BN_SHAPES)
@pytest.mark.parametrize("training", [True, False])
def test_batch_norm_after_relu_gradcheck(shape, training):
    c = shape[1]
    running_mean, running_var = _data((c,), 3), _data((c,), 4, loc=2.0, scale=0.3)

    def fn(x, w, b):
        return F.batch_norm(x, running_mean.copy(), running_var.copy(), w, b, training=training,
                            relu=True)

    gradcheck(fn, _data(shape, loc=0.5), _data((c,), 1), _data((c,), 2))


@pytest.mark.parametrize("shape", BN_SHAPES)
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("relu", [False, True])
def test_batch_norm_then_relu_gradcheck(shape, training, relu):
    c = shape[1]
    running_mean, running_var = _data((c,), 3), _data((c,), 4, loc=2.0, scale=0.3)

    def fn(x, w, b):
        return F.batch_norm(x, running_mean.copy(), running_var.copy(), w, b, training=training,
                            relu=relu, relu_after=True)

    gradcheck(fn, _data(shape, loc=0.5), _data((c,), 1), _data((c,), 2))


@pytest.mark.parametrize("order", ["relu_then_bn", "bn_then_relu"])
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("from_conv", [False, True])
def test_fused_relu_batch_norm_equals_the_two_ops(order, training, from_conv):
    """relu=True is relu then batch_norm, relu_after=True batch_norm then relu, to the bit:
    outputs, all gradients, running stats (on plain NCHW arrays and on conv2d's (C, H, W, N)
    memory)."""
    rng = np.random.default_rng(5)
    x0 = rng.standard_normal((6, 4, 5, 5), dtype=np.float32)
    k0 = rng.standard_normal((3, 4, 3, 3), dtype=np.float32)
    w0, b0 = _data((3,), 1, np.float32), _data((3,), 2, np.float32)
    g = rng.standard_normal((6, 3, 3, 3), dtype=np.float32)
    results = []
    for fused in (False, True):
        x = minivgg.Tensor(x0, requires_grad=True)
        k = minivgg.Tensor(k0, requires_grad=True)
        w, b = minivgg.Tensor(w0, requires_grad=True), minivgg.Tensor(b0, requires_grad=True)
        stats = [np.zeros(3, np.float32), np.ones(3, np.float32)]
        h = (F.conv2d(x, k) if from_conv
             else minivgg.Tensor(x0[:, :3, 1:4, 1:4].copy(), requires_grad=True))
        if order == "relu_then_bn":
            y = (F.batch_norm(h, *stats, w, b, training=training, relu=True) if fused
                 else F.batch_norm(F.relu(h), *stats, w, b, training=training))
        else:
            y = (F.batch_norm(h, *stats, w, b, training=training, relu_after=True) if fused
                 else F.relu(F.batch_norm(h, *stats, w, b, training=training)))
        y.backward(g)
        grads = [t.grad for t in ((x, k) if from_conv else (h,))] + [w.grad, b.grad]
        results.append([y.data, *grads, *stats])
    for unfused, fused in zip(*results):
        np.testing.assert_array_equal(fused, unfused)


@pytest.mark.parametrize("shape", BN_SHAPES)
def test_batch_norm_relu_dropout_gradcheck(shape):
    c = shape[1]

    def fn(x, w, b):  # the same key every call: the mask is fixed while differentiating
        return F.batch_norm(x, None, None, w, b, training=True, relu_after=True, dropout=0.4,
                            rng=np.random.default_rng(9))

    gradcheck(fn, _data(shape, loc=0.5), _data((c,), 1), _data((c,), 2))


@pytest.mark.parametrize("from_conv", [False, True])
def test_fused_dropout_equals_batch_norm_then_dropout(from_conv):
    """dropout=p with relu_after is relu(batch_norm) then dropout with the same Generator,
    to the bit: output, gradients and running stats, in either memory order."""
    rng = np.random.default_rng(6)
    x0 = rng.standard_normal((6, 4, 5, 5), dtype=np.float32)
    k0 = rng.standard_normal((3, 4, 3, 3), dtype=np.float32)
    g = rng.standard_normal((6, 3, 3, 3), dtype=np.float32)
    results = []
    for fused in (False, True):
        x = minivgg.Tensor(x0, requires_grad=True)
        k = minivgg.Tensor(k0, requires_grad=True)
        stats = [np.zeros(3, np.float32), np.ones(3, np.float32)]
        h = (F.conv2d(x, k) if from_conv
             else minivgg.Tensor(x0[:, :3, 1:4, 1:4].copy(), requires_grad=True))
        drop_rng = np.random.default_rng(4)
        if fused:
            y = F.batch_norm(h, *stats, training=True, relu_after=True, dropout=0.25,
                             rng=drop_rng)
        else:
            y = F.dropout(F.batch_norm(h, *stats, training=True, relu_after=True), 0.25,
                          rng=drop_rng)
        y.backward(g)
        grads = [t.grad for t in ((x, k) if from_conv else (h,))]
        results.append([y.data, *grads, *stats])
    assert 0.3 < np.mean(results[0][0] == 0) < 0.9  # the ReLU's zeros and the dropped
    for unfused, fused in zip(*results):
        np.testing.assert_array_equal(fused, unfused)


def test_fused_dropout_errors():
    x = _data((4, 3), 0, np.float32)
    with pytest.raises(ValueError, match="dropout is fused only after the ReLU of a training"):
        F.batch_norm(x, None, None, training=True, dropout=0.5, rng=np.random.default_rng(0))
    with pytest.raises(ValueError, match="batch_norm: training with p=0.5 needs rng"):
        F.batch_norm(x, None, None, training=True, relu_after=True, dropout=0.5)
    with pytest.raises(ValueError, match="batch_norm: fused dropout needs 0 < p < 1"):
        F.batch_norm(x, None, None, training=True, relu_after=True, dropout=1.0,
                     rng=np.random.default_rng(0))


def test_batch_norm_gradients_of_parameters_only():
    """The first layer's input needs no gradient: weight and bias still get theirs."""
    x = _data((4, 3, 2, 2))
    w = minivgg.Tensor(_data((3,), 1), requires_grad=True)
    b = minivgg.Tensor(_data((3,), 2), requires_grad=True)
    out = F.batch_norm(x, None, None, w, b, training=True)
    out.sum().backward()
    np.testing.assert_allclose(b.grad, np.full(3, 16.0))
    np.testing.assert_allclose(w.grad, np.zeros(3), atol=1e-12)  # sum of xhat is 0


# ---- batch_norm: PyTorch parity (float32) ----------------------------------------------

def _batch_norms(torch, rm, rv, trm, trv, training, momentum=0.1, eps=1e-5):
    """batch_norm of (x, weight, bias) with these running statistics, ours and torch's."""
    def ours(x, w, b):
        return F.batch_norm(x, rm, rv, w, b, training=training, momentum=momentum, eps=eps)

    def theirs(x, w, b):
        return torch.nn.functional.batch_norm(x, trm, trv, w, b, training=training,
                                              momentum=momentum, eps=eps)
    return ours, theirs


@pytest.mark.parametrize("shape", [(16, 5), (8, 4, 7), (8, 4, 6, 6)])
@pytest.mark.parametrize("training", [True, False])
def test_batch_norm_matches_torch(torch, shape, training):
    c = shape[1]
    rng = np.random.default_rng(7)
    x = _data(shape, 1, np.float32, loc=3.0)
    w, b = _data((c,), 2, np.float32), _data((c,), 3, np.float32)
    grad = rng.standard_normal(shape).astype(np.float32)
    rm0 = rng.standard_normal(c).astype(np.float32)
    rv0 = rng.uniform(0.5, 2.0, c).astype(np.float32)
    rm, rv = rm0.copy(), rv0.copy()
    trm, trv = torch.tensor(rm0), torch.tensor(rv0)
    assert_op_matches_torch(torch, *_batch_norms(torch, rm, rv, trm, trv, training), [x, w, b],
                            grad, rtol=1e-5, atol=2e-5, names=["grad x", "grad weight", "grad bias"])
    np.testing.assert_allclose(rm, trm.numpy(), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(rv, trv.numpy(), rtol=1e-6, atol=1e-7)
    if not training:
        np.testing.assert_array_equal(rm, rm0)  # eval leaves the running stats alone
        np.testing.assert_array_equal(rv, rv0)


@pytest.mark.parametrize("momentum", [0.1, 0.5, 1.0])
@pytest.mark.parametrize("eps", [1e-5, 1e-2])
def test_batch_norm_running_stats_track_torch_over_steps(torch, momentum, eps):
    c = 3
    rm, rv = np.zeros(c, np.float32), np.ones(c, np.float32)
    trm, trv = torch.zeros(c), torch.ones(c)
    for step in range(4):
        x = _data((6, c, 4, 4), step, np.float32, loc=step, scale=1 + step)
        ours = F.batch_norm(x, rm, rv, training=True, momentum=momentum, eps=eps).data
        theirs = torch.nn.functional.batch_norm(torch.tensor(x), trm, trv, training=True,
                                                momentum=momentum, eps=eps).numpy()
        np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-5)
    assert rm.dtype == np.float32 and rv.dtype == np.float32
    np.testing.assert_allclose(rm, trm.numpy(), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(rv, trv.numpy(), rtol=1e-6, atol=1e-6)
    x = _data((6, c, 4, 4), 9, np.float32)
    ours = F.batch_norm(x, rm, rv, training=False, eps=eps).data
    theirs = torch.nn.functional.batch_norm(torch.tensor(x), trm, trv, training=False, eps=eps)
    np.testing.assert_allclose(ours, theirs.numpy(), rtol=1e-5, atol=1e-5)


def test_batch_norm_cumulative_average_via_momentum(torch):
    """torch's momentum=None equals passing momentum = 1 / batches seen."""
    rm, rv = np.zeros(2, np.float32), np.ones(2, np.float32)
    trm, trv = torch.zeros(2), torch.ones(2)
    for step in range(1, 4):
        x = _data((5, 2, 3), step, np.float32, loc=step)
        F.batch_norm(x, rm, rv, training=True, momentum=1.0 / step)
        torch.nn.functional.batch_norm(torch.tensor(x), trm, trv, training=True,
                                       momentum=1.0 / step)
    np.testing.assert_allclose(rm, trm.numpy(), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(rv, trv.numpy(), rtol=1e-6, atol=1e-6)


def test_batch_norm_large_float32_batch_is_accurate(torch):
    """A million float32 values per channel, mean far from zero: every output and
    gradient stays within ~1e-6 of a float64 reference (torch float32 is at ~2e-4 on grad
    weight here)."""
    shape = (64, 4, 64, 64)
    x = _data(shape, 0, np.float32, loc=50.0, scale=0.5)
    grad = _data(shape, 1, np.float32, loc=0.3)
    ones, zeros = np.ones(4, np.float32), np.zeros(4, np.float32)
    ours_fn, torch_fn = _batch_norms(torch, None, None, None, None, training=True)
    out, grads, _ = run_ours(ours_fn, [x, ones, zeros], grad)
    as64 = [a.astype(np.float64) for a in (x, ones, zeros)]
    reference = run_torch(torch, torch_fn, as64, grad.astype(np.float64))
    for name, a, r in zip(["output", "grad x", "grad weight", "grad bias"], [out] + grads,
                          [reference[0]] + reference[1]):
        assert_close(a, r, name, rtol=0, atol=2e-6, scale_floor=0.0)


def test_batch_norm_float64_input_with_float32_running_stats():
    x = _data((4, 3, 2, 2))
    rm, rv = np.zeros(3, np.float32), np.ones(3, np.float32)
    assert F.batch_norm(x, rm, rv, training=True).dtype == np.float64
    assert F.batch_norm(x, rm, rv, training=False).dtype == np.float64
    assert rm.dtype == np.float32 and np.any(rm != 0)


def test_batch_norm_under_no_grad_records_nothing():
    x = minivgg.Tensor(_data((4, 3), dtype=np.float32), requires_grad=True)
    with minivgg.no_grad():
        out = F.batch_norm(x, None, None, training=True)
    assert not out.requires_grad and out._ctx is None
    np.testing.assert_allclose(out.data.mean(axis=0), 0, atol=1e-6)


# ---- batch_norm: errors -------------------------------------------------------------------

def test_batch_norm_errors():
    x = np.zeros((2, 3, 4, 4), np.float32)
    ok_stats = (np.zeros(3, np.float32), np.ones(3, np.float32))
    with pytest.raises(ValueError, match=r"batch_norm expects .*\(2, 3, 4, 4, 1\)"):
        F.batch_norm(np.zeros((2, 3, 4, 4, 1)), None, None, training=True)
    with pytest.raises(ValueError, match=r"batch_norm expects .*\(5,\)"):
        F.batch_norm(np.zeros(5), None, None, training=True)
    with pytest.raises(ValueError, match=r"batch_norm: weight has shape \(4,\).*\(2, 3, 4, 4\)"):
        F.batch_norm(x, *ok_stats, weight=np.ones(4, np.float32), training=True)
    with pytest.raises(ValueError, match=r"batch_norm: bias has shape \(2,\)"):
        F.batch_norm(x, *ok_stats, bias=np.ones(2, np.float32), training=True)
    with pytest.raises(ValueError, match=r"batch_norm: running_mean has shape \(4,\).*3 channels"):
        F.batch_norm(x, np.zeros(4, np.float32), ok_stats[1], training=True)
    with pytest.raises(ValueError, match=r"batch_norm: running_var has shape \(2,\)"):
        F.batch_norm(x, ok_stats[0], np.ones(2, np.float32), training=False)
    with pytest.raises(ValueError, match="running_mean must be a NumPy array"):
        F.batch_norm(x, [0.0, 0.0, 0.0], ok_stats[1], training=True)
    with pytest.raises(ValueError, match="more than 1 value per channel when training"):
        F.batch_norm(np.zeros((1, 3, 1, 1), np.float32), *ok_stats, training=True)
    with pytest.raises(ValueError, match="more than 1 value per channel when training"):
        F.batch_norm(np.zeros((1, 3), np.float32), *ok_stats, training=True)
    F.batch_norm(np.zeros((1, 3), np.float32), *ok_stats, training=False)  # fine in eval
    with pytest.raises(ValueError, match="eval mode .*running_mean or running_var is None"):
        F.batch_norm(x, None, None, training=False)
    with pytest.raises(ValueError, match="momentum must be a number in"):
        F.batch_norm(x, *ok_stats, training=True, momentum=None)
    with pytest.raises(ValueError, match="momentum must be a number in"):
        F.batch_norm(x, *ok_stats, training=True, momentum=1.5)
    with pytest.raises(ValueError, match="eps must be a non-negative number"):
        F.batch_norm(x, *ok_stats, training=True, eps=-1.0)


# ---- layer_norm ---------------------------------------------------------------------------

LN_CASES = [((4, 5), (5,)), ((2, 3, 4), (4,)), ((2, 3, 4), (3, 4)), ((2, 2, 3, 3), (3, 3))]


@pytest.mark.parametrize("shape, normalized_shape", LN_CASES)
def test_layer_norm_gradcheck(shape, normalized_shape):
    x = _data(shape)
    w, b = _data(normalized_shape, 1), _data(normalized_shape, 2)
    gradcheck(lambda x, w, b: F.layer_norm(x, normalized_shape, w, b), x, w, b)
    gradcheck(lambda x: F.layer_norm(x, normalized_shape, eps=1e-2), x)


@pytest.mark.parametrize("shape, normalized_shape", LN_CASES)
@pytest.mark.parametrize("affine", [True, False])
def test_layer_norm_matches_torch(torch, shape, normalized_shape, affine):
    x = _data(shape, 1, np.float32, loc=2.0)
    grad = _data(shape, 2, np.float32)
    xt = torch.tensor(x, requires_grad=True)
    ours_x = minivgg.Tensor(x, requires_grad=True)
    params, tparams = [], []
    if affine:
        for seed in (3, 4):
            p = _data(normalized_shape, seed, np.float32)
            params.append(minivgg.Tensor(p, requires_grad=True))
            tparams.append(torch.tensor(p, requires_grad=True))
    ours = F.layer_norm(ours_x, normalized_shape, *params)
    theirs = torch.nn.functional.layer_norm(xt, normalized_shape, *tparams)
    ours.backward(grad)
    theirs.backward(torch.tensor(grad))
    assert ours.dtype == np.float32 and ours_x.grad.dtype == np.float32
    np.testing.assert_allclose(ours.data, theirs.detach().numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(ours_x.grad, xt.grad.numpy(), rtol=1e-5, atol=1e-5)
    for p, tp in zip(params, tparams):
        assert p.grad.shape == tuple(normalized_shape)
        np.testing.assert_allclose(p.grad, tp.grad.numpy(), rtol=1e-5, atol=1e-5)


def test_layer_norm_int_normalized_shape_and_errors():
    x = _data((2, 3, 4), dtype=np.float32)
    out = F.layer_norm(x, 4)
    np.testing.assert_allclose(out.data.mean(axis=-1), 0, atol=1e-6)
    np.testing.assert_allclose(out.data.var(axis=-1), 1, atol=1e-3)
    with pytest.raises(ValueError, match=r"layer_norm: the input of shape \(2, 3, 4\) does not "
                                         r"end in normalized_shape \(3,\)"):
        F.layer_norm(x, 3)
    with pytest.raises(ValueError, match=r"does not end in normalized_shape \(1, 2, 3, 4\)"):
        F.layer_norm(x, (1, 2, 3, 4))
    with pytest.raises(ValueError, match=r"layer_norm: weight has shape \(3,\).*needs \(4,\)"):
        F.layer_norm(x, 4, weight=np.ones(3, np.float32))
    with pytest.raises(ValueError, match=r"layer_norm: bias has shape \(4,\).*needs \(3, 4\)"):
        F.layer_norm(x, (3, 4), bias=np.ones(4, np.float32))
