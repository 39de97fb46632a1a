"""Tensor and Function: the reverse-mode autograd at the bottom of minivgg.

A `Function` holds a hand-written `forward` (ndarrays in, one ndarray out) and
`backward` (gradient of the output in, one gradient per positional input out).
`Function.apply` wraps the result in a `Tensor` that remembers the Function that
made it; `Tensor.backward()` walks those records once in reverse topological order,
accumulates gradients into leaf tensors and frees each node as soon as it is used.

The graph links Functions, not Tensors: a Function records the Function that made each
input (or the leaf tensor itself), so an intermediate tensor's array lives only as long as
the caller holds the tensor or a Function saved it for its backward, as in PyTorch.
"""
from __future__ import annotations

import contextlib
import threading
import weakref

import numpy as np

_state = threading.local()


def is_grad_enabled() -> bool:
    return getattr(_state, "grad_enabled", True)


@contextlib.contextmanager
def _grad_mode(enabled: bool):
    previous = is_grad_enabled()
    _state.grad_enabled = enabled
    try:
        yield
    finally:
        _state.grad_enabled = previous


def no_grad():
    """Context manager (and decorator) under which no graph is recorded."""
    return _grad_mode(False)


def enable_grad():
    return _grad_mode(True)


class Tensor:
    """An ndarray with an optional gradient and a link to the Function that made it."""

    __slots__ = ("data", "grad", "requires_grad", "_ctx", "__weakref__")
    __array_priority__ = 1000  # so ndarray <op> Tensor defers to Tensor's reflected ops

    def __init__(self, data, requires_grad: bool = False, dtype=None):
        if isinstance(data, Tensor):
            data = data.data
        array = np.asarray(data, dtype=dtype)
        if dtype is None and array.dtype == np.float64 and not isinstance(data, np.ndarray):
            array = array.astype(np.float32)  # Python floats and lists default to float32
        self.data = array
        self.grad = None
        self.requires_grad = bool(requires_grad)
        self._ctx = None

    # ---- array-like properties -------------------------------------------------
    @property
    def shape(self):
        return self.data.shape

    @property
    def ndim(self):
        return self.data.ndim

    @property
    def dtype(self):
        return self.data.dtype

    @property
    def size(self):
        return self.data.size

    @property
    def is_leaf(self) -> bool:
        return self._ctx is None  # freed non-leaves keep the _FREED marker

    def __len__(self):
        return len(self.data)

    def numpy(self) -> np.ndarray:
        return self.data

    def item(self):
        return self.data.item()

    def detach(self) -> "Tensor":
        return Tensor(self.data)

    def __repr__(self):
        grad = ", requires_grad=True" if self.requires_grad else ""
        return f"Tensor({np.array2string(self.data, precision=4, threshold=20)}{grad})"

    # ---- graph traversal ---------------------------------------------------------
    def backward(self, grad=None):
        """Accumulate d(self)/d(leaf) into every leaf's `.grad` that requires it."""
        if not self.requires_grad:
            raise RuntimeError(
                "backward() called on a tensor that does not require grad: it was computed "
                "under no_grad() or from inputs none of which require grad")
        if grad is None:
            if self.data.size != 1:
                raise RuntimeError(
                    f"backward() without a gradient needs a single-element tensor, got shape "
                    f"{self.shape}; pass grad= of that shape")
            grad = np.ones_like(self.data)
        grad = np.asarray(grad.data if isinstance(grad, Tensor) else grad, dtype=self.dtype)
        if grad.shape != self.shape:
            raise ValueError(f"backward(): grad shape {grad.shape} != tensor shape {self.shape}")

        if self._ctx is None:  # a leaf: its own gradient
            self.grad = grad.copy() if self.grad is None else self.grad + grad
            return
        _check_not_freed(self._ctx)
        grads = {id(self._ctx): grad}
        handed_out = {id(grad)}  # arrays a leaf's .grad may not share (optimizers edit in place)
        for node in _topological_order(self._ctx):  # outputs before inputs
            g = grads.pop(id(node), None)
            if g is None:
                continue
            _check_not_freed(node)  # an input whose graph an earlier backward consumed
            if isinstance(node, Tensor):  # a leaf
                if node.grad is None:
                    # Add/Sub pass one gradient array to several inputs: copy shared ones
                    node.grad = g.copy() if id(g) in handed_out or not g.flags.owndata else g
                    handed_out.add(id(node.grad))
                else:
                    node.grad = node.grad + g
                continue
            fn = node
            input_grads = fn.backward(g)
            if not isinstance(input_grads, tuple):
                input_grads = (input_grads,)
            if len(input_grads) != len(fn.inputs):
                raise RuntimeError(
                    f"{type(fn).__name__}.backward returned {len(input_grads)} gradients "
                    f"for {len(fn.inputs)} inputs")
            for inp, shape, ig in zip(fn.inputs, fn.input_shapes, input_grads):
                if ig is None or inp is None:
                    continue
                if ig.shape != shape:
                    raise RuntimeError(
                        f"{type(fn).__name__}.backward gave a gradient of shape {ig.shape} "
                        f"for an input of shape {shape}")
                key = id(inp)
                grads[key] = grads[key] + ig if key in grads else ig
            fn.free()  # free the graph (and what forward saved) as we go

    # ---- operators (thin wrappers over functional.basic) -----------------------
    def __add__(self, other):
        from .functional.basic import add
        return add(self, other)

    __radd__ = __add__

    def __sub__(self, other):
        from .functional.basic import sub
        return sub(self, other)

    def __rsub__(self, other):
        from .functional.basic import sub
        return sub(other, self)

    def __mul__(self, other):
        from .functional.basic import mul
        return mul(self, other)

    __rmul__ = __mul__

    def __truediv__(self, other):
        from .functional.basic import div
        return div(self, other)

    def __neg__(self):
        from .functional.basic import mul
        return mul(self, -1.0)

    def __rtruediv__(self, other):
        from .functional.basic import div
        return div(other, self)

    def __pow__(self, exponent):
        from .functional.basic import power
        return power(self, exponent)

    def __matmul__(self, other):
        from .functional.basic import matmul
        return matmul(self, other)

    def __rmatmul__(self, other):
        from .functional.basic import matmul
        return matmul(other, self)

    def reshape(self, *shape):
        from .functional.basic import reshape
        if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
            shape = tuple(shape[0])
        return reshape(self, shape)

    view = reshape

    def flatten(self, start_dim: int = 1):
        from .functional.basic import flatten
        return flatten(self, start_dim)

    def sum(self, axis=None, keepdims: bool = False):
        from .functional.basic import sum as sum_
        return sum_(self, axis=axis, keepdims=keepdims)

    def mean(self, axis=None, keepdims: bool = False):
        from .functional.basic import mean
        return mean(self, axis=axis, keepdims=keepdims)

    def argmax(self, axis=None):
        return self.data.argmax(axis=axis)


