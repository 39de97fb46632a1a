"""Affine warps of image batches: the maps here, the resampling in kernels/warp.py.

Conventions follow torchvision's tensor path (`F.affine`, `F.rotate`):
- pixel centres sit at integer coordinates and the rotation centre is the image centre
  ((W - 1) / 2, (H - 1) / 2), so a rotation by 90 degrees is exactly np.rot90;
- `affine` takes the angle clockwise (as F.affine), `rotate` counter-clockwise
  (as F.rotate); translate is in pixels (x right, y down); scale > 1 zooms in; shear
  is (x, y) in degrees;
- sampling is bilinear with zero padding, and `fill` is blended in by the in-bounds
  weight exactly as torchvision does (out = v * m + (1 - m) * fill, m the sampled
  in-bounds mask).
"""
from __future__ import annotations

import numpy as np

from ..kernels.warp import warp_bilinear


def _per_sample(value, n: int, name: str, width: int = 1) -> np.ndarray:
    """A scalar, a (width,) vector or an (n, width) array -> float64 (n, width)."""
    array = np.asarray(value, dtype=np.float64)
    if array.ndim == 0 or array.shape == (width,):
        return np.broadcast_to(array.reshape(1, -1), (n, width))
    if array.shape in ((n,), (n, width)):
        return array.reshape(n, width)
    raise ValueError(f"affine: {name} must be a number, a length-{width} sequence or have "
                     f"one entry per sample ({n}); got shape {array.shape}")


def inverse_affine_matrices(angle, translate, scale, shear) -> np.ndarray:
    """(N, 2, 3) output->input maps in centred pixel coordinates (torchvision's formula).

    angle (N,) degrees clockwise; translate (N, 2) pixels; scale (N,); shear (N, 2)
    degrees. The forward map is T * C * R(a) S(s) ShY(sy) ShX(sx) * C^-1; this returns
    its inverse, which is what sampling needs.
    """
    rot = np.radians(angle)
    sx, sy = np.radians(shear[:, 0]), np.radians(shear[:, 1])
    tx, ty = translate[:, 0], translate[:, 1]
    # R S ShY ShX = [[a, b], [c, d]] * scale, with det [[a, b], [c, d]] = 1
    a = np.cos(rot - sy) / np.cos(sy)
    b = -np.cos(rot - sy) * np.tan(sx) / np.cos(sy) - np.sin(rot)
    c = np.sin(rot - sy) / np.cos(sy)
    d = -np.sin(rot - sy) * np.tan(sx) / np.cos(sy) + np.cos(rot)
    inv = np.stack([np.stack([d, -b], axis=-1), np.stack([-c, a], axis=-1)], axis=1)
    inv /= scale[:, None, None]                                   # (N, 2, 2)
    offset = -np.einsum("nij,nj->ni", inv, np.stack([tx, ty], axis=-1))
    return np.concatenate([inv, offset[:, :, None]], axis=2)     # (N, 2, 3)


def warp_affine(x: np.ndarray, inverse: np.ndarray, fill=0.0) -> np.ndarray:
    """Resample every image of x (N, C, H, W) through its own inverse map (N, 2, 3)."""
    n, channels, height, width = x.shape
    if inverse.shape != (n, 2, 3):
        raise ValueError(f"warp_affine: need one 2x3 matrix per sample, (N, 2, 3) = "
                         f"({n}, 2, 3); got {inverse.shape}")
    fill = np.asarray(fill, dtype=x.dtype).reshape(-1)
    if fill.shape[0] not in (1, channels):
        raise ValueError(f"warp_affine: fill must be a number or one value per channel "
                         f"({channels}); got {fill.shape[0]} values")
    # Coefficients within 1e-9 of an integer are snapped to it (cos 90 = 6e-17), so
    # right-angle rotations and integer shifts land exactly on pixel centres even in float32.
    snapped = np.round(inverse)
    inverse = np.where(np.abs(inverse - snapped) < 1e-9, snapped, inverse).astype(x.dtype)
    # the centred coordinates of the output pixels
    xc = (np.arange(width) - (width - 1) / 2).astype(x.dtype)
    yc = (np.arange(height) - (height - 1) / 2).astype(x.dtype)
    out = np.empty(x.shape, dtype=x.dtype)
    warp_bilinear(np.ascontiguousarray(x), inverse, xc, yc,
                  np.broadcast_to(fill, (channels,)).copy(), out)
    return out


def affine(x: np.ndarray, angle=0.0, translate=(0.0, 0.0), scale=1.0, shear=(0.0, 0.0),
           fill=0.0) -> np.ndarray:
    """torchvision F.affine on a batch (angle clockwise, degrees); each argument may be
    one value for all samples or one per sample."""
    n = x.shape[0]
    scale = _per_sample(scale, n, "scale")[:, 0]
    if np.any(scale <= 0):
        raise ValueError(f"affine: scale must be positive; got {scale.min()}")
    with np.errstate(over="ignore", invalid="ignore"):  # checked just below
        inverse = inverse_affine_matrices(_per_sample(angle, n, "angle")[:, 0],
                                          _per_sample(translate, n, "translate", 2), scale,
                                          _per_sample(shear, n, "shear", 2))
    if not np.all(np.isfinite(inverse)):
        raise ValueError("affine: the transform is degenerate (its inverse is not finite); "
                         "keep scales well above 0 and shears strictly inside (-90, 90)")
    return warp_affine(x, inverse, fill)


def rotate(x: np.ndarray, angle, fill=0.0) -> np.ndarray:
    """torchvision F.rotate on a batch: counter-clockwise by `angle` degrees about the centre."""
    return affine(x, angle=-np.asarray(angle, dtype=np.float64), fill=fill)
