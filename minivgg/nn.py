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

import math
from collections import OrderedDict, namedtuple

import numpy as np

from . import functional as F
from . import init
from .autograd import Tensor

__all__ = [
    "Parameter", "Module", "StateDictError", "IncompatibleKeys",
    "Conv2d", "Linear", "MaxPool2d", "AvgPool2d", "AdaptiveAvgPool2d",
    "BatchNorm1d", "BatchNorm2d", "LayerNorm",
    "ReLU", "ELU", "LeakyReLU", "GELU", "Tanh", "Sigmoid",
    "Dropout", "Dropout2d", "Flatten", "Identity", "Scale", "Sequential",
]


def _as_generator(rng) -> np.random.Generator:
    """None -> a fresh unseeded Generator; an int -> default_rng(int); a Generator as is."""
    if rng is None:
        return np.random.default_rng()
    if isinstance(rng, np.random.Generator):
        return rng
    if isinstance(rng, (int, np.integer)) and not isinstance(rng, bool):
        return np.random.default_rng(rng)
    raise TypeError(
        f"rng must be a numpy.random.Generator, an int seed or None, got {type(rng).__name__}")


def _pair(value, name: str, layer: str, minimum: int) -> tuple[int, int]:
    """An int or a pair of ints, each >= minimum, as a pair."""
    pair = (value, value) if isinstance(value, (int, np.integer)) else tuple(value)
    if len(pair) != 2 or not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool)
                                 and v >= minimum for v in pair):
        raise ValueError(f"{layer}: {name} must be an int or a pair of ints >= {minimum}, got {value!r}")
    return int(pair[0]), int(pair[1])


