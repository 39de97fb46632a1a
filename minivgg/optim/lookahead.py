"""Lookahead (Zhang, Lucas, Hinton & Ba, 2019) around any minivgg optimizer.

The wrapped ("fast") optimizer steps as usual; every `k` steps the slow weights move a
fraction `alpha` of the way to the fast ones, and the fast weights restart from the slow:

    slow = slow + alpha * (fast - slow);  fast = slow

`alpha` may be a function of the step count (airbench anneals it, averaging more and more
strongly towards the end); `start` delays the first sync, and the slow weights are taken at
the first sync after it. `buffers` (e.g. BatchNorm running statistics) are averaged and
reset in the same way, as airbench does with its whole state_dict.
"""
from __future__ import annotations

import numbers

import numpy as np

from .optimizer import Optimizer


class Lookahead:
    def __init__(self, optimizer: Optimizer, k: int = 5, alpha=0.5, start: int = 0, buffers=()):
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"Lookahead: wraps a minivgg Optimizer, got {type(optimizer).__name__}")
        if isinstance(k, bool) or not isinstance(k, numbers.Integral) or k < 1:
            raise ValueError(f"Lookahead: k (steps between syncs) must be a positive int, got {k!r}")
        if isinstance(start, bool) or not isinstance(start, numbers.Integral) or start < 0:
            raise ValueError(f"Lookahead: start must be an int >= 0, got {start!r}")
        if not callable(alpha):
            self._check_alpha(alpha)
        self.optimizer, self.k, self.alpha, self.start = optimizer, int(k), alpha, int(start)
        self.buffers = list(buffers)
        for i, b in enumerate(self.buffers):
            if not isinstance(b, np.ndarray) or b.dtype.kind != "f":
                raise TypeError(f"Lookahead: buffer {i} must be a floating-point ndarray, "
                                f"got {type(b).__name__}")
        self.step_count = 0
        self.slow: list[np.ndarray] | None = None  # parameters, then buffers

    @staticmethod
    def _check_alpha(alpha) -> float:
        if isinstance(alpha, bool) or not isinstance(alpha, numbers.Real) or not 0 <= alpha <= 1:
            raise ValueError(f"Lookahead: alpha must be in [0, 1], got {alpha!r}")
        return float(alpha)

    @property
    def param_groups(self):
        return self.optimizer.param_groups

    def _arrays(self) -> list[np.ndarray]:
        return [p.data for group in self.param_groups for p in group["params"]] + self.buffers

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.optimizer.zero_grad(set_to_none)

    def step(self, closure=None):
        loss = self.optimizer.step(closure)
        self.step_count += 1
        if self.step_count % self.k == 0 and self.step_count > self.start:
            if self.slow is None:
                self.slow = [a.copy() for a in self._arrays()]
            else:
                alpha = self.alpha(self.step_count) if callable(self.alpha) else self.alpha
                self._pull(self._check_alpha(alpha))
        return loss

    def _pull(self, alpha: float) -> None:
        for slow, fast in zip(self.slow, self._arrays()):
            slow += slow.dtype.type(alpha) * (fast - slow)
            fast[...] = slow

    def reset_to_slow(self) -> None:
        """Set the fast weights to the slow ones (airbench does this once, after the last step,
        so that the run ends on the averaged weights; between syncs the fast steps are kept).
        Nothing happens before the first sync."""
        if self.slow is not None:
            for slow, fast in zip(self.slow, self._arrays()):
                fast[...] = slow

    def state_dict(self) -> dict:
        slow = {} if self.slow is None else {i: s.copy() for i, s in enumerate(self.slow)}
        return {"optimizer": self.optimizer.state_dict(), "step_count": self.step_count,
                "slow": slow}

    def load_state_dict(self, state_dict: dict) -> None:
        name = "Lookahead.load_state_dict"
        if not isinstance(state_dict, dict) or set(state_dict) != {"optimizer", "step_count", "slow"}:
            keys = sorted(state_dict) if isinstance(state_dict, dict) else type(state_dict).__name__
            raise ValueError(f"{name}: expected keys 'optimizer', 'slow', 'step_count', got {keys}")
        arrays = self._arrays()
        saved = state_dict["slow"]
        slow = None
        if saved:
            if sorted(int(i) for i in saved) != list(range(len(arrays))):
                raise ValueError(f"{name}: the saved slow weights number {len(saved)} arrays; "
                                 f"this Lookahead has {len(arrays)} (parameters and buffers)")
            slow = []
            for i, array in enumerate(arrays):
                value = np.asarray(saved[i] if i in saved else saved[str(i)])
                if value.shape != array.shape:
                    raise ValueError(f"{name}: slow array {i} has shape {value.shape}, the model's "
                                     f"has {array.shape}")
                slow.append(np.array(value, dtype=array.dtype, copy=True))
        self.optimizer.load_state_dict(state_dict["optimizer"])
        self.step_count = int(state_dict["step_count"])
        self.slow = slow

    def __repr__(self) -> str:
        alpha = "schedule" if callable(self.alpha) else self.alpha
        return f"Lookahead(k={self.k}, alpha={alpha}, start={self.start}) over {self.optimizer!r}"
