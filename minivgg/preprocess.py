"""Make a user's digit image look like an MNIST digit before the net sees it.

MNIST's digits were made this way (LeCun et al.): the ink's bounding box is scaled to fit
a 20x20 box keeping its aspect ratio, then placed on a 28x28 canvas so that its centre of
mass falls on the canvas centre; ink is light on a dark background. A digit drawn or
photographed by a person usually fills its frame and is dark on light, which a net trained
on MNIST has never seen; `mnist_style` undoes both differences.
"""
from __future__ import annotations

import numpy as np

MNIST_SIZE = 28
MNIST_BOX = 20
INK_THRESHOLD = 0.1  # a pixel is ink when it is at least this fraction of the brightest one


def light_background(gray: np.ndarray) -> bool:
    """Whether a greyscale (H, W) image is dark ink on a light background, judged by its border."""
    border = np.concatenate([gray[0], gray[-1], gray[:, 0], gray[:, -1]]).astype(np.float64)
    return bool(border.mean() > 127)


def ink_box(ink: np.ndarray) -> tuple[int, int, int, int]:
    """(top, bottom, left, right), bottom and right exclusive, of the pixels that are ink."""
    mask = ink >= INK_THRESHOLD * ink.max()
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    return int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1


def mnist_style(gray, invert="auto") -> np.ndarray:
    """A greyscale image (H, W), uint8 or float in [0, 255], as a uint8 (28, 28) MNIST-style
    digit: light ink on black, the ink fitted into 20x20 and centred by its centre of mass.
    invert: "auto" (invert when the border is light), True or False."""
    from PIL import Image

    gray = np.asarray(gray)
    if gray.ndim != 2 or min(gray.shape) < 1:
        raise ValueError(f"mnist_style expects one greyscale image of shape (H, W), got {gray.shape}")
    ink = gray.astype(np.float32)
    if invert == "auto":
        invert = light_background(gray)
    if invert:
        ink = 255.0 - ink
    ink -= ink.min()  # a grey background becomes black
    if ink.max() <= 0:
        raise ValueError("the image is blank (one colour everywhere): there is no digit to read")
    top, bottom, left, right = ink_box(ink)
    crop = ink[top:bottom, left:right]
    scale = MNIST_BOX / max(crop.shape)
    height, width = (max(1, round(s * scale)) for s in crop.shape)
    boxed = np.asarray(Image.fromarray(crop, mode="F").resize((width, height), Image.BILINEAR))
    boxed = np.clip(boxed, 0.0, None)

    rows, cols = np.indices(boxed.shape)
    mass = boxed.sum()
    centre_row, centre_col = (rows * boxed).sum() / mass, (cols * boxed).sum() / mass
    top = int(round(MNIST_SIZE / 2 - 0.5 - centre_row))
    left = int(round(MNIST_SIZE / 2 - 0.5 - centre_col))
    canvas = np.zeros((MNIST_SIZE, MNIST_SIZE), np.float32)
    # the centre of mass can sit far from the box's middle: clip what would fall off the canvas
    r0, c0 = max(top, 0), max(left, 0)
    r1, c1 = min(top + height, MNIST_SIZE), min(left + width, MNIST_SIZE)
    canvas[r0:r1, c0:c1] = boxed[r0 - top:r1 - top, c0 - left:c1 - left]
    canvas *= 255.0 / canvas.max()
    return np.clip(np.rint(canvas), 0, 255).astype(np.uint8)
