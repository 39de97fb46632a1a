"""Test-time augmentation: the views of a batch whose logits are averaged at evaluation.

Flip TTA adds the mirror image, for datasets whose classes survive a mirror (CIFAR-10,
Fashion-MNIST). Shift TTA adds the image moved by `shift` pixels left, right, up and down, for
any dataset, MNIST included (a mirrored digit is another digit or none); the vacated border is
black, as RandomCrop's zero padding and RandomAffine's fill leave it in training.
"""
from __future__ import annotations

import numpy as np


def tta_views(x: np.ndarray, flip: bool = False, shift: int = 0) -> list[np.ndarray]:
    """The views of float NCHW images `x` in pixel scale (before normalisation, so that the
    shifted-in border is black): `x` itself, its mirror if `flip`, and each of those shifted
    by +-`shift` pixels along each axis. One view when neither is asked for."""
    height, width = x.shape[-2:]
    if isinstance(shift, bool) or not isinstance(shift, (int, np.integer)) or not 0 <= shift < min(height, width):
        raise ValueError(f"TTA shift must be a whole number of pixels from 0 to "
                         f"{min(height, width) - 1} for {height}x{width} images (got {shift!r})")
    bases = [x] + ([x[..., ::-1]] if flip else [])
    views = []
    for base in bases:
        views.append(np.ascontiguousarray(base))
        if shift:
            views += [shift_images(base, dy, dx)
                      for dy, dx in ((0, shift), (0, -shift), (shift, 0), (-shift, 0))]
    return views


def shift_images(x: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """`x` (..., H, W) moved down by `dy` and right by `dx` pixels (negative: up, left),
    zero-filled where the image moved away."""
    height, width = x.shape[-2:]
    out = np.zeros(x.shape, dtype=x.dtype)
    out[..., max(dy, 0):height + min(dy, 0), max(dx, 0):width + min(dx, 0)] = \
        x[..., max(-dy, 0):height + min(-dy, 0), max(-dx, 0):width + min(-dx, 0)]
    return out


def saved_tta(metadata: dict, flip=None, shift=None) -> tuple[bool, int]:
    """(flip, shift) for a saved model: what its recipe was scored with, where not given.
    A model file without a recipe (not written by `minivgg train`) defaults to no TTA."""
    recipe = metadata.get("recipe") or {}
    return (bool(recipe.get("tta_flip", False)) if flip is None else bool(flip),
            int(recipe.get("tta_shift", 0)) if shift is None else int(shift))


def describe_tta(flip: bool, shift: int) -> str:
    """A few words for a log line: which views, and how many."""
    parts = (["mirror"] if flip else []) + ([f"{shift}-pixel shifts"] if shift else [])
    if not parts:
        return "no TTA"
    views = (2 if flip else 1) * (5 if shift else 1)
    return f"TTA: {' + '.join(parts)}, {views} views"
