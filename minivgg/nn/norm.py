"""Normalisation layers: BatchNorm (running statistics as buffers) and LayerNorm."""
from __future__ import annotations

import numpy as np

from .. import functional as F
from .module import Module, _label, _shape
from ..functional.checks import positive_int
from .params import _register_affine, _reset_affine


class _BatchNorm(Module):
    """Shared by BatchNorm1d and BatchNorm2d, which differ only in the input ranks they accept."""

    ranks: tuple = ()
    layout: str = ""
    torch_name: str = ""  # the torch.nn class

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float | None = 0.1,
                 affine: bool = True, track_running_stats: bool = True, *, bias: bool = True):
        super().__init__()
        name = type(self).__name__
        self.num_features = positive_int(num_features, "num_features", name)
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

    def torch_twin(self, tnn):
        return getattr(tnn, self.torch_name)(
            self.num_features, eps=self.eps, momentum=self.momentum, affine=self.affine,
            track_running_stats=self.track_running_stats)

    def extra_repr(self):
        return (f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, "
                f"affine={self.affine}, bias={self.bias is not None}, "
                f"track_running_stats={self.track_running_stats}")


class BatchNorm1d(_BatchNorm):
    """Batch normalisation over (N, C) or (N, C, L), per channel C."""

    ranks = (2, 3)
    torch_name = "BatchNorm1d"

    @property
    def layout(self):
        return f"(N, {self.num_features}) or (N, {self.num_features}, L)"


class BatchNorm2d(_BatchNorm):
    """Batch normalisation over (N, C, H, W), per channel C."""

    ranks = (4,)
    torch_name = "BatchNorm2d"

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
        self.normalized_shape = tuple(positive_int(n, "normalized_shape", "LayerNorm")
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

    def torch_twin(self, tnn):
        return tnn.LayerNorm(self.normalized_shape, eps=self.eps,
                             elementwise_affine=self.elementwise_affine,
                             bias=self.bias is not None)

    def extra_repr(self):
        return (f"{self.normalized_shape}, eps={self.eps}, "
                f"elementwise_affine={self.elementwise_affine}, bias={self.bias is not None}")
