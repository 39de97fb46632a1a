"""The autograd core: graph traversal, accumulation, no_grad, freeing, errors, deep graphs."""
import weakref

import numpy as np
import pytest

import minivgg
import minivgg.functional as F
from minivgg import Function, Tensor


def _leaf(values, dtype=np.float64):
    return Tensor(np.array(values, dtype=dtype), requires_grad=True)


def test_diamond_graph_sums_gradients():
    x = _leaf([1.0, -2.0, 3.0])
    y = x * x + x  # x reaches y along three paths
    y.sum().backward()
    np.testing.assert_allclose(x.grad, 2 * x.data + 1)


def test_non_leaf_used_twice_gets_summed_gradient():
    x = _leaf([0.5, 1.5])
    a = x * 2.0  # a non-leaf used by two consumers
    b = F.tanh(a)
    loss = (a * b + a).sum()
    loss.backward()
    t = np.tanh(2 * x.data)
    np.testing.assert_allclose(x.grad, 2 * (t + 2 * x.data * (1 - t * t) + 1))
    assert a.grad is None  # only leaves keep a gradient


def test_same_tensor_as_both_inputs_of_one_op():
    x = _leaf([3.0, -1.0])
    (x * x).sum().backward()
    np.testing.assert_allclose(x.grad, 2 * x.data)
    y = _leaf([2.0, 5.0])
    (y - y).sum().backward()
    np.testing.assert_allclose(y.grad, [0.0, 0.0])


def test_gradients_accumulate_across_backward_calls():
    x = _leaf([1.0, 2.0])
    w = _leaf([3.0, 4.0])
    (x * w).sum().backward()
    (x * w).sum().backward()
    np.testing.assert_allclose(x.grad, 2 * w.data)
    np.testing.assert_allclose(w.grad, 2 * x.data)
    x.grad = None  # what an optimizer's zero_grad does
    (x * 5.0).sum().backward()
    np.testing.assert_allclose(x.grad, [5.0, 5.0])


def test_no_grad_records_nothing():
    x = _leaf([1.0, 2.0])
    with minivgg.no_grad():
        assert not minivgg.is_grad_enabled()
        y = F.relu(x * 2.0 + 1.0)
        with minivgg.enable_grad():
            z = x * 3.0
    assert minivgg.is_grad_enabled()
    assert not y.requires_grad and y._ctx is None and y.is_leaf
    assert z.requires_grad and z._ctx is not None
    with pytest.raises(RuntimeError, match="does not require grad"):
        y.sum().backward()
    assert x.grad is None


def test_no_grad_as_decorator_and_restored_after_an_error():
    @minivgg.no_grad()
    def infer(t):
        return t * 2.0

    x = _leaf([1.0])
    assert not infer(x).requires_grad
    with pytest.raises(ZeroDivisionError):
        with minivgg.no_grad():
            1 / 0
    assert minivgg.is_grad_enabled()
    assert (x * 2.0).requires_grad


def test_constants_do_not_require_grad():
    x = Tensor(np.ones(3))
    y = x * 2.0 + np.ones(3)
    assert not y.requires_grad and y._ctx is None


def test_graph_is_freed_after_backward():
    x = _leaf([1.0, 2.0, 3.0])
    hidden = x * 2.0
    out = F.sigmoid(hidden)
    loss = out.sum()
    fns = [weakref.ref(t._ctx) for t in (hidden, out, loss)]
    loss.backward()
    for t in (hidden, out, loss):
        assert not isinstance(t._ctx, minivgg.Function)
    for fn in fns:
        assert fn() is None  # each Function, and what its forward saved, is released
    assert x.grad is not None


def test_backward_errors():
    x = _leaf([[1.0, 2.0], [3.0, 4.0]])
    y = x * 2.0
    with pytest.raises(RuntimeError,
                       match=r"single-element tensor, got shape \(2, 2\); pass grad="):
        y.backward()
    with pytest.raises(ValueError, match=r"grad shape \(3,\) != tensor shape \(2, 2\)"):
        y.backward(np.ones(3))
    with pytest.raises(RuntimeError, match="does not require grad"):
        Tensor(np.ones(1)).backward()
    y.backward(np.ones((2, 2)))  # with an explicit grad a non-scalar is fine
    np.testing.assert_allclose(x.grad, np.full((2, 2), 2.0))


def test_backward_checks_what_a_function_returns():
    class TooMany(Function):
        def forward(self, x):
            return x * 1.0

        def backward(self, grad):
            return grad, grad

    class WrongShape(Function):
        def forward(self, x):
            return x * 1.0

        def backward(self, grad):
            return (grad.sum(),)

    x = _leaf([1.0, 2.0])
    with pytest.raises(RuntimeError, match="TooMany.backward returned 2 gradients for 1 inputs"):
        TooMany.apply(x).sum().backward()
    with pytest.raises(RuntimeError, match=r"WrongShape.backward gave a gradient of shape \(\) "
                                           r"for an input of shape \(2,\)"):
        WrongShape.apply(x).sum().backward()


