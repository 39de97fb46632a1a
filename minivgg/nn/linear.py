"""Fully connected and shape layers."""
from __future__ import annotations

import math

import numpy as np

from .. import functional as F
from ..autograd import Tensor
from ..functional.checks import positive_int
from .module import Module, Parameter, _as_generator, _label, _shape
from .params import _default_reset_


class Linear(Module):
    """y = x @ weight.T + bias over (..., in_features); weight (out_features, in_features)."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, rng=None):
        super().__init__()
        self.in_features = positive_int(in_features, "in_features", "Linear")
        self.out_features = positive_int(out_features, "out_features", "Linear")
        self.weight = Parameter(np.empty((self.out_features, self.in_features), dtype=np.float32))
        if bias:
            self.bias = Parameter(np.empty(self.out_features, dtype=np.float32))
        else:
            self.register_parameter("bias", None)
        self.reset_parameters(_as_generator(rng))

    def reset_parameters(self, rng):
        _default_reset_(self.weight, self.bias, _as_generator(rng))

    def forward(self, x):
        shape = _shape(x)
        if len(shape) < 2 or shape[-1] != self.in_features:
            raise ValueError(f"{_label(self)}: expected input of shape (N, {self.in_features}), "
                             f"got {shape}")
        if len(shape) == 2:
            return F.linear(x, self.weight, self.bias)
        # (..., in) -> (M, in) -> (M, out) -> (..., out)
        flat = F.reshape(x, (-1, self.in_features))
        return F.reshape(F.linear(flat, self.weight, self.bias), shape[:-1] + (self.out_features,))

    def multiply_adds(self, input_shape, output_shape):
        return math.prod(output_shape) * self.in_features  # per output value

    def to_onnx(self, graph, x, shape, folded=None):
        """folded: (weight, bias) to use instead of this layer's own (minivgg.export folds a
        BatchNorm that follows into them)."""
        if folded is None:
            folded = (self.weight.data.astype(np.float32),
                      None if self.bias is None else self.bias.data.astype(np.float32))
        weight, bias = folded
        if len(shape) == 2:
            inputs = [x, graph.const("fc_weight", weight)]
            if bias is not None:
                inputs.append(graph.const("fc_bias", bias))
            return graph.node("Gemm", inputs, "fc", transB=1)
        y = graph.node("MatMul", [x, graph.const("fc_weight_t", np.ascontiguousarray(weight.T))],
                       "fc")
        return y if bias is None else graph.node("Add", [y, graph.const("fc_bias", bias)],
                                                 "fc_bias_add")

    def torch_twin(self, tnn):
        return tnn.Linear(self.in_features, self.out_features, bias=self.bias is not None)

    def extra_repr(self):
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"bias={self.bias is not None}")


class Flatten(Module):
    def __init__(self, start_dim: int = 1):
        super().__init__()
        self.start_dim = start_dim

    def forward(self, x):
        return F.flatten(x, self.start_dim)

    def to_onnx(self, graph, x, shape):
        # Reshape's 0 keeps that dimension (the free batch one among them)
        target = np.array([0] * self.start_dim + [-1], dtype=np.int64)
        return graph.node("Reshape", [x, graph.const("flatten_shape", target)], "flatten")

    def torch_twin(self, tnn):
        return tnn.Flatten(self.start_dim)

    def extra_repr(self):
        return f"start_dim={self.start_dim}"


class Identity(Module):
    def forward(self, x):
        return x

    def to_onnx(self, graph, x, shape):
        return x

    def torch_twin(self, tnn):
        return tnn.Identity()


class Scale(Module):
    """Multiply by a constant `factor` (not trained): e.g. a fixed temperature on the logits,
    which, unlike the same factor folded into the weights, also scales their gradient."""

    def __init__(self, factor: float):
        super().__init__()
        if isinstance(factor, bool) or not isinstance(factor, (int, float)) or not math.isfinite(factor):
            raise ValueError(f"Scale: factor must be a finite number, got {factor!r}")
        self.factor = float(factor)

    def forward(self, x):
        data = x.data if isinstance(x, Tensor) else np.asarray(x)
        return F.mul(x, data.dtype.type(self.factor))

    def to_onnx(self, graph, x, shape):
        return graph.node("Mul", [x, graph.const("scale", np.array(self.factor, np.float32))],
                          "scale")

    def torch_twin(self, tnn):
        class Scale(tnn.Module):  # torch.nn has no constant factor layer
            def __init__(self, factor):
                super().__init__()
                self.factor = factor

            def forward(self, x):
                return x * self.factor

        return Scale(self.factor)

    def extra_repr(self):
        return f"factor={self.factor}"
