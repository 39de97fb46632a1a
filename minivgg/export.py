"""ONNX export: a minivgg model as an ONNX graph, built layer by layer with the `onnx` package.

The graph is the model in eval mode: dropout and identity layers are left out, BatchNorm uses
its running statistics (folded into the Conv2d or Linear just before it where there is one,
else a per-channel scale and shift). Its input is float32 (N, C, H, W) with a free batch
dimension N. With `normalize=True` (the default) the input is the image's pixels scaled to
[0, 1] (uint8 / 255) and the graph subtracts the training mean and divides by the std itself;
with `normalize=False` the input is already normalised, and the metadata says with what. The
output is the logits, (N, num_classes); test-time augmentation is not part of the graph.

The model's metadata travels in the ONNX file's `metadata_props` as strings (lists and dicts
as JSON): class_names, mean, std, input_shape, dataset, model, normalization, and for a saved
run the test-time augmentation its recipe is scored with.
"""
from __future__ import annotations

import json
import math

import numpy as np

from . import nn
from .autograd import Tensor, no_grad
from .fsutil import atomic_write_path

OPSET = 17  # LayerNormalization's first opset; onnxruntime has run it since 1.14
INPUT_NAME = "image"
OUTPUT_NAME = "logits"
INSTALL_HINT = "ONNX export needs the onnx package: pip install 'minivgg[onnx]' (onnx and onnxruntime)"

_SKIPPED = (nn.Dropout, nn.Dropout2d, nn.Identity)


class ExportError(ValueError):
    """The model holds something the exporter cannot express; the message says what and where."""


def require_onnx():
    """The onnx module, or an ImportError whose message is the one line saying what to install."""
    try:
        import onnx
    except ImportError:
        raise ImportError(INSTALL_HINT) from None
    return onnx


def _flat_layers(model: nn.Module, prefix: str = "") -> list[tuple[str, nn.Module]]:
    """The leaf layers of nested Sequentials, in order, with dotted names."""
    if not isinstance(model, nn.Sequential):
        return [(prefix.rstrip(".") or type(model).__name__, model)]
    layers = []
    for name, child in model.named_children():
        layers += _flat_layers(child, f"{prefix}{name}.")
    return layers


class _Graph:
    """Nodes and initializers being collected, with unique names."""

    def __init__(self, onnx):
        self.onnx = onnx
        self.nodes, self.initializers = [], []
        self._count = 0

    def name(self, hint: str) -> str:
        self._count += 1
        return f"{hint}_{self._count}"

    def const(self, hint: str, array) -> str:
        from onnx import numpy_helper

        name = self.name(hint)
        self.initializers.append(numpy_helper.from_array(np.ascontiguousarray(array), name))
        return name

    def node(self, op: str, inputs: list, hint: str, **attrs) -> str:
        out = self.name(hint)
        self.nodes.append(self.onnx.helper.make_node(op, inputs, [out], name=out, **attrs))
        return out


def _pair(value) -> tuple[int, int]:
    return (int(value), int(value)) if isinstance(value, (int, np.integer)) else tuple(map(int, value))


def _conv_pads(layer: nn.Conv2d) -> list[int]:
    """ONNX pads [top, left, bottom, right]; 'same' puts an even kernel's extra row and column
    at the bottom and right, as PyTorch and minivgg's conv2d do."""
    kh, kw = layer.kernel_size
    if layer.padding == "valid":
        return [0, 0, 0, 0]
    if layer.padding == "same":
        top, left = (kh - 1) // 2, (kw - 1) // 2
        return [top, left, kh - 1 - top, kw - 1 - left]
    ph, pw = layer.padding
    return [ph, pw, ph, pw]


def _bn_scale_shift(bn) -> tuple[np.ndarray, np.ndarray]:
    """Eval-mode BatchNorm as y = x * scale + shift per channel, computed in float64."""
    var = bn.running_var.astype(np.float64)
    scale = 1.0 / np.sqrt(var + bn.eps)
    if bn.weight is not None:
        scale = scale * bn.weight.data.astype(np.float64)
    shift = -bn.running_mean.astype(np.float64) * scale
    if bn.bias is not None:
        shift = shift + bn.bias.data.astype(np.float64)
    return scale, shift


def _folded(layer, bn) -> tuple[np.ndarray, np.ndarray]:
    """(weight, bias) of a Conv2d or Linear followed by an eval-mode BatchNorm, as one layer."""
    scale, shift = _bn_scale_shift(bn)
    weight = layer.weight.data.astype(np.float64)
    bias = np.zeros(weight.shape[0]) if layer.bias is None else layer.bias.data.astype(np.float64)
    weight = weight * scale.reshape((-1,) + (1,) * (weight.ndim - 1))
    return weight.astype(np.float32), (bias * scale + shift).astype(np.float32)


