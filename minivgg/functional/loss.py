"""Softmax, log-softmax and the classification losses, each forward beside its backward."""
from __future__ import annotations

import numbers

import numpy as np

from ..autograd import Function, Tensor, as_tensor

__all__ = ["log_softmax", "softmax", "nll_loss", "cross_entropy"]

_REDUCTIONS = ("mean", "sum", "none")


def _log_softmax(x: np.ndarray, axis: int) -> np.ndarray:
    """log(softmax(x)) without overflow: shift by the max before exponentiating."""
    shifted = x - x.max(axis=axis, keepdims=True)
    shifted -= np.log(np.exp(shifted).sum(axis=axis, keepdims=True))
    return shifted


class LogSoftmax(Function):
    def forward(self, x, axis=1):
        out = _log_softmax(x, axis)
        if self.requires_grad:
            self.out, self.axis = out, axis
        return out

    def backward(self, grad):
        return (grad - np.exp(self.out) * grad.sum(axis=self.axis, keepdims=True),)


class Softmax(Function):
    def forward(self, x, axis=1):
        out = np.exp(_log_softmax(x, axis))
        if self.requires_grad:
            self.out, self.axis = out, axis
        return out

    def backward(self, grad):
        out = self.out
        return (out * (grad - (grad * out).sum(axis=self.axis, keepdims=True)),)


def _reduce(losses: np.ndarray, reduction: str) -> np.ndarray:
    """(N,) per-sample losses -> the reduced loss."""
    if reduction == "none":
        return losses
    total = losses.mean() if reduction == "mean" else losses.sum()
    return np.asarray(total, dtype=losses.dtype)


def _per_sample_grad(grad: np.ndarray, reduction: str, n: int) -> np.ndarray:
    """d(reduced loss)/d(per-sample loss) times the incoming grad: (N,) or a scalar."""
    if reduction == "mean":
        return grad / n
    return grad


class NLLLoss(Function):
    """-log_probs[i, target[i]], reduced over the batch."""

    def forward(self, log_probs, target=None, reduction="mean"):
        rows = np.arange(log_probs.shape[0])
        if self.requires_grad:
            self.target, self.shape, self.reduction = target, log_probs.shape, reduction
        return _reduce(-log_probs[rows, target], reduction)

    def backward(self, grad):
        n = self.shape[0]
        g = np.zeros(self.shape, dtype=grad.dtype)  # (N, classes)
        g[np.arange(n), self.target] = -_per_sample_grad(grad, self.reduction, n)
        return (g,)


class CrossEntropy(Function):
    """log-softmax + NLL in one step, with torch's label smoothing.

    With smoothing s over K classes the target distribution is q = (1 - s) * onehot + s / K,
    loss_i = -sum_k q_ik * log p_ik, and d loss_i / d logits_i = softmax_i - q_i.
    """

    def forward(self, logits, target=None, label_smoothing=0.0, reduction="mean"):
        n, k = logits.shape
        log_probs = _log_softmax(logits, axis=1)  # (N, K)
        losses = -log_probs[np.arange(n), target]  # (N,)
        if label_smoothing:
            smooth = -log_probs.sum(axis=1)
            losses = (1 - label_smoothing) * losses + (label_smoothing / k) * smooth
        if self.requires_grad:
            self.log_probs, self.target = log_probs, target
            self.label_smoothing, self.reduction = label_smoothing, reduction
        return _reduce(losses, reduction)

    def backward(self, grad):
        n, k = self.log_probs.shape
        g = np.exp(self.log_probs)  # softmax, (N, K)
        g[np.arange(n), self.target] -= 1 - self.label_smoothing
        if self.label_smoothing:
            g -= self.label_smoothing / k
        scale = _per_sample_grad(grad, self.reduction, n)
        g *= scale[:, None] if scale.ndim else scale
        return (g,)


# ---- validation and the public ops ---------------------------------------------------

def _check_reduction(op: str, reduction) -> None:
    if reduction not in _REDUCTIONS:
        raise ValueError(f"{op}: reduction must be one of {_REDUCTIONS}, got {reduction!r}")


def _check_scores(op: str, name: str, x: Tensor) -> None:
    if x.ndim != 2:
        raise ValueError(f"{op} expects {name} of shape (N, classes), got shape {x.shape}")


def _check_target(op: str, target, n: int, classes: int) -> np.ndarray:
    """target: integer class labels, shape (N,), each in [0, classes)."""
    labels = target.data if isinstance(target, Tensor) else np.asarray(target)
    if not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"{op}: target must hold integer class labels, got dtype {labels.dtype}")
    if labels.shape != (n,):
        raise ValueError(f"{op}: target has shape {labels.shape} but the input has {n} rows; "
                         f"pass one class label per row (shape ({n},))")
    bad = (labels < 0) | (labels >= classes)
    if bad.any():
        raise ValueError(f"{op}: target contains label {labels[bad][0]} but there are {classes} "
                         f"classes; labels must be in 0..{classes - 1}")
    return labels


def _check_axis(op: str, axis, x: Tensor) -> int:
    if not isinstance(axis, numbers.Integral) or not -x.ndim <= axis < x.ndim:
        raise ValueError(f"{op}: axis {axis!r} is out of range for an input of shape {x.shape}")
    return int(axis) % x.ndim


def log_softmax(x, axis: int = 1) -> Tensor:
    x = as_tensor(x)
    return LogSoftmax.apply(x, axis=_check_axis("log_softmax", axis, x))


def softmax(x, axis: int = 1) -> Tensor:
    x = as_tensor(x)
    return Softmax.apply(x, axis=_check_axis("softmax", axis, x))


def nll_loss(log_probs, target, reduction: str = "mean") -> Tensor:
    """Negative log-likelihood of integer targets (N,) under log-probabilities (N, classes)."""
    log_probs = as_tensor(log_probs)
    _check_scores("nll_loss", "log_probs", log_probs)
    _check_reduction("nll_loss", reduction)
    labels = _check_target("nll_loss", target, *log_probs.shape)
    return NLLLoss.apply(log_probs, target=labels, reduction=reduction)


def cross_entropy(logits, target, label_smoothing: float = 0.0, reduction: str = "mean") -> Tensor:
    """Softmax cross-entropy of logits (N, classes) against integer targets (N,), as torch's.

    label_smoothing s in [0, 1] mixes the one-hot target with the uniform distribution:
    loss = (1 - s) * nll + s * mean over classes of -log_softmax.
    """
    logits = as_tensor(logits)
    _check_scores("cross_entropy", "logits", logits)
    _check_reduction("cross_entropy", reduction)
    if (not isinstance(label_smoothing, numbers.Real) or isinstance(label_smoothing, bool)
            or not 0 <= label_smoothing <= 1):
        raise ValueError(f"cross_entropy: label_smoothing must be in [0, 1], "
                         f"got {label_smoothing!r}")
    labels = _check_target("cross_entropy", target, *logits.shape)
    return CrossEntropy.apply(logits, target=labels, label_smoothing=float(label_smoothing),
                              reduction=reduction)
