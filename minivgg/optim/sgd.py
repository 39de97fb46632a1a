"""SGD with momentum, dampening, Nesterov and (coupled) weight decay, exactly as torch.optim.SGD."""
from __future__ import annotations

import numpy as np

from .optimizer import Optimizer, check_non_negative, scalar


class SGD(Optimizer):
    """Stochastic gradient descent, per parameter p with gradient g (torch's rules):

        g = g + weight_decay * p
        b = g on the first step, else momentum * b + (1 - dampening) * g
        g = g + momentum * b if nesterov else b        (only when momentum != 0)
        p = p - lr * g
    """

    state_arrays = ("momentum_buffer",)

    def __init__(self, params, lr: float = 1e-3, momentum: float = 0.0, dampening: float = 0.0,
                 weight_decay: float = 0.0, nesterov: bool = False):
        defaults = dict(lr=lr, momentum=momentum, dampening=dampening,
                        weight_decay=weight_decay, nesterov=nesterov)
        super().__init__(params, defaults)

    def _check_group(self, group: dict) -> None:
        group["lr"] = check_non_negative("SGD", "learning rate lr", group["lr"])
        group["momentum"] = check_non_negative("SGD", "momentum", group["momentum"])
        group["weight_decay"] = check_non_negative("SGD", "weight_decay", group["weight_decay"])
        group["dampening"] = float(group["dampening"])
        group["nesterov"] = bool(group["nesterov"])
        if group["nesterov"] and (group["momentum"] <= 0 or group["dampening"] != 0):
            raise ValueError(
                f"SGD: Nesterov momentum requires a momentum > 0 and zero dampening, got "
                f"momentum={group['momentum']} and dampening={group['dampening']}")

    def _update(self, param, grad: np.ndarray, group: dict, state: dict) -> None:
        p = param.data
        momentum = group["momentum"]
        d_p = grad  # never written to: it is the caller's gradient
        if group["weight_decay"] != 0:
            decayed = self._buffer(param, "decayed")
            np.multiply(p, scalar(group["weight_decay"], p), out=decayed)
            decayed += grad
            d_p = decayed

        if momentum != 0:
            buf = state.get("momentum_buffer")
            if buf is None:
                buf = state["momentum_buffer"] = d_p.copy()
            else:
                buf *= scalar(momentum, p)
                if group["dampening"] == 0:
                    buf += d_p
                else:
                    tmp = self._buffer(param, "tmp")
                    np.multiply(d_p, scalar(1.0 - group["dampening"], p), out=tmp)
                    buf += tmp
            if group["nesterov"]:
                tmp = self._buffer(param, "tmp")
                np.multiply(buf, scalar(momentum, p), out=tmp)
                tmp += d_p
                d_p = tmp
            else:
                d_p = buf

        step = self._buffer(param, "tmp")  # may be d_p itself: elementwise, so that is safe
        np.multiply(d_p, scalar(-group["lr"], p), out=step)
        p += step