def _positive_int(value, name: str, layer: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
        raise ValueError(f"{layer}: {name} must be a positive int, got {value!r}")
    return int(value)


def _shape(x) -> tuple:
    return tuple(np.shape(x.data if isinstance(x, Tensor) else x))


class Parameter(Tensor):
    """A Tensor that a Module registers as trainable (requires_grad=True by default)."""

    __slots__ = ()

    def __init__(self, data, requires_grad: bool = True):
        super().__init__(data, requires_grad=requires_grad)

    def __repr__(self):
        return "Parameter containing:\n" + super().__repr__()


class StateDictError(ValueError):
    """load_state_dict found missing, unexpected or misshapen entries; nothing was changed."""

    def __init__(self, message: str, missing_keys=(), unexpected_keys=(), mismatched_keys=()):
        super().__init__(message)
        self.missing_keys = list(missing_keys)
        self.unexpected_keys = list(unexpected_keys)
        self.mismatched_keys = list(mismatched_keys)


IncompatibleKeys = namedtuple("IncompatibleKeys", ["missing_keys", "unexpected_keys"])


def _addindent(text: str, spaces: int) -> str:
    lines = text.split("\n")
    if len(lines) == 1:
        return text
    return lines[0] + "\n" + "\n".join(" " * spaces + line for line in lines[1:])


class Module:
    """Base class of every layer and model: registries, state_dict, train/eval, repr.

    Subclasses call `super().__init__()` first, then assign Parameters, child Modules and
    buffers as attributes, and define `forward`. Stochastic layers set `stochastic = True`
    and keep their Generator in `self.rng` (see `set_rng`).
    """

    stochastic = False

    def __init__(self):
        object.__setattr__(self, "training", True)
        object.__setattr__(self, "_parameters", OrderedDict())
        object.__setattr__(self, "_buffers", OrderedDict())
        object.__setattr__(self, "_non_persistent_buffers", set())
        object.__setattr__(self, "_modules", OrderedDict())

    # ---- registration ----------------------------------------------------------
    def _check_initialised(self, what: str):
        if "_parameters" not in self.__dict__:
            raise AttributeError(
                f"cannot assign {what} before Module.__init__() call: call super().__init__() "
                f"first in {type(self).__name__}.__init__")

    def _check_name(self, name, kind: str):
        if not isinstance(name, str):
            raise TypeError(f"{kind} name must be a str, got {type(name).__name__}")
        if name == "" or "." in name:
            raise KeyError(f"{kind} name must be non-empty and contain no '.', got {name!r}")

    def register_parameter(self, name: str, param: Parameter | None):
        self._check_initialised("parameters")
        self._check_name(name, "parameter")
        if hasattr(self, name) and name not in self._parameters:
            raise KeyError(f"attribute {name!r} already exists on {type(self).__name__}")
        if param is not None and not isinstance(param, Parameter):
            raise TypeError(
                f"cannot assign {type(param).__name__} as parameter {name!r} "
                f"(minivgg.nn.Parameter or None expected)")
        self._parameters[name] = param

    def register_buffer(self, name: str, array, persistent: bool = True):
        """A saved, untrained array (e.g. running statistics); None registers an absent one."""
        self._check_initialised("buffers")
        self._check_name(name, "buffer")
        if hasattr(self, name) and name not in self._buffers:
            raise KeyError(f"attribute {name!r} already exists on {type(self).__name__}")
        if isinstance(array, Tensor):
            raise TypeError(
                f"buffer {name!r} must be an ndarray or None, got a Tensor: buffers are not "
                f"tracked by autograd; pass tensor.data")
        self._buffers[name] = None if array is None else np.asarray(array)
        if persistent:
            self._non_persistent_buffers.discard(name)
        else:
            self._non_persistent_buffers.add(name)

    def add_module(self, name: str, module: "Module | None"):
        self._check_initialised("child modules")
        self._check_name(name, "module")
        if hasattr(self, name) and name not in self._modules:
            raise KeyError(f"attribute {name!r} already exists on {type(self).__name__}")
        if module is not None and not isinstance(module, Module):
            raise TypeError(f"{type(module).__name__} is not a Module subclass")
        self._modules[name] = module

    register_module = add_module

    def __setattr__(self, name, value):
        params = self.__dict__.get("_parameters", {})
        modules = self.__dict__.get("_modules", {})
        buffers = self.__dict__.get("_buffers", {})
        if isinstance(value, Parameter):
            self._check_initialised("parameters")
            self._forget(name)
            self.register_parameter(name, value)
        elif isinstance(value, Module):
            self._check_initialised("child modules")
            self._forget(name)
            self._modules[name] = value
        elif name in params:
            if value is not None:
                raise TypeError(f"cannot assign {type(value).__name__} as parameter {name!r} "
                                f"(minivgg.nn.Parameter or None expected)")
            params[name] = None
        elif name in modules:
            if value is not None:
                raise TypeError(f"cannot assign {type(value).__name__} as child module {name!r} "
                                f"(Module or None expected)")
            modules[name] = None
        elif name in buffers:
            if value is not None and not isinstance(value, np.ndarray):
                raise TypeError(f"cannot assign {type(value).__name__} as buffer {name!r} "
                                f"(ndarray or None expected)")
            buffers[name] = value
        else:
            object.__setattr__(self, name, value)

    def _forget(self, name: str):
        """Drop `name` from every registry and the instance dict before re-registering it."""
        self.__dict__.pop(name, None)
        for registry in (self._parameters, self._buffers, self._modules):
            registry.pop(name, None)
        self._non_persistent_buffers.discard(name)

    def __getattr__(self, name):  # only called when normal lookup fails
        for registry in ("_parameters", "_buffers", "_modules"):
            entries = self.__dict__.get(registry)
            if entries is not None and name in entries:
                return entries[name]
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def __delattr__(self, name):
        for registry in (self._parameters, self._buffers, self._modules):
            if name in registry:
                del registry[name]
                self._non_persistent_buffers.discard(name)
                return
        object.__delattr__(self, name)

    def __dir__(self):
        return sorted(set(super().__dir__()) | set(self._parameters) | set(self._buffers)
                      | set(self._modules))

    # ---- traversal ---------------------------------------------------------------
    def named_modules(self, memo: set | None = None, prefix: str = ""):
        """(dotted name, module) for self and every descendant, each module once."""
        memo = set() if memo is None else memo
        if id(self) in memo:
            return
        memo.add(id(self))
        yield prefix, self
        for name, module in self._modules.items():
            if module is not None:
                yield from module.named_modules(memo, prefix + ("." if prefix else "") + name)

    def modules(self):
        for _, module in self.named_modules():
            yield module

    def named_children(self):
        seen = set()
        for name, module in self._modules.items():
            if module is not None and id(module) not in seen:
                seen.add(id(module))
                yield name, module

    def children(self):
        for _, module in self.named_children():
            yield module

    def _named_members(self, registry: str, recurse: bool):
        seen = set()
        modules = self.named_modules() if recurse else [("", self)]
        for module_prefix, module in modules:
            for name, value in getattr(module, registry).items():
                if value is None or id(value) in seen:
                    continue
                seen.add(id(value))
                yield module_prefix + ("." if module_prefix else "") + name, value

    def named_parameters(self, recurse: bool = True):
        yield from self._named_members("_parameters", recurse)

    def parameters(self, recurse: bool = True):
        for _, param in self.named_parameters(recurse):
            yield param

    def named_buffers(self, recurse: bool = True):
        yield from self._named_members("_buffers", recurse)

    def buffers(self, recurse: bool = True):
        for _, array in self.named_buffers(recurse):
            yield array

    def num_parameters(self, trainable_only: bool = False) -> int:
        return sum(p.size for p in self.parameters() if p.requires_grad or not trainable_only)

    def apply(self, fn):
        """Call fn on every child (recursively), then on self, as torch's Module.apply."""
        for module in self.children():
            module.apply(fn)
        fn(self)
        return self

    # ---- state -------------------------------------------------------------------
    def _state_entries(self, prefix: str = ""):
        """(key, owning module, live ndarray) in torch's state_dict order: own parameters,
        own persistent buffers, then each child recursively (shared entries repeat, as in torch)."""
        for name, param in self._parameters.items():
            if param is not None:
                yield prefix + name, self, param.data
        for name, array in self._buffers.items():
            if array is not None and name not in self._non_persistent_buffers:
                yield prefix + name, self, array
        for name, module in self._modules.items():
            if module is not None:
                yield from module._state_entries(prefix + name + ".")

    def state_dict(self) -> OrderedDict:
        """Dotted names -> copies of every parameter and persistent buffer, torch's keys and layouts."""
        return OrderedDict((key, array.copy()) for key, _, array in self._state_entries())

    def load_state_dict(self, state_dict, strict: bool = True) -> IncompatibleKeys:
        """Copy arrays (anything np.asarray accepts) into this model, in place, keeping our dtypes.

        Everything is checked before anything changes. Missing and unexpected keys are errors
        when strict; a shape mismatch or a non-numeric value always is. Raises one
        StateDictError listing every problem; returns (missing_keys, unexpected_keys).
        """
        if not hasattr(state_dict, "keys") or not hasattr(state_dict, "__getitem__"):
            raise TypeError(f"load_state_dict expects a mapping of names to arrays, "
                            f"got {type(state_dict).__name__}")
        entries = list(self._state_entries())
        own_keys = {key for key, _, _ in entries}
        missing = [key for key, _, _ in entries if key not in state_dict]
        unexpected = [key for key in state_dict.keys() if key not in own_keys]
        problems, updates = [], []
        for key, module, target in entries:
            if key not in state_dict:
                continue
            value = state_dict[key]
            try:
                value = np.asarray(value.data if isinstance(value, Tensor) else value)
            except Exception as error:  # e.g. a torch tensor that still requires grad
                problems.append(f"{key} ({_label(module)}): cannot be read as an array ({error})")
                continue
            if value.dtype.kind not in "biuf":
                problems.append(f"{key} ({_label(module)}): expected a numeric array, "
                                f"got dtype {value.dtype}")
            elif value.shape != target.shape:
                problems.append(f"size mismatch for {key} ({_label(module)}): the state has shape "
                                f"{value.shape}, this model has {target.shape}")
            else:
                updates.append((target, value))
        lines = []
        if strict and missing:
            lines.append(f"missing keys (in the model, not in the state): {', '.join(missing)}")
        if strict and unexpected:
            lines.append(f"unexpected keys (in the state, not in the model): "
                         f"{', '.join(map(str, unexpected))}")
        lines += problems
        if lines:
            raise StateDictError(
                f"Error(s) in loading state_dict for {type(self).__name__} (nothing was changed):\n  "
                + "\n  ".join(lines),
                missing if strict else (), unexpected if strict else (), problems)
        for target, value in updates:
            np.copyto(target, value, casting="unsafe")
        return IncompatibleKeys(missing, unexpected)

    # ---- modes, gradients, randomness ---------------------------------------------
    def train(self, mode: bool = True):
        if not isinstance(mode, bool):
            raise ValueError(f"train(mode): mode must be a bool, got {mode!r}")
        for module in self.modules():
            object.__setattr__(module, "training", mode)
        return self

    def eval(self):
        return self.train(False)

    def requires_grad_(self, requires_grad: bool = True):
        """Freeze (False) or unfreeze every parameter."""
        for param in self.parameters():
            param.requires_grad = bool(requires_grad)
        return self

    def zero_grad(self):
        for param in self.parameters():
            param.grad = None

    def astype(self, dtype) -> "Module":
        """Cast every floating-point parameter and buffer to `dtype`, in place.

        Training is float32; float64 is for gradient checks and exact comparisons.
        """
        for module in self.modules():
            for param in module._parameters.values():
                if param is not None:
                    param.data = param.data.astype(dtype)
                    param.grad = None
            for name, buffer in module._buffers.items():
                if buffer is not None and np.issubdtype(buffer.dtype, np.floating):
                    module._buffers[name] = buffer.astype(dtype)
        return self

    def initialize(self, rng):
        """Re-initialise every layer with `reset_parameters`, in modules() order, from one Generator.

        `model.initialize(np.random.default_rng(seed))` makes the initial weights a function of seed.
        """
        rng = _as_generator(rng)
        for module in self.modules():
            reset = getattr(module, "reset_parameters", None)
            if callable(reset):
                reset(rng)
        return self

    def set_rng(self, rng):
        """Give each stochastic layer, in modules() order, its own Generator derived from rng."""
        rng = _as_generator(rng)
        stochastic = [module for module in self.modules() if module.stochastic]
        # a SeedSequence spawns independent streams the same way on every NumPy version
        entropy = [int(word) for word in rng.integers(0, 2 ** 63, size=4)]
        children = np.random.SeedSequence(entropy).spawn(len(stochastic))
        for module, seed in zip(stochastic, children):
            module.rng = np.random.default_rng(seed)
        return self

    # ---- calling and printing ------------------------------------------------------
    def forward(self, *args, **kwargs):
        raise NotImplementedError(f"{type(self).__name__} does not define forward()")

    def __call__(self, *args, **kwargs):
        return self.forward(*args, **kwargs)

    def extra_repr(self) -> str:
        return ""

    def __repr__(self):
        extra = self.extra_repr()
        extra_lines = extra.split("\n") if extra else []
        child_lines = [f"({name}): {_addindent(repr(module), 2)}"
                       for name, module in self._modules.items()]
        lines = extra_lines + child_lines
        text = type(self).__name__ + "("
        if len(extra_lines) == 1 and not child_lines:
            text += extra_lines[0]
        elif lines:
            text += "\n  " + "\n  ".join(lines) + "\n"
        return text + ")"


def _label(module: Module) -> str:
    """A one-line name for a layer in messages, e.g. 'Conv2d(1, 6, kernel_size=(3, 3), stride=(1, 1))'."""
    return f"{type(module).__name__}({module.extra_repr()})"


def _default_reset_(weight: Parameter, bias: Parameter | None, rng: np.random.Generator):
    """torch's default for Conv2d and Linear: weight kaiming_uniform(a=sqrt(5)), i.e.
    U(-1/sqrt(fan_in), 1/sqrt(fan_in)), and bias from that same distribution."""
    init.kaiming_uniform_(weight, a=math.sqrt(5), rng=rng)
    if bias is not None:
        fan_in, _ = init.calculate_fan_in_and_fan_out(weight)
        bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0.0
        init.uniform_(bias, -bound, bound, rng=rng)


def _register_affine(module: Module, shape: tuple, weight: bool, bias: bool):
    """The per-feature scale (ones) and shift (zeros) of a normalisation layer, or None."""
    if weight:
        module.weight = Parameter(np.ones(shape, dtype=np.float32))
    else:
        module.register_parameter("weight", None)
    if bias:
        module.bias = Parameter(np.zeros(shape, dtype=np.float32))
    else:
        module.register_parameter("bias", None)


def _reset_affine(module: Module):
    if module.weight is not None:
        init.ones_(module.weight)
    if module.bias is not None:
        init.zeros_(module.bias)


# ---- layers with parameters ---------------------------------------------------------
class Conv2d(Module):
    """2-D convolution over (N, C_in, H, W); weight (C_out, C_in, kh, kw) as in torch."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0,
                 bias: bool = True, rng=None):
        super().__init__()
        name = "Conv2d"
        self.in_channels = _positive_int(in_channels, "in_channels", name)
        self.out_channels = _positive_int(out_channels, "out_channels", name)
        self.kernel_size = _pair(kernel_size, "kernel_size", name, 1)
        self.stride = _pair(stride, "stride", name, 1)
        if isinstance(padding, str):
            if padding not in ("same", "valid"):
                raise ValueError(f"Conv2d: padding must be an int, a pair, 'same' or 'valid', "
                                 f"got {padding!r}")
            if padding == "same" and self.stride != (1, 1):
                raise ValueError(f"Conv2d: padding='same' is not supported for strided "
                                 f"convolutions (stride={self.stride}); use an explicit padding")
            self.padding = padding
        else:
            self.padding = _pair(padding, "padding", name, 0)
        shape = (self.out_channels, self.in_channels) + self.kernel_size  # (C_out, C_in, kh, kw)
        self.weight = Parameter(np.empty(shape, dtype=np.float32))
        if bias:
            self.bias = Parameter(np.empty(self.out_channels, dtype=np.float32))
        else:
            self.register_parameter("bias", None)
        self.reset_parameters(_as_generator(rng))

    def reset_parameters(self, rng):
        _default_reset_(self.weight, self.bias, _as_generator(rng))

    def forward(self, x):
        shape = _shape(x)
        if len(shape) != 4 or shape[1] != self.in_channels:
            raise ValueError(f"{_label(self)}: expected input of shape (N, {self.in_channels}, H, W), "
                             f"got {shape}")
        return F.conv2d(x, self.weight, self.bias, stride=self.stride, padding=self.padding)

    def extra_repr(self):
        text = (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}")
        if self.padding != (0, 0):
            text += f", padding={self.padding}"
        if self.bias is None:
            text += ", bias=False"
        return text


class Linear(Module):
    """y = x @ weight.T + bias over (..., in_features); weight (out_features, in_features)."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, rng=None):
        super().__init__()
        self.in_features = _positive_int(in_features, "in_features", "Linear")
        self.out_features = _positive_int(out_features, "out_features", "Linear")
        self.weight = Parameter(np.empty((self.out_features, self.in_features), dtype=np.float32))
        if bias:
            self.bias = Parameter(np.empty(self.out_features, dtype=np.float32))
        else:
            self.register_parameter("bias", None)
        self.reset_parameters(_as_generator(rng))

    def reset_parameters(self, rng):
        _default_reset_(self.weight, self.bias, _as_generator(rng))

    def forward(self, x):
        shape = _shape(x)
        if len(shape) < 2 or shape[-1] != self.in_features:
            raise ValueError(f"{_label(self)}: expected input of shape (N, {self.in_features}), "
                             f"got {shape}")
        if len(shape) == 2:
            return F.linear(x, self.weight, self.bias)
        # (..., in) -> (M, in) -> (M, out) -> (..., out)
        flat = F.reshape(x, (-1, self.in_features))
        return F.reshape(F.linear(flat, self.weight, self.bias), shape[:-1] + (self.out_features,))

    def extra_repr(self):
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"bias={self.bias is not None}")


