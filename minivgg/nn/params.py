"""Argument checks and parameter set-up shared by the layers."""
from __future__ import annotations

import math

import numpy as np

from .. import init
from .module import Module, Parameter


def _pair(value, name: str, layer: str, minimum: int) -> tuple[int, int]:
    """An int or a pair of ints, each >= minimum, as a pair."""
    pair = (value, value) if isinstance(value, (int, np.integer)) else tuple(value)
    if len(pair) != 2 or not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool)
                                 and v >= minimum for v in pair):
        raise ValueError(f"{layer}: {name} must be an int or a pair of ints >= {minimum}, got {value!r}")
    return int(pair[0]), int(pair[1])


def _positive_int(value, name: str, layer: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
        raise ValueError(f"{layer}: {name} must be a positive int, got {value!r}")
    return int(value)


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
