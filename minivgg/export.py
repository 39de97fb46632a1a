"""ONNX export: a minivgg model as an ONNX graph, built layer by layer with the `onnx` package.

Each layer adds its own nodes (`Module.to_onnx`, next to its forward); this module walks the
model, folds BatchNorms into the layer before them, and adds the input normalisation and the
metadata. The graph is the model in eval mode: dropout and identity layers add nothing,
BatchNorm uses its running statistics (folded into the Conv2d or Linear just before it where
there is one, else a per-channel scale and shift). Its input is float32 (N, C, H, W) with a free batch
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

import numpy as np

from . import nn
from .autograd import Tensor, no_grad
from .fsutil import atomic_write_path

OPSET = 17  # LayerNormalization's first opset; onnxruntime has run it since 1.14
INPUT_NAME = "image"
OUTPUT_NAME = "logits"
INSTALL_HINT = "ONNX export needs the onnx package: pip install 'minivgg[onnx]' (onnx and onnxruntime)"


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


def _folded(layer, bn) -> tuple[np.ndarray, np.ndarray]:
    """(weight, bias) of a Conv2d or Linear followed by an eval-mode BatchNorm, as one layer."""
    weight, bias = bn.fold_into(layer)
    return weight.astype(np.float32), bias.astype(np.float32)


def _foldable(layer, following, shape: tuple) -> bool:
    """A Conv2d, or a Linear on (N, features), followed by a BatchNorm with running statistics
    over the channels it writes."""
    if not (isinstance(following, (nn.BatchNorm1d, nn.BatchNorm2d))
            and following.running_mean is not None):
        return False
    return isinstance(layer, nn.Conv2d) or (isinstance(layer, nn.Linear) and len(shape) == 2)


def _emit(graph: _Graph, layer, x: str, shape: tuple, folded_bn=None) -> str:
    """The ONNX nodes of one layer (its own `to_onnx`) applied to tensor `x` of (batch-1)
    shape `shape`; with folded_bn, a Conv2d's or Linear's weights absorb that BatchNorm."""
    if type(layer).to_onnx is nn.Module.to_onnx:
        raise ExportError(f"cannot export a {type(layer).__name__} layer to ONNX: it defines no "
                          f"to_onnx (see minivgg.nn.Module.to_onnx)")
    if folded_bn is not None:
        return layer.to_onnx(graph, x, shape, folded=_folded(layer, folded_bn))
    return layer.to_onnx(graph, x, shape)


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
    layers = _flat_layers(model)

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