class _BatchNorm(Module):
    """Shared by BatchNorm1d and BatchNorm2d, which differ only in the input ranks they accept."""

    ranks: tuple = ()
    layout: str = ""

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float | None = 0.1,
                 affine: bool = True, track_running_stats: bool = True, *, bias: bool = True):
        super().__init__()
        name = type(self).__name__
        self.num_features = _positive_int(num_features, "num_features", name)
        if not eps > 0:
            raise ValueError(f"{name}: eps must be > 0, got {eps!r}")
        if momentum is not None and not 0 <= momentum <= 1:
            raise ValueError(f"{name}: momentum must be in [0, 1] or None (cumulative average), "
                             f"got {momentum!r}")
        self.eps = eps
        self.momentum = momentum
        self.affine = bool(affine)
        self.track_running_stats = bool(track_running_stats)
        _register_affine(self, (self.num_features,), self.affine, self.affine and bias)
        if self.track_running_stats:
            self.register_buffer("running_mean", np.zeros(self.num_features, dtype=np.float32))
            self.register_buffer("running_var", np.ones(self.num_features, dtype=np.float32))
            self.register_buffer("num_batches_tracked", np.array(0, dtype=np.int64))
        else:
            self.register_buffer("running_mean", None)
            self.register_buffer("running_var", None)
            self.register_buffer("num_batches_tracked", None)

    def reset_running_stats(self):
        if self.track_running_stats:
            self.running_mean[...] = 0
            self.running_var[...] = 1
            self.num_batches_tracked[...] = 0

    def reset_parameters(self, rng=None):
        """torch's reset: running statistics cleared, weight 1, bias 0 (rng is not used)."""
        self.reset_running_stats()
        _reset_affine(self)

    def forward(self, x, relu: bool = False, relu_after: bool = False):
        """relu=True: this layer applied to relu(x); relu_after=True: relu of this layer's
        output; each as one op (Sequential fuses ReLU -> BN and BN -> ReLU)."""
        shape = _shape(x)
        if len(shape) not in self.ranks or shape[1] != self.num_features:
            raise ValueError(f"{_label(self)}: expected input of shape {self.layout}, got {shape}")
        factor = 0.0
        if self.training and self.track_running_stats:
            self.num_batches_tracked += 1  # in place: the buffer stays the same array
            if self.momentum is None:  # cumulative moving average
                factor = 1.0 / float(self.num_batches_tracked)
            else:
                factor = self.momentum
        # batch statistics when training, or when there are no running statistics to use
        use_batch_stats = self.training or self.running_mean is None
        return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias,
                            training=use_batch_stats, momentum=factor, eps=self.eps, relu=relu,
                            relu_after=relu_after)

    def extra_repr(self):
        return (f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, "
                f"affine={self.affine}, bias={self.bias is not None}, "
                f"track_running_stats={self.track_running_stats}")


