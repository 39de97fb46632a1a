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

    def forward(self, x, relu: bool = False, relu_after: bool = False, dropout=None):
        """relu=True: this layer applied to relu(x); relu_after=True: relu of this layer's
        output; dropout (a Dropout layer, with relu_after): that layer applied to the
        result. Each as one op where the kernels can (Sequential fuses ReLU -> BN,
        BN -> ReLU and BN -> ReLU -> Dropout)."""
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
        fuse_dropout = (dropout is not None and dropout.training and use_batch_stats
                        and relu_after and 0 < np.float32(dropout.p) < 1)
        out = F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias,
                           training=use_batch_stats, momentum=factor, eps=self.eps, relu=relu,
                           relu_after=relu_after, dropout=dropout.p if fuse_dropout else 0.0,
                           rng=dropout.rng if fuse_dropout else None)
        return dropout(out) if dropout is not None and not fuse_dropout else out

    def eval_scale_shift(self) -> tuple[np.ndarray, np.ndarray]:
        """This layer in eval mode as y = x * scale + shift per channel, in float64 (from
        the running statistics, which it must have)."""
        scale = 1.0 / np.sqrt(self.running_var.astype(np.float64) + self.eps)
        if self.weight is not None:
            scale = scale * self.weight.data.astype(np.float64)
        shift = -self.running_mean.astype(np.float64) * scale
        if self.bias is not None:
            shift = shift + self.bias.data.astype(np.float64)
        return scale, shift

    def fold_into(self, layer) -> tuple[np.ndarray, np.ndarray]:
        """(weight, bias) of `layer` (a Conv2d, or a Linear) followed by this layer in eval
        mode, as one layer of that kind, in float64: weight * scale, bias * scale + shift
        per output channel."""
        scale, shift = self.eval_scale_shift()
        weight = layer.weight.data.astype(np.float64)
        bias = (np.zeros(weight.shape[0]) if layer.bias is None
                else layer.bias.data.astype(np.float64))
        weight = weight * scale.reshape((-1,) + (1,) * (weight.ndim - 1))
        return weight, bias * scale + shift

    def to_onnx(self, graph, x, shape):
        g = graph
        per_channel = (self.num_features,) + (1,) * (len(shape) - 2)  # broadcasts over (N, C, ...)
        if self.running_mean is not None:
            scale, shift = self.eval_scale_shift()
            y = g.node("Mul", [x, g.const("bn_scale", scale.astype(np.float32).reshape(per_channel))],
                       "bn_scale_mul")
            return g.node("Add", [y, g.const("bn_shift", shift.astype(np.float32).reshape(per_channel))],
                          "bn_shift_add")
        # no running statistics: eval mode normalises with the batch's own, as forward does
        axes = [0] + list(range(2, len(shape)))
        mean = g.node("ReduceMean", [x], "bn_mean", axes=axes, keepdims=1)
        centred = g.node("Sub", [x, mean], "bn_centred")
        var = g.node("ReduceMean", [g.node("Mul", [centred, centred], "bn_sq")], "bn_var",
                     axes=axes, keepdims=1)
        std = g.node("Sqrt", [g.node("Add", [var, g.const("bn_eps", np.array(self.eps, np.float32))],
                                     "bn_var_eps")], "bn_std")
        y = g.node("Div", [centred, std], "bn_normalised")
        if self.weight is not None:
            y = g.node("Mul", [y, g.const("bn_weight", self.weight.data.astype(np.float32).reshape(
                per_channel))], "bn_weight_mul")
        if self.bias is not None:
            y = g.node("Add", [y, g.const("bn_bias", self.bias.data.astype(np.float32).reshape(
                per_channel))], "bn_bias_add")
        return y

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

    def to_onnx(self, graph, x, shape):
        weight = (np.ones(self.normalized_shape, np.float32) if self.weight is None
                  else self.weight.data.astype(np.float32))
        inputs = [x, graph.const("ln_weight", weight)]
        if self.bias is not None:
            inputs.append(graph.const("ln_bias", self.bias.data.astype(np.float32)))
        return graph.node("LayerNormalization", inputs, "layer_norm",
                          axis=-len(self.normalized_shape), epsilon=float(self.eps))

    def torch_twin(self, tnn):
        return tnn.LayerNorm(self.normalized_shape, eps=self.eps,
                             elementwise_affine=self.elementwise_affine,
                             bias=self.bias is not None)

    def extra_repr(self):
        return (f"{self.normalized_shape}, eps={self.eps}, "
                f"elementwise_affine={self.elementwise_affine}, bias={self.bias is not None}")
