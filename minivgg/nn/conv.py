"""Convolution layers."""
from __future__ import annotations

import math

import numpy as np

from .. import functional as F
from ..autograd import is_grad_enabled
from ..functional.checks import positive_int
from ..functional.conv import conv_padding
from ..functional.windows import pair
from .module import Module, Parameter, _as_generator, _label, _shape
from .params import _default_reset_


class Conv2d(Module):
    """2-D convolution over (N, C_in, H, W); weight (C_out, C_in, kh, kw) as in torch."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0,
                 bias: bool = True, rng=None):
        super().__init__()
        name = "Conv2d"
        self.in_channels = positive_int(in_channels, "in_channels", name)
        self.out_channels = positive_int(out_channels, "out_channels", name)
        self.kernel_size = pair(kernel_size, "kernel_size", name, minimum=1)
        self.stride = pair(stride, "stride", name, minimum=1)
        conv_padding(padding, self.kernel_size, self.stride, name)  # checks it
        self.padding = padding if isinstance(padding, str) else pair(padding, "padding", name, 0)
        shape = (self.out_channels, self.in_channels) + self.kernel_size  # (C_out, C_in, kh, kw)
        self.weight = Parameter(np.empty(shape, dtype=np.float32))
        if bias:
            self.bias = Parameter(np.empty(self.out_channels, dtype=np.float32))
        else:
            self.register_parameter("bias", None)
        self.reset_parameters(_as_generator(rng))

    def reset_parameters(self, rng):
        _default_reset_(self.weight, self.bias, _as_generator(rng))

    def forward(self, x, batch_norm=None, relu: bool = False, batch_norm_after=None,
                max_pool_2x2: bool = False):
        """Inference fusions (Sequential's, where no gradient is recorded), batch_norm and
        batch_norm_after each an eval-mode BatchNorm2d with running statistics: batch_norm,
        that layer applied to this one's output, folded into the weight and bias; relu=True:
        the ReLU of the result, in the same pass where the kernels can; batch_norm_after: that
        layer applied after the ReLU, as a scale and shift in the same pass; max_pool_2x2:
        then a 2x2 stride-2 max pool (see F.conv2d)."""
        shape = _shape(x)
        if len(shape) != 4 or shape[1] != self.in_channels:
            raise ValueError(f"{_label(self)}: expected input of shape (N, {self.in_channels}, H, W), "
                             f"got {shape}")
        weight, bias, affine = self.weight, self.bias, None
        if (batch_norm is not None or batch_norm_after is not None) and is_grad_enabled():
            raise ValueError(f"{_label(self)}: batch_norm= and batch_norm_after= are inference "
                             f"fusions (the batch norm's parameters would get no gradient); "
                             f"call under minivgg.no_grad(), or run the layers one by one")
        if batch_norm is not None:
            folded_weight, folded_bias = batch_norm.fold_into(self)
            dtype = self.weight.data.dtype
            weight, bias = folded_weight.astype(dtype), folded_bias.astype(dtype)
        if batch_norm_after is not None:
            affine = batch_norm_after.eval_scale_shift()
        return F.conv2d(x, weight, bias, stride=self.stride, padding=self.padding, relu=relu,
                        affine=affine, max_pool_2x2=max_pool_2x2)

    def multiply_adds(self, input_shape, output_shape):
        kh, kw = self.kernel_size
        return math.prod(output_shape) * self.in_channels * kh * kw  # per output value

    def to_onnx(self, graph, x, shape, folded=None):
        """folded: (weight, bias) to use instead of this layer's own (minivgg.export folds a
        BatchNorm that follows into them)."""
        if folded is None:
            folded = (self.weight.data.astype(np.float32),
                      None if self.bias is None else self.bias.data.astype(np.float32))
        weight, bias = folded
        inputs = [x, graph.const("conv_weight", weight)]
        if bias is not None:
            inputs.append(graph.const("conv_bias", bias))
        top, bottom, left, right = conv_padding(self.padding, self.kernel_size, self.stride)
        return graph.node("Conv", inputs, "conv", kernel_shape=list(self.kernel_size),
                          strides=list(self.stride), pads=[top, left, bottom, right])

    def torch_twin(self, tnn):
        return tnn.Conv2d(self.in_channels, self.out_channels, self.kernel_size,
                          stride=self.stride, padding=self.padding, bias=self.bias is not None)

    def extra_repr(self):
        text = (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}")
        if self.padding != (0, 0):
            text += f", padding={self.padding}"
        if self.bias is None:
            text += ", bias=False"
        return text