def _foldable(layer, following, shape: tuple) -> bool:
    """A Conv2d, or a Linear on (N, features), followed by a BatchNorm with running statistics
    over the channels it writes."""
    if not (isinstance(following, (nn.BatchNorm1d, nn.BatchNorm2d))
            and following.running_mean is not None):
        return False
    return isinstance(layer, nn.Conv2d) or (isinstance(layer, nn.Linear) and len(shape) == 2)


def _emit(graph: _Graph, layer, x: str, shape: tuple, folded_bn=None) -> str:
    """The ONNX nodes of one layer applied to tensor `x` of (batch-1) shape `shape`."""
    g = graph
    if isinstance(layer, nn.Conv2d):
        if folded_bn is not None:
            weight, bias = _folded(layer, folded_bn)
        else:
            weight = layer.weight.data.astype(np.float32)
            bias = None if layer.bias is None else layer.bias.data.astype(np.float32)
        inputs = [x, g.const("conv_weight", weight)]
        if bias is not None:
            inputs.append(g.const("conv_bias", bias))
        return g.node("Conv", inputs, "conv", kernel_shape=list(layer.kernel_size),
                      strides=list(layer.stride), pads=_conv_pads(layer))
    if isinstance(layer, nn.Linear):
        if folded_bn is not None:
            weight, bias = _folded(layer, folded_bn)
        else:
            weight = layer.weight.data.astype(np.float32)
            bias = None if layer.bias is None else layer.bias.data.astype(np.float32)
        if len(shape) == 2:
            inputs = [x, g.const("fc_weight", weight)]
            if bias is not None:
                inputs.append(g.const("fc_bias", bias))
            return g.node("Gemm", inputs, "fc", transB=1)
        y = g.node("MatMul", [x, g.const("fc_weight_t", np.ascontiguousarray(weight.T))], "fc")
        return y if bias is None else g.node("Add", [y, g.const("fc_bias", bias)], "fc_bias_add")
    if isinstance(layer, (nn.BatchNorm1d, nn.BatchNorm2d)):
        return _batch_norm(g, layer, x, shape)
    if isinstance(layer, nn.LayerNorm):
        k = len(layer.normalized_shape)
        weight = (np.ones(layer.normalized_shape, np.float32) if layer.weight is None
                  else layer.weight.data.astype(np.float32))
        inputs = [x, g.const("ln_weight", weight)]
        if layer.bias is not None:
            inputs.append(g.const("ln_bias", layer.bias.data.astype(np.float32)))
        return g.node("LayerNormalization", inputs, "layer_norm", axis=-k, epsilon=float(layer.eps))
    if isinstance(layer, nn.MaxPool2d):
        ph, pw = _pair(layer.padding)
        return g.node("MaxPool", [x], "max_pool", kernel_shape=list(_pair(layer.kernel_size)),
                      strides=list(_pair(layer.stride)), pads=[ph, pw, ph, pw])
    if isinstance(layer, nn.AvgPool2d):
        ph, pw = _pair(layer.padding)
        return g.node("AveragePool", [x], "avg_pool", kernel_shape=list(_pair(layer.kernel_size)),
                      strides=list(_pair(layer.stride)), pads=[ph, pw, ph, pw],
                      count_include_pad=int(layer.count_include_pad))
    if isinstance(layer, nn.AdaptiveAvgPool2d):
        return _adaptive_avg_pool(g, layer, x, shape)
    if isinstance(layer, nn.Flatten):
        start = layer.start_dim
        # Reshape's 0 keeps that dimension (the free batch one among them)
        target = np.array([0] * start + [-1], dtype=np.int64)
        return g.node("Reshape", [x, g.const("flatten_shape", target)], "flatten")
    if isinstance(layer, nn.ReLU):
        return g.node("Relu", [x], "relu")
    if isinstance(layer, nn.ELU):
        return g.node("Elu", [x], "elu", alpha=float(layer.alpha))
    if isinstance(layer, nn.LeakyReLU):
        return g.node("LeakyRelu", [x], "leaky_relu", alpha=float(layer.negative_slope))
    if isinstance(layer, nn.GELU):
        return _gelu(g, layer, x)
    if isinstance(layer, nn.Tanh):
        return g.node("Tanh", [x], "tanh")
    if isinstance(layer, nn.Sigmoid):
        return g.node("Sigmoid", [x], "sigmoid")
    if isinstance(layer, nn.Scale):
        return g.node("Mul", [x, g.const("scale", np.array(layer.factor, np.float32))], "scale")
    raise ExportError(f"cannot export a {type(layer).__name__} layer to ONNX: the exporter knows "
                      f"minivgg.nn's layers only")


