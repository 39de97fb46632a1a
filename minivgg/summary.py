"""Model summary: a torchsummary-style table of leaf layers, output shapes and parameters;
and the model's FLOPs (`count_flops`), from what each layer says its arithmetic is.

    >>> print(summary(model, (1, 28, 28)))
    ----------------------------------------------------------------
            Layer (type)               Output Shape         Param #
    ================================================================
                Conv2d-1           [-1, 10, 26, 26]             100
    ...

Output shapes come from one real forward pass on a batch of zeros, recorded by forward hooks
on each leaf module, removed after that pass.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from .autograd import Tensor, no_grad

_PROBE_BATCH = 2  # more than 1, so that layers which reduce over the batch behave normally
_BYTES_PER_VALUE = 4  # float32
_MB = 1024.0 ** 2


@dataclass
class SummaryRow:
    layer: str            # "<ClassName>-<k>", k counting rows from 1
    name: str             # dotted path in the model ("" for the model itself)
    output_shape: tuple   # batch dimension first (-1 or batch_size); a list of such for several outputs
    num_params: int
    trainable_params: int


@dataclass
class ModelSummary:
    rows: list = field(default_factory=list)
    input_shape: tuple = ()
    batch_size: int = -1
    total_params: int = 0
    trainable_params: int = 0
    non_trainable_params: int = 0
    input_size_mb: float = 0.0
    forward_backward_size_mb: float = 0.0
    params_size_mb: float = 0.0
    total_size_mb: float = 0.0

    def __str__(self) -> str:
        return format_summary(self)


def _is_leaf(module) -> bool:
    return next(iter(module.children()), None) is None


def _check_input_shape(input_shape, op: str = "summary") -> tuple:
    if isinstance(input_shape, int):
        input_shape = (input_shape,)
    try:
        shape = tuple(input_shape)
    except TypeError:
        shape = None
    if not shape or not all(isinstance(d, (int, np.integer)) and not isinstance(d, bool)
                            and d > 0 for d in shape):
        raise ValueError(
            f"{op}: input_shape must be a non-empty tuple of positive ints without the "
            f"batch dimension, e.g. (1, 28, 28) or (3, 32, 32); got {input_shape!r}")
    return tuple(int(d) for d in shape)


def _output_shapes(output, batch_size: int):
    """Shape of a layer output with the batch dimension replaced by batch_size."""
    if isinstance(output, (tuple, list)):
        return [_output_shapes(o, batch_size) for o in output]
    shape = getattr(output, "shape", None)
    if shape is None or len(shape) == 0:
        return tuple(shape or ())
    return (batch_size,) + tuple(int(d) for d in shape[1:])


def _sample_shape(value) -> tuple | None:
    """The shape of one sample of a batched array or Tensor (None for anything else)."""
    shape = getattr(value, "shape", None)
    return None if shape is None or len(shape) == 0 else tuple(int(d) for d in shape[1:])


def _count_values(shapes) -> int:
    """Number of values in one sample's output(s) (the batch dimension left out)."""
    if isinstance(shapes, list):
        return sum(_count_values(s) for s in shapes)
    return int(np.prod(shapes[1:], dtype=np.int64)) if len(shapes) > 1 else 1


