"""Weight initialisation with PyTorch's formulas (torch.nn.init), drawn from an explicit Generator.

Every function fills a Tensor's (or Parameter's, or a plain ndarray's) data in place, keeps
its dtype and returns it. The random ones take a keyword-only `rng`
(a `numpy.random.Generator`): there is no global random state.
"""
from __future__ import annotations

import math

import numpy as np

from .autograd import Tensor

__all__ = [
    "calculate_gain", "calculate_fan_in_and_fan_out",
    "uniform_", "normal_", "zeros_", "ones_", "constant_",
    "kaiming_uniform_", "kaiming_normal_", "xavier_uniform_", "xavier_normal_", "dirac_",
]


def _array(tensor, fn: str) -> np.ndarray:
    array = tensor.data if isinstance(tensor, Tensor) else tensor
    if not isinstance(array, np.ndarray):
        raise TypeError(f"init.{fn}: expected a Tensor, Parameter or ndarray, got {type(tensor).__name__}")
    if array.dtype.kind != "f":
        raise TypeError(f"init.{fn}: expected floating-point data, got dtype {array.dtype}")
    return array


def _check_rng(rng, fn: str) -> np.random.Generator:
    if not isinstance(rng, np.random.Generator):
        raise TypeError(
            f"init.{fn}: rng must be a numpy.random.Generator (e.g. np.random.default_rng(seed)), "
            f"got {type(rng).__name__}")
    return rng


def calculate_gain(nonlinearity: str, param=None) -> float:
    """The gain torch.nn.init.calculate_gain recommends for a nonlinearity."""
    linear_fns = ("linear", "conv1d", "conv2d", "conv3d", "conv_transpose1d",
                  "conv_transpose2d", "conv_transpose3d", "sigmoid")
    if nonlinearity in linear_fns:
        return 1.0
    if nonlinearity == "tanh":
        return 5.0 / 3
    if nonlinearity == "relu":
        return math.sqrt(2.0)
    if nonlinearity == "leaky_relu":
        slope = 0.01 if param is None else param
        if isinstance(slope, bool) or not isinstance(slope, (int, float)):
            raise ValueError(f"calculate_gain: negative_slope {slope!r} is not a number")
        return math.sqrt(2.0 / (1 + slope ** 2))
    if nonlinearity == "selu":
        return 3.0 / 4
    raise ValueError(
        f"calculate_gain: unsupported nonlinearity {nonlinearity!r}; use one of "
        f"{', '.join(linear_fns + ('tanh', 'relu', 'leaky_relu', 'selu'))}")


def calculate_fan_in_and_fan_out(tensor) -> tuple[int, int]:
    """(fan_in, fan_out) of a weight in PyTorch's layout: (out, in) or (out, in, kh, kw)."""
    shape = np.shape(tensor.data if isinstance(tensor, Tensor) else tensor)
    if len(shape) < 2:
        raise ValueError(
            f"calculate_fan_in_and_fan_out: fan in and fan out need a weight with at least "
            f"2 dimensions (out, in, ...), got shape {tuple(shape)}")
    receptive_field = math.prod(shape[2:])
    return shape[1] * receptive_field, shape[0] * receptive_field


def _fan(tensor, mode: str) -> int:
    if mode not in ("fan_in", "fan_out"):
        raise ValueError(f"init: mode must be 'fan_in' or 'fan_out', got {mode!r}")
    fan_in, fan_out = calculate_fan_in_and_fan_out(tensor)
    return fan_in if mode == "fan_in" else fan_out


def uniform_(tensor, a: float = 0.0, b: float = 1.0, *, rng: np.random.Generator):
    """Fill with U(a, b)."""
    array = _array(tensor, "uniform_")
    rng = _check_rng(rng, "uniform_")
    if not a <= b:
        raise ValueError(f"init.uniform_: need a <= b, got a={a}, b={b}")
    # draw in the target dtype: no float64 temporary for float32 weights
    array[...] = rng.random(array.shape, dtype=array.dtype) * array.dtype.type(b - a) + array.dtype.type(a)
    return tensor