class BatchNorm1d(_BatchNorm):
    """Batch normalisation over (N, C) or (N, C, L), per channel C."""

    ranks = (2, 3)

    @property
    def layout(self):
        return f"(N, {self.num_features}) or (N, {self.num_features}, L)"


class BatchNorm2d(_BatchNorm):
    """Batch normalisation over (N, C, H, W), per channel C."""

    ranks = (4,)

    @property
    def layout(self):
        return f"(N, {self.num_features}, H, W)"


class LayerNorm(Module):
    """Normalise over the trailing `normalized_shape` dimensions of each sample."""

    def __init__(self, normalized_shape, eps: float = 1e-5, elementwise_affine: bool = True,
                 bias: bool = True):
        super().__init__()
        if isinstance(normalized_shape, (int, np.integer)):
            normalized_shape = (normalized_shape,)
        self.normalized_shape = tuple(_positive_int(n, "normalized_shape", "LayerNorm")
                                      for n in normalized_shape)
        if not self.normalized_shape:
            raise ValueError("LayerNorm: normalized_shape must name at least one dimension")
        if not eps > 0:
            raise ValueError(f"LayerNorm: eps must be > 0, got {eps!r}")
        self.eps = eps
        self.elementwise_affine = bool(elementwise_affine)
        _register_affine(self, self.normalized_shape, self.elementwise_affine,
                         self.elementwise_affine and bias)

    def reset_parameters(self, rng=None):
        """weight 1, bias 0 (rng is not used)."""
        _reset_affine(self)

    def forward(self, x):
        shape = _shape(x)
        n = len(self.normalized_shape)
        if len(shape) <= n or shape[-n:] != self.normalized_shape:
            raise ValueError(f"{_label(self)}: expected input of shape (N, ..., "
                             f"{', '.join(map(str, self.normalized_shape))}), got {shape}")
        return F.layer_norm(x, self.normalized_shape, self.weight, self.bias, eps=self.eps)

    def extra_repr(self):
        return (f"{self.normalized_shape}, eps={self.eps}, "
                f"elementwise_affine={self.elementwise_affine}, bias={self.bias is not None}")


