"""Containers: Sequential."""
from __future__ import annotations

from collections import OrderedDict

import numpy as np

from ..autograd import is_grad_enabled
from ..functional.windows import pool_window
from .activation import ReLU
from .conv import Conv2d
from .dropout import Dropout
from .module import Module
from .norm import BatchNorm2d, _BatchNorm
from .pool import MaxPool2d


class Sequential(Module):
    """Children called in order; named "0", "1", ... or by the keys of an OrderedDict.

    Neighbours that one op can do together run as one (fewer passes over the activations;
    never when one of them has hooks): ReLU -> MaxPool2d as MaxPool2d -> ReLU, ReLU ->
    BatchNorm, BatchNorm -> ReLU (-> Dropout), all to the bit; and for inference (no graph
    recorded) a Conv2d with what follows it of an eval-mode BatchNorm2d, a ReLU, another
    such batch norm and a 2x2 max pool as one convolution (`_conv_fusions`), equal to the
    layers apart within float32 rounding.

    An error inside a child is re-raised with the same type and the child's position prefixed,
    e.g. "layer 3 (Conv2d): ...", so an error deep in a model says where it happened.
    """

    def __init__(self, *layers):
        super().__init__()
        if len(layers) == 1 and isinstance(layers[0], OrderedDict):
            for name, module in layers[0].items():
                self.add_module(name, module)
        else:
            for index, module in enumerate(layers):
                self.add_module(str(index), module)

    def _index(self, index: int) -> int:
        if isinstance(index, bool) or not isinstance(index, (int, np.integer)):
            raise TypeError(f"Sequential indices must be ints or slices, got {type(index).__name__}")
        size = len(self._modules)
        if not -size <= index < size:
            raise IndexError(f"index {index} is out of range for a Sequential of {size} layers")
        return int(index) % size

    def __getitem__(self, index):
        if isinstance(index, slice):  # keeps the children's names, as torch does
            return Sequential(OrderedDict(list(self._modules.items())[index]))
        return list(self._modules.values())[self._index(index)]

    def __setitem__(self, index, module):
        key = list(self._modules)[self._index(index)]
        self.add_module(key, module)

    def __delitem__(self, index):
        if isinstance(index, slice):
            doomed = set(list(self._modules)[index])
        else:
            doomed = {list(self._modules)[self._index(index)]}
        self._renumber([module for key, module in self._modules.items() if key not in doomed])

    def _renumber(self, modules: list):
        """Re-register modules as "0", "1", ..., as torch does after a deletion or insertion."""
        self._modules.clear()
        for i, module in enumerate(modules):
            self.add_module(str(i), module)

    def __len__(self):
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules.values())

    def append(self, module: Module):
        self.add_module(str(len(self)), module)
        return self

    def extend(self, modules):
        for module in modules:
            self.append(module)
        return self

    def insert(self, index: int, module: Module):
        size = len(self._modules)
        if not -size <= index <= size:
            raise IndexError(f"index {index} is out of range for inserting into a Sequential "
                             f"of {size} layers")
        modules = list(self._modules.values())
        modules.insert(index + size if index < 0 else index, module)
        self._renumber(modules)
        return self

    def torch_twin(self, tnn):
        return tnn.Sequential(OrderedDict((name, module.torch_twin(tnn))
                                          for name, module in self._modules.items()))

    def forward(self, x):
        layers = list(self._modules.items())
        i = 0
        while i < len(layers):
            name, module = layers[i]
            # ReLU -> BatchNorm and BatchNorm -> ReLU (-> Dropout) run as one op: the same
            # result with fewer passes, and no tensor between them
            following = layers[i + 1][1] if i + 1 < len(layers) else None
            if (type(module) is ReLU and type(following) is MaxPool2d
                    and _fusable(module, following)):
                # ReLU -> MaxPool2d runs as MaxPool2d -> ReLU: ReLU is monotone, so the
                # maximum of a rectified window is the rectified maximum (values and
                # gradients alike), and the ReLU then works on a map kernel_size^2 smaller
                try:
                    x = module(following(x))
                except Exception as error:
                    raise _with_location(error, f"layers {name}-{layers[i + 1][0]} (ReLU, "
                                                f"MaxPool2d)") from None
                i += 2
                continue
            if type(module) is Conv2d and not is_grad_enabled():
                fusions, count = _conv_fusions(layers, i)
                if count > 1:
                    # inference: the convolution with its batch norms, ReLU and 2x2 max
                    # pool as one op (see _conv_fusions)
                    group = layers[i:i + count]
                    try:
                        x = module(x, **fusions)
                    except Exception as error:
                        kinds = ", ".join(type(m).__name__ for _, m in group)
                        raise _with_location(error, f"layers {name}-{group[-1][0]} "
                                                    f"({kinds})") from None
                    i += count
                    continue
            fused = {}
            if (type(module) is ReLU and isinstance(following, _BatchNorm)
                    and _fusable(module, following)):
                fused["relu"] = True
                i += 1
                name, module = layers[i]
                following = layers[i + 1][1] if i + 1 < len(layers) else None
            if (isinstance(module, _BatchNorm) and type(following) is ReLU
                    and _fusable(module, following)):
                fused["relu_after"] = True
                i += 1
                after = layers[i + 1][1] if i + 1 < len(layers) else None
                if type(after) is Dropout and _fusable(after):
                    fused["dropout"] = after
                    i += 1
            try:
                x = module(x, **fused) if fused else module(x)
            except Exception as error:
                raise _with_location(error, f"layer {name} ({type(module).__name__})") from None
            i += 1
        return x


