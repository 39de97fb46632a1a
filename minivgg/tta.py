"""Test-time augmentation: the views of a batch whose logits are averaged at evaluation.

Flip TTA adds the mirror image, for datasets whose classes survive a mirror (CIFAR-10,
Fashion-MNIST). Shift TTA adds the image moved by `shift` pixels left, right, up and down, for
any dataset, MNIST included (a mirrored digit is another digit or none); the vacated border is
black, as RandomCrop's zero padding and RandomAffine's fill leave it in training.
Translate TTA (airbench's) adds each view moved `translate` pixels diagonally, down-right and
up-left, with the border mirrored as reflect-padded crops leave it in training; the views are
weighted: half on the unmoved ones, half on the moved ones.
"""
from __future__ import annotations

import numpy as np


def _check_pixels(name: str, value, height: int, width: int) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not 0 <= value < min(height, width):
        raise ValueError(f"TTA {name} must be a whole number of pixels from 0 to "
                         f"{min(height, width) - 1} for {height}x{width} images (got {value!r})")


def tta_views(x: np.ndarray, flip: bool = False, shift: int = 0, translate: int = 0) -> list[np.ndarray]:
    """The views of float NCHW images `x` in pixel scale (before normalisation, so that the
    shifted-in border is black): `x` itself, its mirror if `flip`, and each of those shifted
    by +-`shift` pixels along each axis; or `x` translated by +-`translate` diagonally, and
    the mirrors of those three. One view when none is asked for; `tta_weights` gives their
    weights."""
    height, width = x.shape[-2:]
    _check_pixels("shift", shift, height, width)
    _check_pixels("translate", translate, height, width)
    if shift and translate:
        raise ValueError("TTA: give a shift or a translate, not both")
    if translate:  # mirrors of the translated images, as airbench takes them
        moved = [x, reflect_shift(x, translate), reflect_shift(x, -translate)]
        return [np.ascontiguousarray(v) for v in moved + ([v[..., ::-1] for v in moved] if flip else [])]
    bases = [x] + ([x[..., ::-1]] if flip else [])
    views = []
    for base in bases:
        views.append(np.ascontiguousarray(base))
        if shift:
            views += [shift_images(base, dy, dx)
                      for dy, dx in ((0, shift), (0, -shift), (shift, 0), (-shift, 0))]
    return views


def tta_weights(flip: bool = False, shift: int = 0, translate: int = 0) -> np.ndarray:
    """The weight of each view of `tta_views`, summing to 1: equal, except that translated
    views share half of their base's weight."""
    per_base = np.array([0.5, 0.25, 0.25]) if translate else np.full(5 if shift else 1, 1.0)
    weights = np.tile(per_base / per_base.sum(), 2 if flip else 1)
    return weights / weights.sum()


def reflect_shift(x: np.ndarray, step: int) -> np.ndarray:
    """`x` (..., H, W) moved `step` pixels down and right (negative: up and left), the vacated
    border filled by reflection, as a crop of the reflect-padded image."""
    pad = abs(step)
    padded = np.pad(x, [(0, 0)] * (x.ndim - 2) + [(pad, pad), (pad, pad)], mode="reflect")
    height, width = x.shape[-2:]
    start = pad - step
    return np.ascontiguousarray(padded[..., start:start + height, start:start + width])


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


def saved_tta_translate(metadata: dict, flip=None, shift=None) -> int:
    """The diagonal translate a saved model's recipe was scored with; 0 when the caller chose
    the TTA itself (flip or shift given)."""
    if flip is not None or shift is not None:
        return 0
    return int((metadata.get("recipe") or {}).get("tta_translate", 0))


def describe_tta(flip: bool, shift: int, translate: int = 0) -> str:
    """A few words for a log line: which views, and how many."""
    parts = ((["mirror"] if flip else []) + ([f"{shift}-pixel shifts"] if shift else [])
             + ([f"{translate}-pixel diagonal translates"] if translate else []))
    if not parts:
        return "no TTA"
    views = (2 if flip else 1) * (5 if shift else 3 if translate else 1)
    return f"TTA: {' + '.join(parts)}, {views} views"
