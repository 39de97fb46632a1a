"""Elementwise activation layers."""
from __future__ import annotations

import math

import numpy as np

from .. import functional as F
from ..functional.activation import GELU_APPROXIMATIONS
from ..functional.checks import one_of
from .module import Module


class ReLU(Module):
    def forward(self, x):
        return F.relu(x)

    def to_onnx(self, graph, x, shape):
        return graph.node("Relu", [x], "relu")

    def torch_twin(self, tnn):
        return tnn.ReLU()


class ELU(Module):
    def __init__(self, alpha: float = 1.0):
        super().__init__()
        self.alpha = alpha

    def forward(self, x):
        return F.elu(x, self.alpha)

    def to_onnx(self, graph, x, shape):
        return graph.node("Elu", [x], "elu", alpha=float(self.alpha))

    def torch_twin(self, tnn):
        return tnn.ELU(self.alpha)

    def extra_repr(self):
        return f"alpha={self.alpha}"


class LeakyReLU(Module):
    def __init__(self, negative_slope: float = 0.01):
        super().__init__()
        self.negative_slope = negative_slope

    def forward(self, x):
        return F.leaky_relu(x, self.negative_slope)

    def to_onnx(self, graph, x, shape):
        return graph.node("LeakyRelu", [x], "leaky_relu", alpha=float(self.negative_slope))

    def torch_twin(self, tnn):
        return tnn.LeakyReLU(self.negative_slope)

    def extra_repr(self):
        return f"negative_slope={self.negative_slope}"


class GELU(Module):
    def __init__(self, approximate: str = "none"):
        super().__init__()
        self.approximate = one_of(approximate, GELU_APPROXIMATIONS, "approximate", "GELU")

    def forward(self, x):
        return F.gelu(x, self.approximate)

    def to_onnx(self, graph, x, shape):
        """0.5 * x * (1 + erf(x / sqrt(2))), or with tanh(sqrt(2 / pi) * (x + 0.044715 x^3))."""
        g = graph
        half_x = g.node("Mul", [x, g.const("half", np.array(0.5, np.float32))], "gelu_half_x")
        if self.approximate == "tanh":
            cube = g.node("Mul", [g.node("Mul", [x, x], "gelu_sq"), x], "gelu_cube")
            inner = g.node("Add", [x, g.node("Mul", [cube, g.const("c", np.array(0.044715, np.float32))],
                                             "gelu_c_cube")], "gelu_inner")
            scaled = g.node("Mul", [inner, g.const("k", np.array(math.sqrt(2 / math.pi), np.float32))],
                            "gelu_scaled")
            phi = g.node("Tanh", [scaled], "gelu_tanh")
        else:
            scaled = g.node("Div", [x, g.const("sqrt2", np.array(math.sqrt(2), np.float32))],
                            "gelu_scaled")
            phi = g.node("Erf", [scaled], "gelu_erf")
        one_plus = g.node("Add", [phi, g.const("one", np.array(1, np.float32))], "gelu_one_plus")
        return g.node("Mul", [half_x, one_plus], "gelu")

    def torch_twin(self, tnn):
        return tnn.GELU(approximate=self.approximate)

    def extra_repr(self):
        return f"approximate={self.approximate!r}"


class Tanh(Module):
    def forward(self, x):
        return F.tanh(x)

    def to_onnx(self, graph, x, shape):
        return graph.node("Tanh", [x], "tanh")

    def torch_twin(self, tnn):
        return tnn.Tanh()


class Sigmoid(Module):
    def forward(self, x):
        return F.sigmoid(x)

    def to_onnx(self, graph, x, shape):
        return graph.node("Sigmoid", [x], "sigmoid")

    def torch_twin(self, tnn):
        return tnn.Sigmoid()