def _conv_fusions(layers: list, i: int) -> tuple:
    """For the Conv2d at layers[i], in inference: (the keyword arguments of Conv2d.forward
    that do the layers after it in its own pass, how many layers that covers, the conv
    included). Conv2d [-> BatchNorm2d, folded into its weight and bias] [-> ReLU [->
    BatchNorm2d, a scale and shift after the ReLU]] [-> MaxPool2d 2x2 stride 2], each as far
    as the layers match and have no hooks."""
    conv = layers[i][1]
    fusions, k = {}, i + 1

    def following():
        module = layers[k][1] if k < len(layers) else None
        return module if module is not None and _fusable(module) else None

    if not _fusable(conv):
        return fusions, 1
    if _folds(conv, following()):
        fusions["batch_norm"], k = following(), k + 1
    if type(following()) is ReLU:
        fusions["relu"], k = True, k + 1
        if "batch_norm" not in fusions and _folds(conv, following()):
            fusions["batch_norm_after"], k = following(), k + 1
    pool = following()
    if type(pool) is MaxPool2d and pool_window(pool.kernel_size, pool.stride, pool.padding,
                                               "MaxPool2d") == ((2, 2), (2, 2), (0, 0)):
        fusions["max_pool_2x2"], k = True, k + 1
    return fusions, k - i


def _folds(conv: Conv2d, following) -> bool:
    """Whether `following` is a BatchNorm2d over conv's output that normalises with its
    running statistics (eval mode): then conv can do its work in the same pass (folded
    into its weight and bias, or as a scale and shift after its ReLU)."""
    return (type(following) is BatchNorm2d and not following.training
            and following.running_mean is not None
            and following.num_features == conv.out_channels)


def _fusable(*modules: Module) -> bool:
    """Whether Sequential may run these layers as one op (ReLU -> BatchNorm as
    batch_norm(..., relu=True), BatchNorm -> ReLU as batch_norm(..., relu_after=True), and a
    Dropout after that as batch_norm(..., dropout=p); Conv2d with the batch norm and ReLU
    around it for inference) or swap them (ReLU -> MaxPool2d): not
    when one of them has forward hooks, which must see each layer's own call (summary.py
    records every layer that way)."""
    return not any(module.has_hooks() for module in modules)


def _with_location(error: Exception, where: str) -> Exception:
    """The same kind of exception, its message prefixed with where it happened."""
    try:
        located = type(error)(f"{where}: {error}")
    except Exception:  # an exception class with an unusual constructor: leave it untouched
        return error
    located.__dict__.update(error.__dict__)  # keep extra attributes (e.g. StateDictError's keys)
    return located.with_traceback(error.__traceback__)
