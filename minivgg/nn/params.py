"""Parameter set-up shared by the layers (their argument checks are the functional ops',
in minivgg.functional.checks and .windows)."""
from __future__ import annotations

import math

import numpy as np

from .. import init
from .module import Module, Parameter


def _default_reset_(weight: Parameter, bias: Parameter | None, rng: np.random.Generator):
    """torch's default for Conv2d and Linear: weight kaiming_uniform(a=sqrt(5)), i.e.
    U(-1/sqrt(fan_in), 1/sqrt(fan_in)), and bias from that same distribution."""
    init.kaiming_uniform_(weight, a=math.sqrt(5), rng=rng)
    if bias is not None:
        fan_in, _ = init.calculate_fan_in_and_fan_out(weight)
        bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0.0
        init.uniform_(bias, -bound, bound, rng=rng)


def _register_affine(module: Module, shape: tuple, weight: bool, bias: bool):
    """The per-feature scale (ones) and shift (zeros) of a normalisation layer, or None."""
    if weight:
        module.weight = Parameter(np.ones(shape, dtype=np.float32))
    else:
        module.register_parameter("weight", None)
    if bias:
        module.bias = Parameter(np.zeros(shape, dtype=np.float32))
    else:
        module.register_parameter("bias", None)


def _reset_affine(module: Module):
    if module.weight is not None:
        init.ones_(module.weight)
    if module.bias is not None:
        init.zeros_(module.bias)
