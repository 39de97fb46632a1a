"""Module, Parameter and the layer classes, with PyTorch's names, registries and state_dict.

A `Module` registers what is assigned to it, as torch.nn.Module does: a `Parameter` becomes a
parameter, a `Module` a child, and `register_buffer` adds a buffer (a plain ndarray that is
saved but not trained, such as BatchNorm's running statistics). `state_dict()` keys and array
layouts equal those of the same architecture built with torch.nn, so weights move both ways.

Randomness is explicit: layers with parameters take `rng` (a numpy Generator) and have
`reset_parameters(rng)`; `Module.initialize(rng)` re-initialises a whole model from one
Generator, and `Module.set_rng(rng)` gives every stochastic layer (Dropout) its own stream.
"""
from __future__ import annotations

from .activation import ELU, GELU, LeakyReLU, ReLU, Sigmoid, Tanh
from .container import Sequential
from .conv import Conv2d
from .dropout import Dropout, Dropout2d
from .linear import Flatten, Identity, Linear, Scale
from .module import IncompatibleKeys, Module, Parameter, StateDictError
from .norm import BatchNorm1d, BatchNorm2d, LayerNorm
from .pool import AdaptiveAvgPool2d, AvgPool2d, MaxPool2d

__all__ = [
    "Parameter",
    "Module",
    "StateDictError",
    "IncompatibleKeys",
    "Conv2d",
    "Linear",
    "MaxPool2d",
    "AvgPool2d",
    "AdaptiveAvgPool2d",
    "BatchNorm1d",
    "BatchNorm2d",
    "LayerNorm",
    "ReLU",
    "ELU",
    "LeakyReLU",
    "GELU",
    "Tanh",
    "Sigmoid",
    "Dropout",
    "Dropout2d",
    "Flatten",
    "Identity",
    "Scale",
    "Sequential",
]
