"""Convolution layers."""
from __future__ import annotations

import numpy as np

from .. import functional as F
from .module import Module, Parameter, _as_generator, _label, _shape
from .params import _default_reset_, _pair, _positive_int


class Conv2d(Module):
    """2-D convolution over (N, C_in, H, W); weight (C_out, C_in, kh, kw) as in torch."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0,
                 bias: bool = True, rng=None):
        super().__init__()
        name = "Conv2d"
        self.in_channels = _positive_int(in_channels, "in_channels", name)
        self.out_channels = _positive_int(out_channels, "out_channels", name)
        self.kernel_size = _pair(kernel_size, "kernel_size", name, 1)
        self.stride = _pair(stride, "stride", name, 1)
        if isinstance(padding, str):
            if padding not in ("same", "valid"):
                raise ValueError(f"Conv2d: padding must be an int, a pair, 'same' or 'valid', "
                                 f"got {padding!r}")
            if padding == "same" and self.stride != (1, 1):
                raise ValueError(f"Conv2d: padding='same' is not supported for strided "
                                 f"convolutions (stride={self.stride}); use an explicit padding")
            self.padding = padding
        else:
            self.padding = _pair(padding, "padding", name, 0)
        shape = (self.out_channels, self.in_channels) + self.kernel_size  # (C_out, C_in, kh, kw)
        self.weight = Parameter(np.empty(shape, dtype=np.float32))
        if bias:
            self.bias = Parameter(np.empty(self.out_channels, dtype=np.float32))
        else:
            self.register_parameter("bias", None)
        self.reset_parameters(_as_generator(rng))

    def reset_parameters(self, rng):
        _default_reset_(self.weight, self.bias, _as_generator(rng))

    def forward(self, x):
        shape = _shape(x)
        if len(shape) != 4 or shape[1] != self.in_channels:
            raise ValueError(f"{_label(self)}: expected input of shape (N, {self.in_channels}, H, W), "
                             f"got {shape}")
        return F.conv2d(x, self.weight, self.bias, stride=self.stride, padding=self.padding)

    def extra_repr(self):
        text = (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}")
        if self.padding != (0, 0):
            text += f", padding={self.padding}"
        if self.bias is None:
            text += ", bias=False"
        return text
