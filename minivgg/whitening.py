"""Patch whitening: the weights of a frozen first convolution that decorrelates image patches.

The filters are the eigenvectors of the covariance of every k x k patch of a set of training
images, each scaled by 1 / sqrt(eigenvalue + eps), so the layer's outputs over those patches
have (nearly) unit variance and no correlation; each filter is kept together with its
negation, so a following GELU or ReLU loses no information (Keller Jordan's airbench, after
tysam-code's hlb-CIFAR10). The layer is not trained.
"""
from __future__ import annotations

import numpy as np

from .nn import Conv2d


def patch_covariance(images: np.ndarray, kernel_size: int) -> np.ndarray:
    """The (C*k*k, C*k*k) second-moment matrix of every k x k patch (stride 1, no padding) of
    float images (N, C, H, W), in float64; features ordered as a conv weight's (c, i, j)."""
    if not isinstance(images, np.ndarray) or images.ndim != 4 or images.dtype.kind != "f":
        shown = f"{images.dtype} {images.shape}" if isinstance(images, np.ndarray) else type(images).__name__
        raise ValueError(f"patch_covariance: expects float images (N, C, H, W), normalised as the "
                         f"network sees them; got {shown}")
    n, c, h, w = images.shape
    if isinstance(kernel_size, bool) or not isinstance(kernel_size, int) or not 1 <= kernel_size <= min(h, w):
        raise ValueError(f"patch_covariance: kernel_size must be an int from 1 to {min(h, w)} for "
                         f"{h}x{w} images, got {kernel_size!r}")
    windows = np.lib.stride_tricks.sliding_window_view(images, (kernel_size, kernel_size), axis=(2, 3))
    patches = windows.transpose(0, 2, 3, 1, 4, 5).reshape(-1, c * kernel_size * kernel_size)
    total = np.zeros((patches.shape[1],) * 2)
    for start in range(0, len(patches), 1 << 18):  # float64 blocks: bounded memory
        block = patches[start:start + (1 << 18)].astype(np.float64)
        total += block.T @ block
    return total / len(patches)


def patch_whitening_weights(images: np.ndarray, kernel_size: int = 2, eps: float = 5e-4) -> np.ndarray:
    """Conv weights (2*C*k*k, C, k, k): the patch covariance's eigenvectors, largest eigenvalue
    first, scaled by 1/sqrt(eigenvalue + eps), then the same filters negated."""
    if not eps > 0:
        raise ValueError(f"patch_whitening_weights: eps must be > 0, got {eps!r}")
    c = images.shape[1] if isinstance(images, np.ndarray) and images.ndim == 4 else None
    eigenvalues, eigenvectors = np.linalg.eigh(patch_covariance(images, kernel_size))
    order = np.argsort(eigenvalues)[::-1]
    filters = eigenvectors[:, order].T / np.sqrt(eigenvalues[order] + eps)[:, None]
    filters = filters.reshape(-1, c, kernel_size, kernel_size)
    return np.concatenate([filters, -filters]).astype(images.dtype)


def init_patch_whitening_(conv: Conv2d, images: np.ndarray, eps: float = 5e-4) -> Conv2d:
    """Set `conv`'s weight to the patch whitening of `images` and freeze it (requires_grad
    False); its bias, if any, is left as it is (and trainable)."""
    if not isinstance(conv, Conv2d):
        raise TypeError(f"init_patch_whitening_: expected a minivgg.nn.Conv2d, got {type(conv).__name__}")
    kh, kw = conv.kernel_size
    c = conv.in_channels
    if kh != kw or conv.out_channels != 2 * c * kh * kw:
        raise ValueError(f"init_patch_whitening_: the layer must be a square k x k conv with "
                         f"2*C*k*k outputs (here {2 * c * kh * kh} for a {kh}x{kh} kernel on {c} "
                         f"channels); got {conv.out_channels} outputs, kernel {conv.kernel_size}")
    if not isinstance(images, np.ndarray) or images.ndim != 4 or images.shape[1] != c:
        shown = images.shape if isinstance(images, np.ndarray) else type(images).__name__
        raise ValueError(f"init_patch_whitening_: expected images (N, {c}, H, W); got {shown}")
    conv.weight.data[...] = patch_whitening_weights(images, kh, eps)
    conv.weight.requires_grad = False
    conv.weight.grad = None
    return conv