class _Recorder:
    """Forward hooks on each leaf that record a row per call (or the layer that failed)."""

    def __init__(self, model, batch_size: int):
        self.batch_size = batch_size
        self.rows = []
        self.calls = []             # (leaf, sample input shape, sample output shape) per call
        self.running = []           # (row label, dotted name) of the leaves entered, not yet left
        self.failed = None          # (row label, dotted name) of the innermost layer that raised
        self.last_done = None       # row label of the last layer that finished
        self.handles = []
        self.leaves = []
        seen = set()
        for name, module in model.named_modules():
            if _is_leaf(module) and id(module) not in seen:
                seen.add(id(module))
                self.leaves.append((name, module))

    def install(self) -> None:
        for name, module in self.leaves:
            self.handles.append(module.register_forward_pre_hook(self._enter(name)))
            self.handles.append(module.register_forward_hook(self._leave))

    def uninstall(self) -> None:
        for handle in self.handles:
            handle.remove()
        self.handles = []

    def note_failure(self) -> None:
        """After an exception: the innermost leaf that was entered and not left raised it."""
        if self.running:
            self.failed = self.running[-1]

    def _enter(self, name):
        def enter(module, args):
            self.running.append((f"{type(module).__name__}-{len(self.rows) + 1}", name))
        return enter

    def _leave(self, module, args, output):
        label, name = self.running.pop()
        self.calls.append((module, _sample_shape(args[0]) if args else None, _sample_shape(output)))
        params = list(module.parameters())
        self.rows.append(SummaryRow(
            layer=label,
            name=name,
            output_shape=_output_shapes(output, self.batch_size),
            num_params=sum(int(p.data.size) for p in params),
            trainable_params=sum(int(p.data.size) for p in params if p.requires_grad),
        ))
        self.last_done = label


def _run_probe(model, input_shape: tuple, recorder: _Recorder, op: str = "summary") -> None:
    modes = [(module, module.training) for _, module in model.named_modules()]
    try:
        model.eval()
        recorder.install()
        with no_grad():
            model(Tensor(np.zeros((_PROBE_BATCH,) + input_shape, dtype=np.float32)))
    except Exception as error:
        recorder.note_failure()
        if recorder.failed is not None:
            label, name = recorder.failed
            where = f"at layer {label}" + (f" ('{name}')" if name else "")
        elif recorder.last_done is not None:
            where = f"after layer {recorder.last_done}, outside any leaf layer"
        else:
            where = "before any leaf layer ran"
        hint = ""
        if isinstance(error, ValueError):
            hint = (" Check that input_shape is (channels, height, width) without the batch "
                    "dimension and matches what the model expects.")
        raise ValueError(
            f"{op}: {type(model).__name__} failed on input shape {input_shape} "
            f"(a batch of {_PROBE_BATCH} zeros) {where}: {type(error).__name__}: "
            f"{str(error).rstrip('.')}.{hint}") from error
    finally:
        recorder.uninstall()
        for module, training in modes:
            object.__setattr__(module, "training", training)


def summarize(model, input_shape, batch_size: int = -1) -> ModelSummary:
    """Rows (one per leaf layer call, in execution order) and totals, as a ModelSummary.

    `input_shape` excludes the batch dimension. `batch_size` only changes how shapes are
    shown and the memory estimates (-1 shows "-1" and estimates for one sample), as in
    torchsummary. Totals count each of the model's parameters once, including any held
    by container modules or shared between layers; "trainable" means requires_grad.
    BatchNorm running statistics are buffers, not parameters, and are not counted.
    """
    if not callable(getattr(model, "named_modules", None)):
        raise TypeError(f"summary: expected a minivgg.nn.Module, got {type(model).__name__}")
    input_shape = _check_input_shape(input_shape)
    if not isinstance(batch_size, (int, np.integer)) or batch_size == 0 or batch_size < -1:
        raise ValueError(f"summary: batch_size must be -1 or a positive int, got {batch_size!r}")
    recorder = _Recorder(model, int(batch_size))
    _run_probe(model, input_shape, recorder)

    unique = {id(p): p for p in model.parameters()}.values()
    total = sum(int(p.data.size) for p in unique)
    trainable = sum(int(p.data.size) for p in unique if p.requires_grad)

    samples = abs(batch_size)
    output_values = sum(_count_values(row.output_shape) for row in recorder.rows) * samples
    input_mb = math.prod(input_shape) * samples * _BYTES_PER_VALUE / _MB
    forward_backward_mb = 2.0 * output_values * _BYTES_PER_VALUE / _MB  # x2: activations and their gradients
    params_mb = total * _BYTES_PER_VALUE / _MB
    return ModelSummary(
        rows=recorder.rows,
        input_shape=input_shape,
        batch_size=int(batch_size),
        total_params=total,
        trainable_params=trainable,
        non_trainable_params=total - trainable,
        input_size_mb=input_mb,
        forward_backward_size_mb=forward_backward_mb,
        params_size_mb=params_mb,
        total_size_mb=input_mb + forward_backward_mb + params_mb,
    )