def test_function_sees_which_inputs_need_grad():
    seen = {}

    class Probe(Function):
        def forward(self, a, b, c, scale=1.0):
            seen["needs"], seen["requires"] = self.needs_input_grad, self.requires_grad
            return a * scale

        def backward(self, grad):
            return grad, None, None

    w = _leaf([1.0])
    out = Probe.apply(w, np.ones(1), None, scale=2.0)
    assert seen == {"needs": (True, False, False), "requires": True}
    np.testing.assert_allclose(out.data, [2.0])
    Probe.apply(np.ones(1), Tensor(np.ones(1)), None)
    assert seen == {"needs": (False, False, False), "requires": False}
    with minivgg.no_grad():
        Probe.apply(w, w, w)
    assert seen == {"needs": (False, False, False), "requires": False}


def test_deep_chain_does_not_hit_the_recursion_limit():
    x = _leaf([1.0, -1.0])
    y = x
    for _ in range(5000):
        y = y * 1.0001 + 0.0
    y.sum().backward()
    np.testing.assert_allclose(x.grad, np.full(2, 1.0001 ** 5000), rtol=1e-10)
    assert not isinstance(y._ctx, minivgg.Function)


def test_deep_graph_dropped_without_backward():
    x = _leaf([1.0])
    y = x
    for _ in range(20000):
        y = y + 1.0
    del y  # releasing 20,000 linked nodes must not overflow the C stack


def test_tensor_construction_dtypes():
    assert Tensor([1.0, 2.0]).dtype == np.float32  # Python floats default to float32
    assert Tensor(np.ones(2)).dtype == np.float64  # an ndarray keeps its dtype
    assert Tensor(np.ones(2, np.float32)).dtype == np.float32
    assert Tensor([1, 2]).dtype.kind == "i"
    t = _leaf([1.0, 2.0])
    assert Tensor(t).data is t.data and not Tensor(t).requires_grad
    d = t.detach()
    assert not d.requires_grad and d.data is t.data


def test_ndarray_on_the_left_defers_to_tensor():
    t = _leaf([1.0, 2.0])
    out = np.array([3.0, 4.0]) * t + np.array([1.0, 1.0])
    assert isinstance(out, Tensor) and out.requires_grad
    out.sum().backward()
    np.testing.assert_allclose(t.grad, [3.0, 4.0])


def test_second_backward_through_a_freed_graph_is_an_error():
    x = _leaf([1.0, 2.0])
    y = x * 3.0
    loss = y.sum()
    loss.backward()
    with pytest.raises(RuntimeError, match="a second time"):
        loss.backward()
    with pytest.raises(RuntimeError, match="a second time"):
        (y * 2.0).sum().backward()  # y's graph was consumed too


def test_leaf_gradients_never_share_memory():
    a, b = _leaf([1.0, 2.0]), _leaf([3.0, 4.0])
    g = np.array([1.0, 1.0])
    (a + b).backward(g)
    assert a.grad is not b.grad and a.grad is not g
    a.grad *= 10  # an optimizer editing one gradient in place leaves the others alone
    np.testing.assert_array_equal(b.grad, [1.0, 1.0])
    np.testing.assert_array_equal(g, [1.0, 1.0])


def test_reflected_operators_and_power():
    x = _leaf([1.0, 2.0])
    (2.0 / x + x ** 3).sum().backward()
    np.testing.assert_allclose(x.grad, -2.0 / np.array([1.0, 4.0]) + 3 * np.array([1.0, 4.0]))
    m = _leaf([[1.0, 2.0], [3.0, 4.0]])
    out = np.eye(2) @ m
    assert isinstance(out, minivgg.Tensor)
    np.testing.assert_array_equal(out.data, m.data)


def test_graph_keeps_an_intermediate_array_only_where_backward_needs_it():
    # h + 2.0's backward needs nothing of h: once the caller drops h, its array is gone, as
    # PyTorch frees a tensor no saved-for-backward refers to. sigmoid keeps its output.
    x = _leaf(np.linspace(-1.0, 1.0, 1000))
    h = x + 1.0
    s = F.sigmoid(x)
    loss = (h + 2.0).sum() + s.sum()
    h_array, s_array = weakref.ref(h.data), weakref.ref(s.data)
    del h, s
    assert h_array() is None
    assert s_array() is not None
    loss.backward()
    sig = 1 / (1 + np.exp(-np.linspace(-1.0, 1.0, 1000)))
    np.testing.assert_allclose(x.grad, 1 + sig * (1 - sig), rtol=1e-6)
    assert s_array() is None  # and what sigmoid saved goes with its node