def _channel_shape(num: int, rank: int) -> tuple:
    """Broadcast shape of per-channel constants for an input of this rank: (C,) + (1,)*rest."""
    return (num,) + (1,) * (rank - 2)


def _batch_norm(g: _Graph, bn, x: str, shape: tuple) -> str:
    rank = len(shape)
    if bn.running_mean is not None:
        scale, shift = _bn_scale_shift(bn)
        y = g.node("Mul", [x, g.const("bn_scale", scale.astype(np.float32).reshape(
            _channel_shape(bn.num_features, rank)))], "bn_scale_mul")
        return g.node("Add", [y, g.const("bn_shift", shift.astype(np.float32).reshape(
            _channel_shape(bn.num_features, rank)))], "bn_shift_add")
    # no running statistics: eval mode normalises with the batch's own, as minivgg does
    axes = [0] + list(range(2, rank))
    mean = g.node("ReduceMean", [x], "bn_mean", axes=axes, keepdims=1)
    centred = g.node("Sub", [x, mean], "bn_centred")
    var = g.node("ReduceMean", [g.node("Mul", [centred, centred], "bn_sq")], "bn_var",
                 axes=axes, keepdims=1)
    std = g.node("Sqrt", [g.node("Add", [var, g.const("bn_eps", np.array(bn.eps, np.float32))],
                                 "bn_var_eps")], "bn_std")
    y = g.node("Div", [centred, std], "bn_normalised")
    if bn.weight is not None:
        y = g.node("Mul", [y, g.const("bn_weight", bn.weight.data.astype(np.float32).reshape(
            _channel_shape(bn.num_features, rank)))], "bn_weight_mul")
    if bn.bias is not None:
        y = g.node("Add", [y, g.const("bn_bias", bn.bias.data.astype(np.float32).reshape(
            _channel_shape(bn.num_features, rank)))], "bn_bias_add")
    return y


def _gelu(g: _Graph, layer, x: str) -> str:
    half_x = g.node("Mul", [x, g.const("half", np.array(0.5, np.float32))], "gelu_half_x")
    if layer.approximate == "tanh":
        cube = g.node("Mul", [g.node("Mul", [x, x], "gelu_sq"), x], "gelu_cube")
        inner = g.node("Add", [x, g.node("Mul", [cube, g.const("c", np.array(0.044715, np.float32))],
                                         "gelu_c_cube")], "gelu_inner")
        scaled = g.node("Mul", [inner, g.const("k", np.array(math.sqrt(2 / math.pi), np.float32))],
                        "gelu_scaled")
        phi = g.node("Tanh", [scaled], "gelu_tanh")
    else:
        scaled = g.node("Div", [x, g.const("sqrt2", np.array(math.sqrt(2), np.float32))], "gelu_scaled")
        phi = g.node("Erf", [scaled], "gelu_erf")
    one_plus = g.node("Add", [phi, g.const("one", np.array(1, np.float32))], "gelu_one_plus")
    return g.node("Mul", [half_x, one_plus], "gelu")


def _adaptive_avg_pool(g: _Graph, layer, x: str, shape: tuple) -> str:
    """PyTorch's bins: output cell (i, j) averages rows floor(i*H/OH) .. ceil((i+1)*H/OH)."""
    height, width = shape[2], shape[3]
    out_h, out_w = _pair(layer.output_size)
    if (out_h, out_w) == (1, 1):
        return g.node("GlobalAveragePool", [x], "global_avg_pool")
    if height % out_h == 0 and width % out_w == 0:
        kh, kw = height // out_h, width // out_w
        return g.node("AveragePool", [x], "adaptive_avg_pool", kernel_shape=[kh, kw], strides=[kh, kw])
    axes = g.const("hw_axes", np.array([2, 3], np.int64))
    rows = []
    for i in range(out_h):
        r0, r1 = (i * height) // out_h, -(-((i + 1) * height) // out_h)
        cells = []
        for j in range(out_w):
            c0, c1 = (j * width) // out_w, -(-((j + 1) * width) // out_w)
            cell = g.node("Slice", [x, g.const("starts", np.array([r0, c0], np.int64)),
                                    g.const("ends", np.array([r1, c1], np.int64)), axes], "bin")
            cells.append(g.node("ReduceMean", [cell], "bin_mean", axes=[2, 3], keepdims=1))
        rows.append(g.node("Concat", cells, "bin_row", axis=3))
    return g.node("Concat", rows, "adaptive_avg_pool", axis=2)


