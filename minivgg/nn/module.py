"""Module and Parameter: registries, state_dict, train/eval, hooks, repr (torch.nn.Module's contract)."""
from __future__ import annotations

from collections import OrderedDict, namedtuple
from itertools import count

import numpy as np

from ..autograd import Tensor


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


class RemovableHandle:
    """What register_forward_hook and register_forward_pre_hook return: `remove()` takes the
    hook off again (also as a context manager: the hook is removed on leaving the block)."""

    _ids = count()

    def __init__(self, hooks: OrderedDict):
        self.hooks = hooks
        self.id = next(RemovableHandle._ids)

    def remove(self):
        self.hooks.pop(self.id, None)

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.remove()


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

    Calling a module runs its forward pre-hooks, `forward`, then its forward hooks (see
    `register_forward_hook`). A layer also says, next to its forward, what it is outside
    minivgg: `torch_twin` (the same layer in torch.nn), `multiply_adds` (its arithmetic,
    for FLOP counts) and `to_onnx` (its eval-mode computation as ONNX nodes).
    """

    stochastic = False

    def __init__(self):
        object.__setattr__(self, "training", True)
        object.__setattr__(self, "_parameters", OrderedDict())
        object.__setattr__(self, "_buffers", OrderedDict())
        object.__setattr__(self, "_non_persistent_buffers", set())
        object.__setattr__(self, "_modules", OrderedDict())
        object.__setattr__(self, "_forward_pre_hooks", OrderedDict())
        object.__setattr__(self, "_forward_hooks", OrderedDict())

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
        if not (self._forward_pre_hooks or self._forward_hooks):
            return self.forward(*args, **kwargs)
        for hook in list(self._forward_pre_hooks.values()):
            result = hook(self, args)
            if result is not None:  # the hook replaced the inputs
                args = result if isinstance(result, tuple) else (result,)
        output = self.forward(*args, **kwargs)
        for hook in list(self._forward_hooks.values()):
            result = hook(self, args, output)
            if result is not None:  # the hook replaced the output
                output = result
        return output

    # ---- hooks -----------------------------------------------------------------------
    def register_forward_pre_hook(self, hook) -> RemovableHandle:
        """Call `hook(module, args)` before each forward, as torch does; if it returns
        something other than None, that (a tuple, or one value) becomes forward's arguments.
        Returns a handle whose `remove()` unregisters the hook."""
        return self._add_hook(self._forward_pre_hooks, hook)

    def register_forward_hook(self, hook) -> RemovableHandle:
        """Call `hook(module, args, output)` after each forward, as torch does; if it returns
        something other than None, that replaces the output. Returns a handle whose
        `remove()` unregisters the hook. Hooks run in the order they were registered."""
        return self._add_hook(self._forward_hooks, hook)

    def _add_hook(self, hooks: OrderedDict, hook) -> RemovableHandle:
        if not callable(hook):
            raise TypeError(f"a hook must be callable, got {type(hook).__name__}")
        handle = RemovableHandle(hooks)
        hooks[handle.id] = hook
        return handle

    def has_hooks(self) -> bool:
        """Whether a forward hook or forward pre-hook is registered on this module itself."""
        return bool(self._forward_pre_hooks or self._forward_hooks)

    def extra_repr(self) -> str:
        return ""

    # ---- the same layer elsewhere ----------------------------------------------------
    def torch_twin(self, tnn):
        """The same layer built with torch.nn (`tnn`), its parameters left as torch
        initialises them: minivgg.interop.to_torch copies the weights in afterwards."""
        raise TypeError(f"to_torch: no torch.nn equivalent known for {type(self).__name__}")

    def multiply_adds(self, input_shape: tuple, output_shape: tuple) -> int:
        """Multiply-adds of one forward call per sample, given that sample's input and output
        shapes (batch dimension left out); what minivgg.summary.count_flops adds up. Layers
        that only touch each value a few times (activations, normalisation, pooling) count
        none, as here; convolutions and linear layers count theirs."""
        return 0

    def to_onnx(self, graph, x: str, shape: tuple) -> str:
        """Add this layer's eval-mode computation on tensor `x` (of batch-1 shape `shape`) to
        an ONNX graph being built by minivgg.export; return the name of its output tensor.

        `graph.node(op_type, inputs, hint, **attributes)` adds a node and returns its output's
        name; `graph.const(hint, array)` adds a constant and returns its name. A layer that is
        the identity in eval mode (Dropout) returns `x`.
        """
        raise NotImplementedError(f"{type(self).__name__} defines no to_onnx")

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
