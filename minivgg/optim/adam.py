"""Adam and AdamW, exactly as torch.optim.Adam / AdamW (without amsgrad and maximize)."""
from __future__ import annotations

import numpy as np

from .optimizer import Optimizer, check_non_negative, scalar


class Adam(Optimizer):
    """Adam, per parameter p with gradient g at step t = 1, 2, ... (torch's rules):

        p = p * (1 - lr * weight_decay)     if decoupled_weight_decay (AdamW)
        g = g + weight_decay * p            otherwise
        m = m + (1 - beta1) * (g - m)       v = beta2 * v + (1 - beta2) * g * g
        p = p - lr / (1 - beta1**t) * m / (sqrt(v) / sqrt(1 - beta2**t) + eps)
    """

    state_arrays = ("exp_avg", "exp_avg_sq")
    state_counters = ("step",)
    state_required = True

    def __init__(self, params, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0, decoupled_weight_decay: bool = False):
        defaults = dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                        decoupled_weight_decay=decoupled_weight_decay)
        super().__init__(params, defaults)

    def _check_group(self, group: dict) -> None:
        name = self._name
        group["lr"] = check_non_negative(name, "learning rate lr", group["lr"])
        group["eps"] = check_non_negative(name, "epsilon eps", group["eps"])
        group["weight_decay"] = check_non_negative(name, "weight_decay", group["weight_decay"])
        group["decoupled_weight_decay"] = bool(group["decoupled_weight_decay"])
        betas = tuple(float(b) for b in group["betas"])
        if len(betas) != 2:
            raise ValueError(f"{name}: betas must be a pair (beta1, beta2), got {group['betas']}")
        for i, beta in enumerate(betas):
            if not 0.0 <= beta < 1.0:
                raise ValueError(f"{name}: invalid beta parameter at index {i}: {beta}; "
                                 f"each beta must be in [0, 1)")
        group["betas"] = betas

    def _update(self, param, grad: np.ndarray, group: dict, state: dict) -> None:
        p = param.data
        if not state:
            state["step"] = 0
            state["exp_avg"] = np.zeros_like(p)
            state["exp_avg_sq"] = np.zeros_like(p)
        state["step"] += 1
        step = state["step"]
        lr, weight_decay = group["lr"], group["weight_decay"]
        beta1, beta2 = group["betas"]

        if weight_decay != 0:
            if group["decoupled_weight_decay"]:
                p *= scalar(1.0 - lr * weight_decay, p)
            else:
                decayed = self._buffer(param, "decayed")
                np.multiply(p, scalar(weight_decay, p), out=decayed)
                decayed += grad
                grad = decayed

        exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
        tmp = self._buffer(param, "tmp")
        # exp_avg.lerp_(grad, 1 - beta1), with torch's two formulas for small and large weights
        weight = 1.0 - beta1
        np.subtract(grad, exp_avg, out=tmp)
        if weight < 0.5:
            tmp *= scalar(weight, p)
            exp_avg += tmp
        else:
            tmp *= scalar(beta1, p)
            np.subtract(grad, tmp, out=exp_avg)
        exp_avg_sq *= scalar(beta2, p)
        np.multiply(grad, scalar(1.0 - beta2, p), out=tmp)
        tmp *= grad
        exp_avg_sq += tmp

        # bias corrections in Python floats (float64), as torch computes them
        step_size = lr / (1.0 - beta1 ** step)
        bias_correction2_sqrt = (1.0 - beta2 ** step) ** 0.5
        denom = tmp
        np.sqrt(exp_avg_sq, out=denom)
        denom /= scalar(bias_correction2_sqrt, p)
        denom += scalar(group["eps"], p)
        np.divide(exp_avg, denom, out=denom)
        denom *= scalar(-step_size, p)
        p += denom


class AdamW(Adam):
    """Adam with decoupled weight decay (default 1e-2), exactly as torch.optim.AdamW."""

    def __init__(self, params, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 1e-2):
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                         decoupled_weight_decay=True)