# ---- pooling ----------------------------------------------------------------------------
class MaxPool2d(Module):
    def __init__(self, kernel_size, stride=None, padding=0):
        super().__init__()
        self.kernel_size = kernel_size
        self.stride = kernel_size if stride is None else stride
        self.padding = padding
        _pair(kernel_size, "kernel_size", "MaxPool2d", 1)
        _pair(self.stride, "stride", "MaxPool2d", 1)
        _pair(padding, "padding", "MaxPool2d", 0)

    def forward(self, x):
        return F.max_pool2d(x, self.kernel_size, stride=self.stride, padding=self.padding)

    def extra_repr(self):
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"


class AvgPool2d(Module):
    def __init__(self, kernel_size, stride=None, padding=0, count_include_pad: bool = True):
        super().__init__()
        self.kernel_size = kernel_size
        self.stride = kernel_size if stride is None else stride
        self.padding = padding
        self.count_include_pad = bool(count_include_pad)
        _pair(kernel_size, "kernel_size", "AvgPool2d", 1)
        _pair(self.stride, "stride", "AvgPool2d", 1)
        _pair(padding, "padding", "AvgPool2d", 0)

    def forward(self, x):
        return F.avg_pool2d(x, self.kernel_size, stride=self.stride, padding=self.padding,
                            count_include_pad=self.count_include_pad)

    def extra_repr(self):
        text = f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"
        if not self.count_include_pad:
            text += ", count_include_pad=False"
        return text


