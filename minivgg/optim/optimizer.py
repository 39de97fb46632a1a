"""Optimizer: parameter groups, per-parameter state, zero_grad and a pickle-free state_dict.

Subclasses (SGD, Adam, AdamW) set `state_arrays` / `state_counters` (the names of their
per-parameter state), validate each group's hyper-parameters in `_check_group`, and
implement `_update(param, grad, group, state)`, which changes `param.data` IN PLACE:
modules hold references to those arrays, so they must never be replaced.

state_dict() layout (JSON-able numbers/lists/bools plus ndarrays, like torch's):

    {"param_groups": [{"lr": 0.1, ..., "params": [0, 1, 2]}, ...],
     "state": {0: {"momentum_buffer": ndarray}, 2: {"step": 7, "exp_avg": ndarray, ...}}}

Parameters are numbered in order of appearance across the groups. The state keys are
ints; digit strings (what a JSON round trip makes of them) are accepted on load.
"""
from __future__ import annotations

import numpy as np

from ..autograd import Tensor, enable_grad


class Optimizer:
    state_arrays: tuple = ()    # per-parameter state arrays, each shaped like the parameter
    state_counters: tuple = ()  # per-parameter integer state (e.g. Adam's step)
    state_required: bool = False  # whether a state entry must hold every name above

    def __init__(self, params, defaults: dict):
        self.defaults = dict(defaults)
        self.param_groups: list[dict] = []
        self.state: dict = {}       # param -> {name: ndarray | int}
        self._scratch: dict = {}    # param -> {name: ndarray}: reusable work buffers, not state
        if isinstance(params, (Tensor, np.ndarray)):
            raise TypeError(
                f"{self._name}: params must be an iterable of Tensors or of dicts, got a single "
                f"{type(params).__name__}; pass [param] or model.parameters()")
        groups = list(params)
        if not groups:
            raise ValueError(f"{self._name} got an empty parameter list")
        if not isinstance(groups[0], dict):
            groups = [{"params": groups}]
        for group in groups:
            self.add_param_group(group)

    @property
    def _name(self) -> str:
        return type(self).__name__

    # ---- parameter groups ----------------------------------------------------------
    def add_param_group(self, group: dict) -> None:
        """Add a group: {'params': iterable of Tensors, optional per-group hyper-parameters}."""
        if not isinstance(group, dict) or "params" not in group:
            raise TypeError(
                f"{self._name}: a parameter group must be a dict with a 'params' key, got "
                f"{type(group).__name__}")
        params = group["params"]
        params = [params] if isinstance(params, Tensor) else list(params)
        index = len(self.param_groups)
        for i, p in enumerate(params):
            if not isinstance(p, Tensor):
                raise TypeError(
                    f"{self._name}: parameter {i} of group {index} is a {type(p).__name__}, "
                    f"not a minivgg Tensor")
            if not p.is_leaf:
                raise ValueError(
                    f"{self._name}: parameter {i} of group {index} (shape {p.shape}) is not a "
                    f"leaf tensor (it was computed from others); optimize the leaves instead")
            if not np.issubdtype(p.data.dtype, np.floating):
                raise ValueError(
                    f"{self._name}: parameter {i} of group {index} has dtype {p.data.dtype}; "
                    f"only floating-point parameters can be optimized")
        ids = [id(p) for p in params]
        if len(set(ids)) != len(ids):
            raise ValueError(f"{self._name}: parameter group {index} lists a parameter twice")
        seen = {id(p) for g in self.param_groups for p in g["params"]}
        if seen.intersection(ids):
            raise ValueError(
                f"{self._name}: some parameters of group {index} already appear in an "
                f"earlier parameter group; each parameter may be in only one group")

        full = dict(self.defaults)
        full.update({k: v for k, v in group.items() if k != "params"})
        self._check_group(full)
        full["params"] = params
        self.param_groups.append(full)

    def _check_group(self, group: dict) -> None:
        """Validate (and normalise to plain Python types) one group's hyper-parameters."""

    # ---- the update ----------------------------------------------------------------
    def zero_grad(self, set_to_none: bool = True) -> None:
        """Forget the gradients: set them to None (default), or fill them with zeros in place."""
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                if set_to_none:
                    p.grad = None
                else:
                    p.grad.fill(0)

    def step(self, closure=None):
        """Update every parameter that has a gradient; parameters whose grad is None are skipped.

        `closure`, if given, re-evaluates the model and returns the loss (as in torch).
        """
        loss = None
        if closure is not None:
            with enable_grad():
                loss = closure()
        for g_index, group in enumerate(self.param_groups):
            for p_index, p in enumerate(group["params"]):
                if p.grad is None:
                    continue
                grad = p.grad
                if grad.shape != p.data.shape or grad.dtype != p.data.dtype:
                    raise ValueError(
                        f"{self._name}.step: parameter {p_index} of group {g_index} has shape "
                        f"{p.data.shape} and dtype {p.data.dtype} but its grad has shape "
                        f"{grad.shape} and dtype {grad.dtype}; gradients must match their "
                        f"parameter exactly")
                self._update(p, grad, group, self.state.setdefault(p, {}))
        return loss

    def _update(self, param: Tensor, grad: np.ndarray, group: dict, state: dict) -> None:
        raise NotImplementedError

    def _buffer(self, param: Tensor, name: str) -> np.ndarray:
        """A reusable uninitialised work array shaped like `param` (never part of the state)."""
        buffers = self._scratch.setdefault(param, {})
        buf = buffers.get(name)
        if buf is None or buf.shape != param.data.shape or buf.dtype != param.data.dtype:
            buf = np.empty_like(param.data)
            buffers[name] = buf
        return buf

    # ---- checkpointing -------------------------------------------------------------
    def state_dict(self) -> dict:
        """Hyper-parameters and per-parameter state; the arrays are copies."""
        index: dict[int, int] = {}
        groups = []
        for group in self.param_groups:
            saved = {k: v for k, v in group.items() if k != "params"}
            saved["params"] = [index.setdefault(id(p), len(index)) for p in group["params"]]
            groups.append(saved)
        state = {}
        for group in self.param_groups:
            for p in group["params"]:
                entry = self.state.get(p)
                if entry:
                    state[index[id(p)]] = {
                        k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in entry.items()}
        return {"param_groups": groups, "state": state}

    def load_state_dict(self, state_dict: dict) -> None:
        """Restore what state_dict() returned; validates everything before changing anything."""
        name = f"{self._name}.load_state_dict"
        if not isinstance(state_dict, dict) or set(state_dict) != {"param_groups", "state"}:
            keys = sorted(state_dict) if isinstance(state_dict, dict) else type(state_dict).__name__
            raise ValueError(f"{name}: expected a dict with keys 'param_groups' and 'state', got {keys}")
        saved_groups = state_dict["param_groups"]
        if len(saved_groups) != len(self.param_groups):
            raise ValueError(
                f"{name}: the saved state has {len(saved_groups)} parameter groups but this "
                f"optimizer has {len(self.param_groups)}")
        by_index: dict[int, Tensor] = {}
        new_groups = []
        for g, (saved, group) in enumerate(zip(saved_groups, self.param_groups)):
            indices = list(saved.get("params", []))
            if len(indices) != len(group["params"]):
                raise ValueError(
                    f"{name}: saved parameter group {g} has {len(indices)} parameters but this "
                    f"optimizer's group {g} has {len(group['params'])}")
            for i, p in zip(indices, group["params"]):
                by_index[int(i)] = p
            hyper = {k: v for k, v in saved.items() if k != "params"}
            if "betas" in hyper:
                hyper["betas"] = tuple(hyper["betas"])  # a JSON round trip makes it a list
            new_groups.append(hyper)

        new_state = {}
        for key, entry in state_dict["state"].items():
            if not str(key).isdigit() or int(key) not in by_index:
                raise ValueError(
                    f"{name}: the saved state refers to parameter {key}, but the saved groups "
                    f"only number parameters {sorted(by_index)}")
            p = by_index[int(key)]
            new_state[p] = self._checked_state(name, int(key), entry, p)

        for group, hyper in zip(self.param_groups, new_groups):
            group.update(hyper)
        self.state = new_state

    def _checked_state(self, name: str, index: int, entry: dict, param: Tensor) -> dict:
        """One parameter's saved state, validated against this optimizer and copied."""
        allowed = set(self.state_arrays) | set(self.state_counters)
        unknown = set(entry) - allowed
        missing = allowed - set(entry) if self.state_required else set()
        if unknown or missing:
            raise ValueError(
                f"{name}: the state of parameter {index} has entries {sorted(entry)} but "
                f"{self._name} keeps {sorted(allowed)}; was it saved from another optimizer?")
        checked = {}
        for key, value in entry.items():
            if key in self.state_counters:
                checked[key] = int(value)
                continue
            value = np.asarray(value)
            if value.shape != param.data.shape:
                raise ValueError(
                    f"{name}: '{key}' of parameter {index} has shape {value.shape} but the "
                    f"parameter has shape {param.data.shape}; the model does not match the "
                    f"checkpoint")
            checked[key] = np.array(value, dtype=param.data.dtype, copy=True)
        return checked

    def __repr__(self) -> str:
        lines = [f"{self._name} ("]
        for i, group in enumerate(self.param_groups):
            lines.append(f"Parameter Group {i}")
            for key in sorted(k for k in group if k != "params"):
                lines.append(f"    {key}: {group[key]}")
        lines.append(")")
        return "\n".join(lines)


def scalar(value: float, like: np.ndarray):
    """`value` as a NumPy scalar of `like`'s dtype, so float32 arithmetic stays float32."""
    return like.dtype.type(value)


def check_non_negative(optimizer: str, name: str, value) -> float:
    """`value` as a float, or a ValueError naming the optimizer when it is negative (or NaN)."""
    value = float(value)
    if not value >= 0.0:
        raise ValueError(f"{optimizer}: invalid {name} {value}: it must be >= 0")
    return value
