"""Export a minivgg model to the same architecture in torch.nn, with the same weights.

torch is imported only inside `to_torch`: minivgg never needs it to run. The tests and the
speed benchmark use this to compare against PyTorch layer for layer.
"""
from __future__ import annotations

from . import nn


def _torch_layer(module, tnn):
    """The torch.nn twin of one minivgg layer (weights are copied afterwards)."""
    if isinstance(module, nn.Conv2d):
        return tnn.Conv2d(module.in_channels, module.out_channels, module.kernel_size,
                          stride=module.stride, padding=module.padding, bias=module.bias is not None)
    if isinstance(module, nn.Linear):
        return tnn.Linear(module.in_features, module.out_features, bias=module.bias is not None)
    if isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)):
        cls = tnn.BatchNorm1d if isinstance(module, nn.BatchNorm1d) else tnn.BatchNorm2d
        return cls(module.num_features, eps=module.eps, momentum=module.momentum,
                   affine=module.affine, track_running_stats=module.track_running_stats)
    if isinstance(module, nn.LayerNorm):
        return tnn.LayerNorm(module.normalized_shape, eps=module.eps,
                             elementwise_affine=module.elementwise_affine)
    if isinstance(module, nn.MaxPool2d):
        return tnn.MaxPool2d(module.kernel_size, stride=module.stride, padding=module.padding)
    if isinstance(module, nn.AvgPool2d):
        return tnn.AvgPool2d(module.kernel_size, stride=module.stride, padding=module.padding,
                             count_include_pad=module.count_include_pad)
    if isinstance(module, nn.AdaptiveAvgPool2d):
        return tnn.AdaptiveAvgPool2d(module.output_size)
    simple = {nn.ReLU: lambda m: tnn.ReLU(), nn.Tanh: lambda m: tnn.Tanh(),
              nn.Sigmoid: lambda m: tnn.Sigmoid(), nn.Identity: lambda m: tnn.Identity(),
              nn.ELU: lambda m: tnn.ELU(m.alpha), nn.LeakyReLU: lambda m: tnn.LeakyReLU(m.negative_slope),
              nn.GELU: lambda m: tnn.GELU(approximate=m.approximate),
              nn.Dropout: lambda m: tnn.Dropout(m.p), nn.Dropout2d: lambda m: tnn.Dropout2d(m.p),
              nn.Flatten: lambda m: tnn.Flatten(m.start_dim)}
    for cls, make in simple.items():
        if type(module) is cls:
            return make(module)
    if type(module) is nn.Scale:
        return _TorchScale(module.factor, tnn)
    if isinstance(module, nn.Sequential):
        return tnn.Sequential(*(_torch_layer(child, tnn) for child in module))
    raise TypeError(f"to_torch: no torch.nn equivalent known for {type(module).__name__}")


def _TorchScale(factor, tnn):
    class Scale(tnn.Module):
        def __init__(self):
            super().__init__()
            self.factor = factor

        def forward(self, x):
            return x * self.factor

    return Scale()


def to_torch(model):
    """A torch.nn module with the architecture, weights, buffers and train/eval mode of `model`."""
    import torch

    twin = _torch_layer(model, torch.nn)
    state = {k: torch.from_numpy(v.copy()) for k, v in model.state_dict().items()}
    twin.load_state_dict(state, strict=True)
    frozen = {name for name, p in model.named_parameters() if not p.requires_grad}
    for name, p in twin.named_parameters():
        p.requires_grad_(name not in frozen)
    twin.train(model.training)
    return twin