class AdaptiveAvgPool2d(Module):
    def __init__(self, output_size):
        super().__init__()
        self.output_size = output_size

    def forward(self, x):
        return F.adaptive_avg_pool2d(x, self.output_size)

    def extra_repr(self):
        return f"output_size={self.output_size}"


# ---- activations and shape layers ----------------------------------------------------------
class ReLU(Module):
    def forward(self, x):
        return F.relu(x)


class ELU(Module):
    def __init__(self, alpha: float = 1.0):
        super().__init__()
        self.alpha = alpha

    def forward(self, x):
        return F.elu(x, self.alpha)

    def extra_repr(self):
        return f"alpha={self.alpha}"


class LeakyReLU(Module):
    def __init__(self, negative_slope: float = 0.01):
        super().__init__()
        self.negative_slope = negative_slope

    def forward(self, x):
        return F.leaky_relu(x, self.negative_slope)

    def extra_repr(self):
        return f"negative_slope={self.negative_slope}"


class GELU(Module):
    def __init__(self, approximate: str = "none"):
        super().__init__()
        if approximate not in ("none", "tanh"):
            raise ValueError(f"GELU: approximate must be 'none' or 'tanh', got {approximate!r}")
        self.approximate = approximate

    def forward(self, x):
        return F.gelu(x, self.approximate)

    def extra_repr(self):
        return f"approximate={self.approximate!r}"


