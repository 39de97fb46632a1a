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
