"""Elementwise activation layers."""
from __future__ import annotations

from .. import functional as F
from ..functional.activation import GELU_APPROXIMATIONS
from ..functional.checks import one_of
from .module import Module


class ReLU(Module):
    def forward(self, x):
        return F.relu(x)

    def torch_twin(self, tnn):
        return tnn.ReLU()


class ELU(Module):
    def __init__(self, alpha: float = 1.0):
        super().__init__()
        self.alpha = alpha

    def forward(self, x):
        return F.elu(x, self.alpha)

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

    def torch_twin(self, tnn):
        return tnn.GELU(approximate=self.approximate)

    def extra_repr(self):
        return f"approximate={self.approximate!r}"


class Tanh(Module):
    def forward(self, x):
        return F.tanh(x)

    def torch_twin(self, tnn):
        return tnn.Tanh()


class Sigmoid(Module):
    def forward(self, x):
        return F.sigmoid(x)

    def torch_twin(self, tnn):
        return tnn.Sigmoid()
