"""Look inside a trained net: what each convolution responds to for a given image."""
from __future__ import annotations

import numpy as np

from . import nn
from .autograd import Tensor, no_grad

# layers that keep a conv's feature maps one per channel, pixel for pixel: a conv's maps are
# shown after these (its BatchNorm and activation), before the next pool or conv
_ELEMENTWISE = (nn.BatchNorm2d, nn.ReLU, nn.ELU, nn.LeakyReLU, nn.GELU, nn.Tanh, nn.Sigmoid,
                nn.Dropout, nn.Dropout2d, nn.Identity)


def _flat_layers(model: nn.Module, prefix: str = "") -> list[tuple[str, nn.Module]]:
    if not isinstance(model, nn.Sequential):
        return [(prefix.rstrip("."), model)]
    layers = []
    for name, child in model.named_children():
        layers += _flat_layers(child, f"{prefix}{name}.")
    return layers


def feature_maps(model: nn.Module, x: np.ndarray) -> list[tuple[str, np.ndarray]]:
    """(name, maps) for every Conv2d of a Sequential model, maps (N, C, H, W) taken after the
    conv's own BatchNorm and activation; x is a float (N, C, H, W) batch already normalised
    as the model was trained. Runs in eval mode and restores the model's mode after."""
    layers = _flat_layers(model)
    if not any(isinstance(m, nn.Conv2d) for _, m in layers):
        raise ValueError(f"{type(model).__name__} has no Conv2d layer: there are no feature maps to show")
    was_training = model.training
    model.eval()
    maps, open_conv = [], None
    try:
        with no_grad():
            h = Tensor(np.asarray(x, np.float32))
            for name, layer in layers:
                if open_conv is not None and not isinstance(layer, _ELEMENTWISE):
                    maps.append((open_conv, h.data.copy()))
                    open_conv = None
                h = layer(h)
                if isinstance(layer, nn.Conv2d):
                    open_conv = name
            if open_conv is not None:
                maps.append((open_conv, h.data.copy()))
    finally:
        model.train(was_training)
    return maps


def first_conv_filters(model: nn.Module) -> tuple[str, np.ndarray]:
    """(name, weights (O, C, kH, kW)) of the model's first Conv2d: what its first layer looks for."""
    for name, layer in _flat_layers(model):
        if isinstance(layer, nn.Conv2d):
            return name, layer.weight.data.copy()
    raise ValueError(f"{type(model).__name__} has no Conv2d layer: there are no filters to show")


def last_conv_gradient(model: nn.Module, x: np.ndarray, target=None):
    """(layer name, maps A (N, K, h, w), gradients dS/dA, target classes (N,)) where A are the
    last conv's maps as `feature_maps` gives them (after its BatchNorm and activation) and S the
    logit of each image's target class (None: the predicted one). Eval mode; the model's mode
    and its parameters' .grad are left as they were."""
    layers = _flat_layers(model)
    cut = _last_conv_end(layers)
    was_training = model.training
    saved_grads = [(p, p.grad) for p in model.parameters()]
    model.eval()
    try:
        with no_grad():
            h = Tensor(np.asarray(x, np.float32))
            for _, layer in layers[:cut]:
                h = layer(h)
        maps = Tensor(h.data, requires_grad=True)
        logits = maps
        for _, layer in layers[cut:]:
            logits = layer(logits)
        if logits.ndim != 2:
            raise ValueError(f"the model's output has shape {logits.shape}; Grad-CAM needs class "
                             f"scores (N, classes)")
        n, classes = logits.shape
        chosen = logits.data.argmax(axis=1) if target is None else np.broadcast_to(
            np.asarray(target, np.int64), (n,)).copy()
        if chosen.min() < 0 or chosen.max() >= classes:
            raise ValueError(f"target class {target!r} is out of range: the model has {classes} classes "
                             f"(0 .. {classes - 1})")
        pick = np.zeros(logits.shape, logits.dtype)
        pick[np.arange(n), chosen] = 1.0
        logits.backward(pick)  # d(sum of each image's target score) / d(maps)
        return layers[cut - 1 - _trailing_elementwise(layers[:cut])][0], maps.data, maps.grad, chosen
    finally:
        for p, g in saved_grads:
            p.grad = g
        model.train(was_training)


def _last_conv_end(layers) -> int:
    """Index just past the last Conv2d and the elementwise layers that follow it."""
    last = max(i for i, (_, m) in enumerate(layers) if isinstance(m, nn.Conv2d)) if any(
        isinstance(m, nn.Conv2d) for _, m in layers) else None
    if last is None:
        raise ValueError("the model has no Conv2d layer: Grad-CAM needs convolutional feature maps")
    end = last + 1
    while end < len(layers) and isinstance(layers[end][1], _ELEMENTWISE):
        end += 1
    return end


def _trailing_elementwise(layers) -> int:
    count = 0
    while count < len(layers) and isinstance(layers[-1 - count][1], _ELEMENTWISE):
        count += 1
    return count


def grad_cam(model: nn.Module, x: np.ndarray, target=None) -> tuple[np.ndarray, np.ndarray]:
    """Grad-CAM (Selvaraju et al. 2017) over the last conv layer: for each image, ReLU of the
    sum over channels k of A_k weighted by the mean of dS/dA_k over its pixels, S the target
    class's logit (None: the predicted class). Returns (heat maps (N, H, W) resized to the
    input's H, W and scaled to [0, 1] per image, target classes (N,)); x is a normalised float
    (N, C, H, W) batch."""
    from PIL import Image

    _, maps, grads, chosen = last_conv_gradient(model, x, target)
    cam = grad_cam_from(maps, grads)
    height, width = np.asarray(x).shape[2:]
    out = np.empty((len(cam), height, width), np.float32)
    for i, c in enumerate(cam):
        resized = np.asarray(Image.fromarray(c, mode="F").resize((width, height), Image.BILINEAR))
        top = resized.max()
        out[i] = resized / top if top > 0 else 0.0
    return out, chosen


def grad_cam_from(maps: np.ndarray, grads: np.ndarray) -> np.ndarray:
    """Grad-CAM at the maps' resolution, (N, h, w), from the maps A (N, K, h, w) and dS/dA."""
    weights = grads.mean(axis=(2, 3), keepdims=True)  # (N, K, 1, 1): each channel's importance
    return np.maximum((weights * maps).sum(axis=1), 0.0).astype(np.float32)
