"""Pooling layers."""
from __future__ import annotations

from .. import functional as F
from ..functional.windows import pool_window
from .module import Module


class MaxPool2d(Module):
    def __init__(self, kernel_size, stride=None, padding=0):
        super().__init__()
        self.kernel_size = kernel_size
        self.stride = kernel_size if stride is None else stride
        self.padding = padding
        pool_window(kernel_size, stride, padding, "MaxPool2d")  # checks them

    def forward(self, x):
        return F.max_pool2d(x, self.kernel_size, stride=self.stride, padding=self.padding)

    def torch_twin(self, tnn):
        return tnn.MaxPool2d(self.kernel_size, stride=self.stride, padding=self.padding)

    def extra_repr(self):
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"


class AvgPool2d(Module):
    def __init__(self, kernel_size, stride=None, padding=0, count_include_pad: bool = True):
        super().__init__()
        self.kernel_size = kernel_size
        self.stride = kernel_size if stride is None else stride
        self.padding = padding
        self.count_include_pad = bool(count_include_pad)
        pool_window(kernel_size, stride, padding, "AvgPool2d")  # checks them

    def forward(self, x):
        return F.avg_pool2d(x, self.kernel_size, stride=self.stride, padding=self.padding,
                            count_include_pad=self.count_include_pad)

    def torch_twin(self, tnn):
        return tnn.AvgPool2d(self.kernel_size, stride=self.stride, padding=self.padding,
                             count_include_pad=self.count_include_pad)

    def extra_repr(self):
        text = f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"
        if not self.count_include_pad:
            text += ", count_include_pad=False"
        return text


class AdaptiveAvgPool2d(Module):
    def __init__(self, output_size):
        super().__init__()
        self.output_size = output_size

    def forward(self, x):
        return F.adaptive_avg_pool2d(x, self.output_size)

    def torch_twin(self, tnn):
        return tnn.AdaptiveAvgPool2d(self.output_size)

    def extra_repr(self):
        return f"output_size={self.output_size}"
