"""One model with every layer of minivgg.nn, in the options a zoo model does not use: the
torch twin, FLOP count and ONNX export tests run it, so a new layer is checked by adding it
here."""
from collections import OrderedDict

import numpy as np

from minivgg import nn

INPUT_SHAPE = (3, 11, 11)


def every_layer_model() -> nn.Sequential:
    model = nn.Sequential(OrderedDict([
        ("conv_same_even", nn.Conv2d(3, 6, 4, padding="same")),
        ("bn_no_affine", nn.BatchNorm2d(6, affine=False)),
        ("gelu", nn.GELU()),
        ("conv_strided", nn.Conv2d(6, 8, 3, stride=2, padding=(1, 2), bias=False)),
        ("leaky", nn.LeakyReLU(0.2)),
        ("bn_batch_stats", nn.BatchNorm2d(8, track_running_stats=False)),
        ("max_padded", nn.MaxPool2d(3, stride=2, padding=1)),
        ("drop2d", nn.Dropout2d(0.3)),
        ("conv_valid", nn.Conv2d(8, 8, (1, 2), padding="valid")),
        ("elu", nn.ELU(0.7)),
        ("avg_excl", nn.AvgPool2d(2, stride=1, padding=1, count_include_pad=False)),
        ("tanh", nn.Tanh()),
        ("adaptive_uneven", nn.AdaptiveAvgPool2d((3, 2))),
        ("ident", nn.Identity()),
        ("ln_2d", nn.LayerNorm((3, 2))),
        ("flat_keep_channels", nn.Flatten(2)),
        ("fc_3d", nn.Linear(6, 5)),
        ("bn1d_3d", nn.BatchNorm1d(8)),
        ("gelu_tanh", nn.GELU("tanh")),
        ("flat", nn.Flatten()),
        ("nested", nn.Sequential(nn.Linear(40, 16), nn.BatchNorm1d(16), nn.Sigmoid(), nn.Dropout(0.5))),
        ("ln_plain", nn.LayerNorm(16, elementwise_affine=False)),
        ("fc_no_bias", nn.Linear(16, 12, bias=False)),
        ("bn1d_after_relu", nn.ReLU()),
        ("bn1d", nn.BatchNorm1d(12)),
        ("adaptive_even_src", nn.Linear(12, 4)),
        ("scale", nn.Scale(1 / 9)),
    ]))
    for module in model.modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            module.reset_parameters(np.random.default_rng(3))
    return model


def layer_classes() -> set:
    """Every layer class minivgg.nn exports (Module and Parameter themselves left out)."""
    return {value for value in vars(nn).values()
            if isinstance(value, type) and issubclass(value, nn.Module) and value is not nn.Module}

