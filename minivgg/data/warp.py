"""Affine warps of image batches: one vectorised bilinear gather for the whole batch.

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
    out = np.empty(x.shape, dtype=x.dtype)
    # blocks of images small enough for their temporaries to stay in cache (at batch 256,
    # half the time per image of one pass over the whole batch)
    for start in range(0, n, _BLOCK):
        _warp_block(x[start:start + _BLOCK], inverse[start:start + _BLOCK], fill,
                    out[start:start + _BLOCK])
    return out


_BLOCK = 32


def _warp_block(x: np.ndarray, inverse: np.ndarray, fill: np.ndarray, out: np.ndarray) -> None:
    n, channels, height, width = x.shape
    cx, cy = (width - 1) / 2, (height - 1) / 2
    m = inverse[:, :, :, None, None]
    xc = (np.arange(width) - cx).astype(x.dtype)
    yc = (np.arange(height) - cy).astype(x.dtype)[:, None]
    # source position of every output pixel, in array indices (N, H, W), in the batch's dtype
    src_x = m[:, 0, 0] * xc + (m[:, 0, 1] * yc + (m[:, 0, 2] + x.dtype.type(cx)))
    src_y = m[:, 1, 0] * xc + (m[:, 1, 1] * yc + (m[:, 1, 2] + x.dtype.type(cy)))
    # Planes (C, N, H + 3, W + 3) with a zero border of 1 before and 2 after each axis.
    # Clamping the source position into [-1, size] changes nothing (a clamped position only
    # ever reads the border) and keeps all four corners inside the planes.
    padded_h, padded_w = height + 3, width + 3
    planes = np.zeros((channels, n, padded_h, padded_w), dtype=x.dtype)
    planes[:, :, 1:-2, 1:-2] = x.transpose(1, 0, 2, 3)
    planes = planes.reshape(channels, -1)
    np.clip(src_x, -1, width, out=src_x)
    np.clip(src_y, -1, height, out=src_y)
    x0, y0 = np.floor(src_x), np.floor(src_y)
    wx1, wy1 = src_x - x0, src_y - y0
    wx0, wy0 = 1 - wx1, 1 - wy1
    # The in-bounds mask as torchvision samples it (bilinearly, from a plane of ones): that
    # plane is separable, so the mask is the in-bounds weight along x times that along y.
    inside = ((wx0 * ((x0 >= 0) & (x0 < width)) + wx1 * (x0 < width - 1))
              * (wy0 * ((y0 >= 0) & (y0 < height)) + wy1 * (y0 < height - 1)))
    # flat index of each top-left corner; the other corners are at +1 (right), +padded_w
    # (down) and +padded_w + 1
    top_left = (y0 * padded_w + x0).astype(np.intp)
    top_left += (np.arange(n) * (padded_h * padded_w) + padded_w + 1)[:, None, None]
    # torchvision's blend, v * m + (1 - m) * fill: the mask m goes into the row weights
    wy0 *= inside
    wy1 *= inside
    for c, plane in enumerate(planes):
        v = wx0 * plane[top_left] + wx1 * plane[top_left + 1]
        v *= wy0
        v += wy1 * (wx0 * plane[top_left + padded_w] + wx1 * plane[top_left + (padded_w + 1)])
        if fill[c % len(fill)] != 0:
            v += (1 - inside) * fill[c % len(fill)]
        out[:, c] = v


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
