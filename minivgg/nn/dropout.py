"""Dropout layers: each draws its masks from its own Generator (Module.set_rng)."""
from __future__ import annotations

from .. import functional as F
from ..functional.checks import probability
from .module import Module, _as_generator


class _DropoutNd(Module):
    """Shared by Dropout and Dropout2d: p, own Generator, active only in training mode."""

    stochastic = True

    def __init__(self, p: float = 0.5, rng=None):
        super().__init__()
        self.p = probability(p, "p", type(self).__name__)
        self.rng = _as_generator(rng)

    def to_onnx(self, graph, x, shape):
        return x  # the identity in eval mode

    def extra_repr(self):
        return f"p={self.p}"


class Dropout(_DropoutNd):
    """Zero each element with probability p when training, scaling the rest by 1/(1-p)."""

    def forward(self, x):
        return F.dropout(x, self.p, self.training, self.rng)

    def torch_twin(self, tnn):
        return tnn.Dropout(self.p)


class Dropout2d(_DropoutNd):
    """Zero whole channels of (N, C, H, W) with probability p when training."""

    def forward(self, x):
        return F.dropout2d(x, self.p, self.training, self.rng)

    def torch_twin(self, tnn):
        return tnn.Dropout2d(self.p)