class Tanh(Module):
    def forward(self, x):
        return F.tanh(x)


class Sigmoid(Module):
    def forward(self, x):
        return F.sigmoid(x)


class _DropoutNd(Module):
    """Shared by Dropout and Dropout2d: p, own Generator, active only in training mode."""

    stochastic = True

    def __init__(self, p: float = 0.5, rng=None):
        super().__init__()
        if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0 <= p <= 1:
            raise ValueError(f"{type(self).__name__}: p must be a probability in [0, 1], got {p!r}")
        self.p = float(p)
        self.rng = _as_generator(rng)

    def extra_repr(self):
        return f"p={self.p}"


class Dropout(_DropoutNd):
    """Zero each element with probability p when training, scaling the rest by 1/(1-p)."""

    def forward(self, x):
        return F.dropout(x, self.p, self.training, self.rng)


class Dropout2d(_DropoutNd):
    """Zero whole channels of (N, C, H, W) with probability p when training."""

    def forward(self, x):
        return F.dropout2d(x, self.p, self.training, self.rng)


class Flatten(Module):
    def __init__(self, start_dim: int = 1):
        super().__init__()
        self.start_dim = start_dim

    def forward(self, x):
        return F.flatten(x, self.start_dim)

    def extra_repr(self):
        return f"start_dim={self.start_dim}"


