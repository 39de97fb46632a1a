"""Sliding-window geometry shared by convolution and pooling: argument checks and output
sizes."""
from __future__ import annotations

import numbers

import numpy as np

from ..autograd import Tensor


def pair(value, name: str, op: str, minimum: int) -> tuple:
    """An int or a pair of ints (a tuple, list or array), each >= minimum, as a
    (height, width) tuple."""
    values = (value, value) if isinstance(value, numbers.Integral) else value
    if isinstance(values, np.ndarray):
        values = values.tolist()
    if (not isinstance(values, (tuple, list)) or len(values) != 2
            or not all(isinstance(v, numbers.Integral) and not isinstance(v, bool)
                       for v in values)):
        raise ValueError(f"{op}: {name} must be an int or a pair of ints, got {value!r}")
    if min(values) < minimum:
        raise ValueError(f"{op}: {name} must be >= {minimum}, got {value!r}")
    return int(values[0]), int(values[1])


def pool_window(kernel_size, stride, padding, op: str) -> tuple:
    """Checked (kernel, stride, padding) pairs of a pooling window; stride None means the
    kernel size, and the padding may be at most half the kernel, as in PyTorch."""
    kernel = pair(kernel_size, "kernel_size", op, minimum=1)
    stride = kernel if stride is None else pair(stride, "stride", op, minimum=1)
    padding = pair(padding, "padding", op, minimum=0)
    if padding[0] * 2 > kernel[0] or padding[1] * 2 > kernel[1]:
        raise ValueError(f"{op}: padding {padding} must be at most half of kernel_size "
                         f"{kernel} (as in PyTorch); reduce the padding")
    return kernel, stride, padding


def check_input(x: Tensor, op: str) -> None:
    if x.ndim != 4:
        raise ValueError(
            f"{op} expects a 4-D input (N, C, H, W), got shape {tuple(x.shape)}; "
            f"add a batch dimension with x.reshape(1, *x.shape) for a single image")
    if not np.issubdtype(x.dtype, np.floating):
        raise ValueError(f"{op} expects a floating-point input, got dtype {x.dtype}; "
                         f"convert it with x.astype(np.float32)")


def out_length(size: int, kernel: int, stride: int, pad_before: int, pad_after: int) -> int:
    """How many window positions fit along one axis (PyTorch's floor mode)."""
    return (size + pad_before + pad_after - kernel) // stride + 1
