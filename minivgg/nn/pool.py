"""Pooling layers."""
from __future__ import annotations

import numpy as np

from .. import functional as F
from ..functional.windows import pair, pool_window
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

    def to_onnx(self, graph, x, shape):
        kernel, stride, (ph, pw) = pool_window(self.kernel_size, self.stride, self.padding,
                                               "MaxPool2d")
        return graph.node("MaxPool", [x], "max_pool", kernel_shape=list(kernel),
                          strides=list(stride), pads=[ph, pw, ph, pw])

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

    def to_onnx(self, graph, x, shape):
        kernel, stride, (ph, pw) = pool_window(self.kernel_size, self.stride, self.padding,
                                               "AvgPool2d")
        return graph.node("AveragePool", [x], "avg_pool", kernel_shape=list(kernel),
                          strides=list(stride), pads=[ph, pw, ph, pw],
                          count_include_pad=int(self.count_include_pad))

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

    def to_onnx(self, graph, x, shape):
        """PyTorch's bins: output cell (i, j) averages rows floor(i*H/OH) .. ceil((i+1)*H/OH)
        and the columns likewise; one pooling node when the bins are equal, else a
        ReduceMean per bin."""
        g = graph
        height, width = shape[2], shape[3]
        out_h, out_w = pair(self.output_size, "output_size", "AdaptiveAvgPool2d", minimum=1)
        if (out_h, out_w) == (1, 1):
            return g.node("GlobalAveragePool", [x], "global_avg_pool")
        if height % out_h == 0 and width % out_w == 0:
            kh, kw = height // out_h, width // out_w
            return g.node("AveragePool", [x], "adaptive_avg_pool", kernel_shape=[kh, kw],
                          strides=[kh, kw])
        axes = g.const("hw_axes", np.array([2, 3], np.int64))
        rows = []
        for i in range(out_h):
            r0, r1 = (i * height) // out_h, -(-((i + 1) * height) // out_h)
            cells = []
            for j in range(out_w):
                c0, c1 = (j * width) // out_w, -(-((j + 1) * width) // out_w)
                cell = g.node("Slice", [x, g.const("starts", np.array([r0, c0], np.int64)),
                                        g.const("ends", np.array([r1, c1], np.int64)), axes], "bin")
                cells.append(g.node("ReduceMean", [cell], "bin_mean", axes=[2, 3], keepdims=1))
            rows.append(g.node("Concat", cells, "bin_row", axis=3))
        return g.node("Concat", rows, "adaptive_avg_pool", axis=2)

    def torch_twin(self, tnn):
        return tnn.AdaptiveAvgPool2d(self.output_size)

    def extra_repr(self):
        return f"output_size={self.output_size}"