def to_onnx(model: nn.Module, input_shape, *, mean=None, std=None, class_names=None,
            normalize: bool = True, metadata: dict | None = None, opset: int = OPSET):
    """An onnx.ModelProto computing `model`'s eval-mode logits for (N, *input_shape) inputs.

    input_shape: (C, H, W). mean and std (per channel, or None for none): the normalisation the
    model was trained with; with `normalize` the graph applies it to inputs in [0, 1], else the
    input must come normalised. class_names and metadata (str -> JSON-able) go into the file's
    metadata_props. Raises ExportError for a layer it cannot express, ImportError (saying what
    to install) without the onnx package.
    """
    onnx = require_onnx()
    from onnx import TensorProto, helper

    input_shape = tuple(int(s) for s in input_shape)
    if len(input_shape) != 3 or min(input_shape) < 1:
        raise ExportError(f"input_shape must be (C, H, W) with positive sizes, got {input_shape}")
    channels = input_shape[0]
    layers = [(name, layer) for name, layer in _flat_layers(model) if not isinstance(layer, _SKIPPED)]

    graph = _Graph(onnx)
    x = INPUT_NAME
    if normalize and mean is not None:
        x = graph.node("Sub", [x, graph.const("mean", np.asarray(mean, np.float32).reshape(-1, 1, 1))],
                       "normalize_sub")
    if normalize and std is not None:
        x = graph.node("Div", [x, graph.const("std", np.asarray(std, np.float32).reshape(-1, 1, 1))],
                       "normalize_div")

    was_training = model.training
    model.eval()
    try:
        with no_grad():
            # one sample run through minivgg alongside gives each layer's input shape
            h = Tensor(np.zeros((1,) + input_shape, np.float32))
            i = 0
            while i < len(layers):
                name, layer = layers[i]
                following = layers[i + 1][1] if i + 1 < len(layers) else None
                fold = _foldable(layer, following, h.shape)
                try:
                    x = _emit(graph, layer, x, h.shape, folded_bn=following if fold else None)
                    h = layer(h)
                    if fold:
                        h = following(h)
                        i += 1
                except ExportError as error:
                    raise ExportError(f"layer {name}: {error}") from None
                i += 1
    finally:
        model.train(was_training)
    out_features = h.shape[1:]
    if len(out_features) != 1:
        raise ExportError(f"the model's output has shape (N, {', '.join(map(str, out_features))}); "
                          f"an exported classifier must end in (N, num_classes) logits")
    graph.nodes.append(helper.make_node("Identity", [x], [OUTPUT_NAME], name=OUTPUT_NAME))

    g = helper.make_graph(
        graph.nodes, getattr(model, "name", type(model).__name__),
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, ["N", *input_shape])],
        [helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, ["N", out_features[0]])],
        initializer=graph.initializers)
    proto = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)],
                              producer_name="minivgg")
    proto.ir_version = 8  # what onnxruntime releases since 1.14 read
    props = dict(metadata or {})
    props.update({
        "input_shape": list(input_shape),
        "class_names": list(class_names) if class_names is not None
        else [str(k) for k in range(out_features[0])],
        "mean": None if mean is None else np.asarray(mean, float).reshape(-1).tolist(),
        "std": None if std is None else np.asarray(std, float).reshape(-1).tolist(),
        "normalization": ("in the graph: give pixels / 255 in [0, 1]" if normalize else
                          "not in the graph: give (pixels / 255 - mean) / std"),
    })
    if len(props["class_names"]) != out_features[0]:
        raise ExportError(f"{len(props['class_names'])} class names for a model with "
                          f"{out_features[0]} outputs")
    for stat in ("mean", "std"):
        if props[stat] is not None and len(props[stat]) not in (1, channels):
            raise ExportError(f"{stat} has {len(props[stat])} values for {channels}-channel images")
    helper.set_model_props(proto, {key: value if isinstance(value, str) else json.dumps(value)
                                   for key, value in props.items()})
    onnx.checker.check_model(proto, full_check=True)
    return proto


def export_checkpoint(path, out=None, normalize: bool = True):
    """Export a saved model (a weights file or a run directory) to ONNX; returns the file written.

    out defaults to model.onnx beside the weights. The file appears only once complete.
    """
    from pathlib import Path

    from .checkpoint import load_model
    from .inference import locate_weights
    from .tta import describe_tta, saved_tta

    require_onnx()
    weights = locate_weights(path)
    model, meta = load_model(weights)
    out = Path(out) if out is not None else weights.with_suffix(".onnx")
    keep = {k: meta[k] for k in ("model", "dataset", "num_classes", "model_options") if k in meta}
    flip, shift = saved_tta(meta)
    keep["test_time_augmentation"] = (describe_tta(flip, shift) + " (not in the graph: average the "
                                      "logits of those views yourself)" if flip or shift else "none")
    proto = to_onnx(model, meta["input_shape"], mean=meta.get("mean"), std=meta.get("std"),
                    class_names=meta.get("class_names"), normalize=normalize, metadata=keep)
    with atomic_write_path(out) as temp:
        Path(temp).write_bytes(proto.SerializeToString())
    return out