def normal_(tensor, mean: float = 0.0, std: float = 1.0, *, rng: np.random.Generator):
    """Fill with N(mean, std**2)."""
    array = _array(tensor, "normal_")
    rng = _check_rng(rng, "normal_")
    if std < 0:
        raise ValueError(f"init.normal_: std must be >= 0, got {std}")
    array[...] = rng.standard_normal(array.shape, dtype=array.dtype) * array.dtype.type(std) + array.dtype.type(mean)
    return tensor


def constant_(tensor, val: float):
    _array(tensor, "constant_")[...] = val
    return tensor


def zeros_(tensor):
    return constant_(tensor, 0.0)


def ones_(tensor):
    return constant_(tensor, 1.0)


def kaiming_uniform_(tensor, a: float = 0.0, mode: str = "fan_in",
                     nonlinearity: str = "leaky_relu", *, rng: np.random.Generator):
    """He et al. (2015) uniform: U(-bound, bound), bound = gain * sqrt(3 / fan)."""
    if _array(tensor, "kaiming_uniform_").size == 0:
        return tensor
    std = calculate_gain(nonlinearity, a) / math.sqrt(_fan(tensor, mode))
    bound = math.sqrt(3.0) * std
    return uniform_(tensor, -bound, bound, rng=rng)


def kaiming_normal_(tensor, a: float = 0.0, mode: str = "fan_in",
                    nonlinearity: str = "leaky_relu", *, rng: np.random.Generator):
    """He et al. (2015) normal: N(0, std**2), std = gain / sqrt(fan)."""
    if _array(tensor, "kaiming_normal_").size == 0:
        return tensor
    std = calculate_gain(nonlinearity, a) / math.sqrt(_fan(tensor, mode))
    return normal_(tensor, 0.0, std, rng=rng)


def xavier_uniform_(tensor, gain: float = 1.0, *, rng: np.random.Generator):
    """Glorot & Bengio (2010) uniform: bound = gain * sqrt(6 / (fan_in + fan_out))."""
    if _array(tensor, "xavier_uniform_").size == 0:
        return tensor
    fan_in, fan_out = calculate_fan_in_and_fan_out(tensor)
    bound = math.sqrt(3.0) * gain * math.sqrt(2.0 / (fan_in + fan_out))
    return uniform_(tensor, -bound, bound, rng=rng)


def xavier_normal_(tensor, gain: float = 1.0, *, rng: np.random.Generator):
    """Glorot & Bengio (2010) normal: std = gain * sqrt(2 / (fan_in + fan_out))."""
    if _array(tensor, "xavier_normal_").size == 0:
        return tensor
    fan_in, fan_out = calculate_fan_in_and_fan_out(tensor)
    std = gain * math.sqrt(2.0 / (fan_in + fan_out))
    return normal_(tensor, 0.0, std, rng=rng)


def dirac_(tensor, groups: int = 1):
    """torch.nn.init.dirac_: a convolution weight (out, in, *kernel) that passes its input
    through, channel i of each group to output i, zeros elsewhere; outputs beyond `in` per
    group stay zero. To set only the first filters (a partial identity, the rest keeping
    their random init), pass a slice: `dirac_(conv.weight.data[:conv.in_channels])`."""
    array = _array(tensor, "dirac_")
    if array.ndim not in (3, 4, 5):
        raise ValueError(f"init.dirac_: expected a 3-, 4- or 5-dimensional convolution weight "
                         f"(out, in, *kernel), got shape {array.shape}")
    if isinstance(groups, bool) or not isinstance(groups, int) or groups < 1 \
            or array.shape[0] % groups:
        raise ValueError(f"init.dirac_: groups must be a positive int dividing the "
                         f"{array.shape[0]} output channels, got {groups!r}")
    out_per_group = array.shape[0] // groups
    centre = tuple(k // 2 for k in array.shape[2:])
    array[...] = 0
    for g in range(groups):
        for d in range(min(out_per_group, array.shape[1])):
            array[(g * out_per_group + d, d) + centre] = 1
    return tensor