class _FreedGraph:
    """Marks a non-leaf tensor whose graph was consumed by backward()."""

    def __repr__(self):
        return "<freed graph>"


_FREED = _FreedGraph()


def _check_not_freed(node) -> None:
    if node is _FREED:
        raise RuntimeError(
            "backward() through a graph a second time: minivgg frees each graph as its "
            "backward runs; recompute the forward pass to differentiate again")


def _topological_order(root) -> list:
    """Every node reachable from root (Functions, and leaf tensors that need a gradient),
    each after all the nodes that depend on it."""
    order, visited = [], set()
    stack = [(root, False)]
    while stack:
        node, expanded = stack.pop()
        if expanded:
            order.append(node)
            continue
        if id(node) in visited:
            continue
        visited.add(id(node))
        stack.append((node, True))
        if isinstance(node, Function):
            for inp in node.inputs:
                if inp is not None and id(inp) not in visited:
                    stack.append((inp, False))
    order.reverse()
    return order


class Function:
    """One differentiable operation.

    Subclasses define `forward(self, *arrays, **options) -> ndarray` and
    `backward(self, grad) -> tuple` (one entry per positional input, None where no
    gradient is needed). Positional inputs are Tensors, arrays or None (an optional input
    such as a missing bias); keyword options are never differentiated. Before forward
    runs, `self.needs_input_grad` says which positional inputs need a gradient and
    `self.requires_grad` whether any does: forward keeps what backward needs only then.
    """

    needs_input_grad: tuple = ()
    requires_grad: bool = False
    inputs: tuple = ()

    @classmethod
    def apply(cls, *inputs, **options) -> Tensor:
        fn = cls()
        recording = is_grad_enabled()
        fn.needs_input_grad = tuple(
            recording and isinstance(t, Tensor) and t.requires_grad for t in inputs)
        fn.requires_grad = any(fn.needs_input_grad)
        arrays = [t.data if isinstance(t, Tensor) else t for t in inputs]
        out = Tensor(fn.forward(*arrays, **options), requires_grad=fn.requires_grad)
        if fn.requires_grad:
            # per input: the Function that made it, the leaf itself, or None (no gradient)
            fn.inputs = tuple((t if t._ctx is None else t._ctx) if needs else None
                              for t, needs in zip(inputs, fn.needs_input_grad))
            fn.input_shapes = tuple(t.shape if needs else None
                                    for t, needs in zip(inputs, fn.needs_input_grad))
            fn.output = weakref.ref(out)
            out._ctx = fn
        return out

    def free(self) -> None:
        """After backward: drop the graph and everything forward saved; the output tensor,
        if still held, is marked so that a second backward through it says why it fails."""
        out = self.output()
        if out is not None:
            out._ctx = _FREED
        self.__dict__.clear()  # inputs falls back to the class's ()

    def forward(self, *arrays, **options):
        raise NotImplementedError

    def backward(self, grad):
        raise NotImplementedError


def as_tensor(x) -> Tensor:
    return x if isinstance(x, Tensor) else Tensor(x)
