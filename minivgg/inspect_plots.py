"""Figures of what a net sees: feature-map grids, first-layer filters, Grad-CAM overlays, and
grids of labelled images (misclassified test images, what predict fed the net).

Like minivgg.plots: matplotlib's object API only, each function returns its Figure and writes
it atomically to `path` when one is given.
"""
from __future__ import annotations

import math

import numpy as np

from .plots import _check_path, _new_figure, _save

_MAX_CHANNELS = 32   # feature maps shown per layer; wider layers show their first ones


def _as_display(image: np.ndarray) -> tuple[np.ndarray, str | None]:
    """A (C, H, W) or (H, W) image as imshow wants it: (H, W) with a grey colormap, or (H, W, 3)."""
    image = np.asarray(image)
    if image.ndim == 3 and image.shape[0] == 1:
        image = image[0]
    if image.ndim == 3:
        return image.transpose(1, 2, 0), None
    return image, "gray"


def _hide_axes(ax) -> None:
    ax.set_xticks([])
    ax.set_yticks([])


def plot_image_grid(images, captions, path=None, title: str | None = None, columns: int = 8,
                    caption_colors=None):
    """uint8 images (N, C, H, W) in a grid, each with its caption (e.g. "true 4 / pred 9")."""
    images = np.asarray(images)
    if images.ndim != 4 or len(images) == 0:
        raise ValueError(f"plot_image_grid: expected a non-empty batch (N, C, H, W), got shape "
                         f"{images.shape}")
    if len(captions) != len(images):
        raise ValueError(f"plot_image_grid: {len(captions)} captions for {len(images)} images")
    _check_path(path)
    columns = min(columns, len(images))
    rows = math.ceil(len(images) / columns)
    figure = _new_figure(1.45 * columns, 1.6 * rows + (0.4 if title else 0))
    axes = np.atleast_1d(figure.subplots(rows, columns)).reshape(-1)
    for i, ax in enumerate(axes):
        _hide_axes(ax)
        if i >= len(images):
            ax.set_axis_off()
            continue
        shown, cmap = _as_display(images[i])
        ax.imshow(shown, cmap=cmap, vmin=0, vmax=255, interpolation="nearest")
        color = caption_colors[i] if caption_colors is not None else "black"
        ax.set_title(captions[i], fontsize=8, color=color)
    if title:
        figure.suptitle(title)
    return _save(figure, path)


def plot_feature_maps(maps, image=None, path=None, title: str | None = None,
                      max_channels: int = _MAX_CHANNELS):
    """One block of panels per conv layer: each channel's map (C, H, W) for one image, in a
    colour scale of its own layer; `maps` is a list of (layer name, (C, H, W)) as
    inspect.feature_maps gives them (one image), `image` the input shown first."""
    if not maps:
        raise ValueError("plot_feature_maps: no feature maps to draw")
    _check_path(path)
    columns = 8
    blocks = [(name, np.asarray(m)[:max_channels]) for name, m in maps]
    rows = sum(math.ceil(len(m) / columns) for _, m in blocks) + (1 if image is not None else 0)
    figure = _new_figure(1.3 * columns, 1.25 * rows + 0.6)
    grid = figure.add_gridspec(rows, columns)
    row = 0
    if image is not None:
        ax = figure.add_subplot(grid[0, 0])
        shown, cmap = _as_display(image)
        ax.imshow(shown, cmap=cmap, interpolation="nearest")
        ax.set_title("input", fontsize=8)
        _hide_axes(ax)
        row = 1
    for name, block in blocks:
        low, high = float(block.min()), float(block.max())
        total = len(maps[[n for n, _ in maps].index(name)][1])
        for k, channel in enumerate(block):
            ax = figure.add_subplot(grid[row + k // columns, k % columns])
            ax.imshow(channel, cmap="viridis", vmin=low, vmax=high if high > low else low + 1,
                      interpolation="nearest")
            _hide_axes(ax)
            if k == 0:
                shown_of = f", first {len(block)} of {total}" if total > len(block) else ""
                ax.set_title(f"layer {name} ({total} maps, {channel.shape[0]}x{channel.shape[1]}"
                             f"{shown_of})", fontsize=8, loc="left")
        row += math.ceil(len(block) / columns)
    figure.suptitle(title or "feature maps of each conv layer (after its BatchNorm and activation)",
                    fontsize=10)
    return _save(figure, path)


def plot_filters(weights, path=None, title: str | None = None):
    """A conv layer's filters (O, C, kH, kW) as small images: greyscale for one input channel
    (light: positive weight), colour for three (each filter scaled to [0, 1]), else the mean
    over input channels."""
    weights = np.asarray(weights, np.float64)
    if weights.ndim != 4:
        raise ValueError(f"plot_filters: expected conv weights (O, C, kH, kW), got shape {weights.shape}")
    _check_path(path)
    count, channels = weights.shape[:2]
    columns = min(8, count)
    rows = math.ceil(count / columns)
    figure = _new_figure(1.1 * columns, 1.15 * rows + 0.5)
    axes = np.atleast_1d(figure.subplots(rows, columns)).reshape(-1)
    bound = float(np.abs(weights).max()) or 1.0
    for i, ax in enumerate(axes):
        _hide_axes(ax)
        if i >= count:
            ax.set_axis_off()
            continue
        w = weights[i]
        if channels == 3:
            low, high = w.min(), w.max()
            ax.imshow(((w - low) / (high - low if high > low else 1.0)).transpose(1, 2, 0),
                      interpolation="nearest")
        else:
            ax.imshow(w.mean(axis=0), cmap="gray", vmin=-bound, vmax=bound, interpolation="nearest")
        ax.set_title(str(i), fontsize=7)
    figure.suptitle(title or f"first conv layer: {count} filters, {weights.shape[2]}x{weights.shape[3]}"
                    + (f", mean of {channels} input channels" if channels not in (1, 3) else ""),
                    fontsize=10)
    return _save(figure, path)


def plot_grad_cam(image, cam, path=None, title: str | None = None):
    """The image, its Grad-CAM heat map (H, W) in [0, 1], and the map laid over the image."""
    _check_path(path)
    shown, cmap = _as_display(image)
    figure = _new_figure(8.4, 3.2)
    axes = figure.subplots(1, 3)
    axes[0].imshow(shown, cmap=cmap, interpolation="nearest")
    axes[0].set_title("input", fontsize=9)
    heat = axes[1].imshow(cam, cmap="jet", vmin=0, vmax=1, interpolation="bilinear")
    axes[1].set_title("Grad-CAM", fontsize=9)
    axes[2].imshow(shown, cmap=cmap, interpolation="nearest")
    axes[2].imshow(cam, cmap="jet", vmin=0, vmax=1, alpha=0.45, interpolation="bilinear")
    axes[2].set_title("overlay", fontsize=9)
    for ax in axes:
        _hide_axes(ax)
    figure.colorbar(heat, ax=list(axes), shrink=0.8)
    if title:
        figure.suptitle(title, fontsize=10)
    return _save(figure, path)