def count_flops(model, input_shape) -> dict:
    """Floating-point operations per image of one forward pass and of one training step.

    Each leaf layer counts its own multiply-adds per image (`Module.multiply_adds`): the
    convolutions and linear layers do; element-wise layers (BatchNorm, activations, pooling)
    count none, being memory-bound and a small share of the arithmetic. A multiply-add is 2
    FLOPs. Forward: 2 * MACs per layer. A training step adds the weight gradient (2 * MACs)
    and, for every counted layer but the first (whose input, the image, needs no gradient),
    the input gradient (2 * MACs). The layers are seen, with forward hooks, in one eval-mode
    pass on zeros of `input_shape` (without the batch dimension), so layers inside custom
    modules count too; the model's modes are restored afterwards.

    Returns {"forward": int, "train": int, "layers": [{"layer": class name, "output": the
    layer's output shape per image, "macs": int, "input_grad": bool}, ...]}.
    """
    if not callable(getattr(model, "named_modules", None)):
        raise TypeError(f"count_flops: expected a minivgg.nn.Module, got {type(model).__name__}")
    input_shape = _check_input_shape(input_shape, "count_flops")
    recorder = _Recorder(model, -1)
    _run_probe(model, input_shape, recorder, "count_flops")
    layers = []
    for module, in_shape, out_shape in recorder.calls:
        macs = module.multiply_adds(in_shape, out_shape)
        if macs:
            layers.append({"layer": type(module).__name__, "output": list(out_shape),
                           "macs": int(macs), "input_grad": bool(layers)})
    forward = sum(2 * layer["macs"] for layer in layers)
    backward = sum(2 * layer["macs"] * (2 if layer["input_grad"] else 1) for layer in layers)
    return {"forward": forward, "train": forward + backward, "layers": layers}


def _shape_text(shape) -> str:
    if isinstance(shape, list):
        return ", ".join(_shape_text(s) for s in shape)
    return "[" + ", ".join(str(d) for d in shape) + "]"


def format_summary(result: ModelSummary) -> str:
    """The torchsummary table; columns widen when a layer label or shape is longer."""
    cells = [(row.layer, _shape_text(row.output_shape), f"{row.num_params:,}")
             for row in result.rows]
    width_layer = max([20] + [len(c[0]) for c in cells])
    width_shape = max([25] + [len(c[1]) for c in cells])
    width_params = max([15] + [len(c[2]) for c in cells])

    def line(layer, shape, params):
        return f"{layer:>{width_layer}}  {shape:>{width_shape}} {params:>{width_params}}"

    rule_width = max(64, width_layer + width_shape + width_params + 3)
    thin, thick = "-" * rule_width, "=" * rule_width
    lines = [thin, line("Layer (type)", "Output Shape", "Param #"), thick]
    lines += [line(*c) for c in cells]
    lines += [
        thick,
        f"Total params: {result.total_params:,}",
        f"Trainable params: {result.trainable_params:,}",
        f"Non-trainable params: {result.non_trainable_params:,}",
        thin,
        f"Input size (MB): {result.input_size_mb:0.2f}",
        f"Forward/backward pass size (MB): {result.forward_backward_size_mb:0.2f}",
        f"Params size (MB): {result.params_size_mb:0.2f}",
        f"Estimated Total Size (MB): {result.total_size_mb:0.2f}",
        thin,
    ]
    return "\n".join(lines)


def summary(model, input_shape, batch_size: int = -1) -> str:
    """The summary table as a string (see `summarize` for what is counted)."""
    return format_summary(summarize(model, input_shape, batch_size))