class Identity(Module):
    def forward(self, x):
        return x


class Scale(Module):
    """Multiply by a constant `factor` (not trained): e.g. a fixed temperature on the logits,
    which, unlike the same factor folded into the weights, also scales their gradient."""

    def __init__(self, factor: float):
        super().__init__()
        if isinstance(factor, bool) or not isinstance(factor, (int, float)) or not math.isfinite(factor):
            raise ValueError(f"Scale: factor must be a finite number, got {factor!r}")
        self.factor = float(factor)

    def forward(self, x):
        data = x.data if isinstance(x, Tensor) else np.asarray(x)
        return F.mul(x, data.dtype.type(self.factor))

    def extra_repr(self):
        return f"factor={self.factor}"


# ---- containers ------------------------------------------------------------------------------
class Sequential(Module):
    """Children called in order; named "0", "1", ... or by the keys of an OrderedDict.

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

    def forward(self, x):
        layers = list(self._modules.items())
        i = 0
        while i < len(layers):
            name, module = layers[i]
            # ReLU -> BatchNorm and BatchNorm -> ReLU run as one op: the same result with
            # fewer passes, and no tensor between the two
            following = layers[i + 1][1] if i + 1 < len(layers) else None
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
            try:
                x = module(x, **fused) if fused else module(x)
            except Exception as error:
                raise _with_location(error, f"layer {name} ({type(module).__name__})") from None
            i += 1
        return x


def _fusable(*modules: Module) -> bool:
    """Whether Sequential may run these layers as one op (ReLU -> BatchNorm as
    batch_norm(..., relu=True), BatchNorm -> ReLU as batch_norm(..., relu_after=True)): not
    when a module's forward was replaced on the instance (as summary.py does to record each
    layer), so that such instrumentation still sees every layer."""
    return all("forward" not in vars(module) for module in modules)


def _with_location(error: Exception, where: str) -> Exception:
    """The same kind of exception, its message prefixed with where it happened."""
    try:
        located = type(error)(f"{where}: {error}")
    except Exception:  # an exception class with an unusual constructor: leave it untouched
        return error
    located.__dict__.update(error.__dict__)  # keep extra attributes (e.g. StateDictError's keys)
    return located.with_traceback(error.__traceback__)
