"""Checkpoints as safetensors files (never pickle): trained weights, and full resume state.

Two kinds of file, both plain `.safetensors` that any safetensors reader can open:

- a weights file (`save_weights`): its tensors are exactly `model.state_dict()`, with
  PyTorch's names and layouts, so `safetensors.torch.load_file` feeds it straight into
  the same architecture written in `torch.nn`;
- a resume file (`save_resume`): model, optimizer, scheduler and EMA state plus the
  training loop's own state (epoch, RNG states, history...), enough for an interrupted
  run to continue and end with exactly the weights of an uninterrupted one.

The safetensors header's string metadata holds one key, "minivgg", whose value is JSON:

    {"format": "minivgg", "format_version": 1, "kind": "weights" | "resume",
     "metadata": {...the caller's metadata: model, dataset, input_shape, metrics...},
     "tensors": [...weights files: the state_dict's keys, in order...],
     "state": {...resume files: the non-array part of every state, see flatten_state...}}

Every write goes through `fsutil.atomic_write_path`: a failed save leaves the previous
file untouched. Every read problem raises `CheckpointError` naming the file.
"""
from __future__ import annotations

import json
import os
from collections import OrderedDict
from collections.abc import Mapping

import numpy as np
from safetensors import SafetensorError, safe_open
from safetensors.numpy import save_file

from .fsutil import atomic_write_path

METADATA_KEY = "minivgg"
FORMAT_NAME = "minivgg"
FORMAT_VERSION = 1
WEIGHTS = "weights"
RESUME = "resume"

# Keys of a weights file's metadata that `load_model` needs to rebuild the architecture.
MODEL_KEYS = ("model", "input_shape", "num_classes")
# Sections of a resume file, each stored under its own tensor-name namespace.
RESUME_SECTIONS = ("model", "optimizer", "scheduler", "ema", "loop_state")


class CheckpointError(ValueError):
    """A checkpoint that cannot be written or read; the message names the file."""


# --- splitting nested state into tensors + JSON -------------------------------------------

# A JSON object with exactly one of these keys stands for something JSON cannot hold.
_ARRAY = "__array__"      # {"__array__": tensor name}           -> ndarray
_SCALAR = "__scalar__"    # {"__scalar__": tensor name}          -> numpy scalar (np.float32(...))
_TUPLE = "__tuple__"      # {"__tuple__": [items]}               -> tuple
_DICT = "__dict__"        # {"__dict__": [[key, value], ...]}    -> dict with int (or tag-like) keys
_TAGS = (_ARRAY, _SCALAR, _TUPLE, _DICT)


def flatten_state(tree, prefix: str = ""):
    """Split a nested state into (arrays, json_tree).

    `tree` is made of dicts (str or int keys), lists, tuples, None, bool, int, float, str,
    numpy arrays and numpy scalars. Every array (and numpy scalar, to keep its dtype) goes
    into `arrays` under a dotted name built from its path, e.g. with prefix "optimizer":
    "optimizer.state.0.momentum_buffer"; `json_tree` is the rest, with each array replaced
    by a reference to its name. `unflatten_state(arrays, json_tree)` rebuilds `tree`
    exactly: int keys stay ints, tuples stay tuples, dtypes and shapes are kept.
    """
    arrays: dict[str, np.ndarray] = {}
    json_tree = _flatten(tree, prefix, arrays)
    return arrays, json_tree


def _flatten(value, name: str, arrays: dict):
    # numpy first: np.float64 is also a Python float, and would lose its type as one
    if isinstance(value, (np.ndarray, np.generic)):
        return _store_array(value, name, arrays)
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        return int(value)        # an int subclass (IntEnum...) becomes a plain int
    if isinstance(value, float):
        return float(value)
    if isinstance(value, Mapping):
        return _flatten_mapping(value, name, arrays)
    if isinstance(value, tuple):
        return {_TUPLE: [_flatten(v, _join(name, i), arrays) for i, v in enumerate(value)]}
    if isinstance(value, list):
        return [_flatten(v, _join(name, i), arrays) for i, v in enumerate(value)]
    hint = ""
    if isinstance(value, np.random.Generator):
        hint = "; store its state instead: rng.bit_generator.state (a dict of ints)"
    raise CheckpointError(f"cannot store {type(value).__name__} at {name or '<root>'!r}: a "
                          f"checkpoint holds dicts, lists, tuples, None, bool, int, float, str "
                          f"and numpy arrays{hint}")


def _flatten_mapping(value: Mapping, name: str, arrays: dict):
    for key in value:
        if isinstance(key, bool) or not isinstance(key, (str, int)):
            raise CheckpointError(f"cannot store the key {key!r} ({type(key).__name__}) at "
                                  f"{name or '<root>'!r}: dict keys must be str or int")
    items = [(key, _flatten(v, _join(name, key), arrays)) for key, v in value.items()]
    tag_like = len(value) == 1 and next(iter(value)) in _TAGS
    if all(isinstance(key, str) for key in value) and not tag_like:
        return {key: v for key, v in items}
    return {_DICT: [[int(key) if isinstance(key, int) else key, v] for key, v in items]}


def _store_array(value, name: str, arrays: dict):
    if not name:
        raise CheckpointError("cannot store a bare array as a whole state: give it a name "
                              "(a prefix, or put it in a dict)")
    if name in arrays:
        raise CheckpointError(f"two values in the state map to the tensor name {name!r} "
                              f"(a key containing '.' collides with a nested key); rename one")
    array = np.asarray(value)
    if array.dtype.kind not in "biuf" or array.dtype.itemsize > 8:
        raise CheckpointError(f"cannot store the array at {name!r}: dtype {array.dtype} is not "
                              f"supported by safetensors; use a bool, integer or float dtype")
    arrays[name] = _contiguous(array)
    tag = _SCALAR if isinstance(value, np.generic) else _ARRAY
    return {tag: name}


def _contiguous(array: np.ndarray) -> np.ndarray:
    # Not np.ascontiguousarray: it turns 0-d arrays (BatchNorm's num_batches_tracked) into 1-d.
    return array if array.flags.c_contiguous else array.copy(order="C")


def _join(prefix: str, key) -> str:
    return f"{prefix}.{key}" if prefix else str(key)


def unflatten_state(arrays: Mapping, json_tree):
    """Inverse of `flatten_state`: the nested state, with fresh (writable) array copies.

    Raises CheckpointError when `json_tree` refers to a tensor that `arrays` lacks or is
    malformed.
    """
    return _unflatten(json_tree, arrays)


def _unflatten(node, arrays: Mapping):
    if isinstance(node, list):
        return [_unflatten(v, arrays) for v in node]
    if not isinstance(node, dict):
        return node
    if len(node) == 1 and next(iter(node)) in _TAGS:
        tag, payload = next(iter(node.items()))
        if tag in (_ARRAY, _SCALAR):
            if not isinstance(payload, str) or payload not in arrays:
                raise CheckpointError(f"the state refers to a tensor {payload!r} that is not "
                                      f"in the file")
            array = np.array(arrays[payload], copy=True)
            return array[()] if tag == _SCALAR else array
        if tag == _TUPLE and isinstance(payload, list):
            return tuple(_unflatten(v, arrays) for v in payload)
        if tag == _DICT and isinstance(payload, list) and all(
                isinstance(pair, list) and len(pair) == 2 for pair in payload):
            return {key: _unflatten(v, arrays) for key, v in payload}
        raise CheckpointError(f"malformed {tag} entry in the state: {str(payload)[:80]!r}")
    return {key: _unflatten(v, arrays) for key, v in node.items()}


# --- caller metadata -----------------------------------------------------------------------

def _plain_json(value, where: str):
    """The caller's metadata as plain JSON values: tuples and numpy arrays become lists,
    numpy scalars Python numbers. Anything else that JSON cannot hold is an error."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, (int, float)):
        return value
    if isinstance(value, (np.ndarray, np.generic)):
        return value.tolist()
    if isinstance(value, Mapping):
        out = {}
        for key, v in value.items():
            if not isinstance(key, str):
                raise CheckpointError(f"metadata key {key!r} at {where!r} is not a string; "
                                      f"JSON metadata needs string keys")
            out[key] = _plain_json(v, f"{where}.{key}")
        return out
    if isinstance(value, (list, tuple)):
        return [_plain_json(v, f"{where}[{i}]") for i, v in enumerate(value)]
    raise CheckpointError(f"metadata value at {where!r} is a {type(value).__name__}, which "
                          f"JSON cannot hold; convert it to a number, string, list or dict")


def _weights_metadata(model, metadata) -> dict:
    """The metadata of a weights file, checked so that `load_model` can rebuild the net."""
    if not isinstance(metadata, Mapping):
        raise CheckpointError(f"metadata must be a dict, got {type(metadata).__name__}")
    meta = _plain_json(metadata, "metadata")
    name = getattr(model, "name", None)
    if "model" not in meta and name is not None:
        meta = {"model": name, **meta}
    if name is not None and meta.get("model") != name:
        raise CheckpointError(f"metadata says model {meta.get('model')!r} but the model is a "
                              f"{name!r}; drop the 'model' entry or fix it")
    _check_model_keys(meta, where="save_weights")
    return meta


def _check_model_keys(meta: dict, where: str) -> None:
    missing = [key for key in MODEL_KEYS if key not in meta]
    if missing:
        raise CheckpointError(f"{where}: metadata lacks {missing}; a weights file must record "
                              f"'model' (zoo name), 'input_shape' [C, H, W] and 'num_classes'")
    shape = meta["input_shape"]
    if not (isinstance(shape, list) and len(shape) == 3 and all(
            isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in shape)):
        raise CheckpointError(f"{where}: metadata 'input_shape' must be [C, H, W] with positive "
                              f"ints, got {shape!r}")
    if shape[1] != shape[2]:
        raise CheckpointError(f"{where}: zoo models take square images, but 'input_shape' is "
                              f"{shape!r}")
    classes = meta["num_classes"]
    if isinstance(classes, bool) or not isinstance(classes, int) or classes < 1:
        raise CheckpointError(f"{where}: metadata 'num_classes' must be a positive int, got "
                              f"{classes!r}")
    names = meta.get("class_names")
    if names is not None and (not isinstance(names, list) or len(names) != classes):
        raise CheckpointError(f"{where}: metadata 'class_names' must be a list of num_classes="
                              f"{classes} names, got {names!r}")
    if not isinstance(meta["model"], str):
        raise CheckpointError(f"{where}: metadata 'model' must be a zoo model name, got "
                              f"{meta['model']!r}")


# --- writing -------------------------------------------------------------------------------

def _write(path, arrays: dict, header: dict) -> None:
    header = {"format": FORMAT_NAME, "format_version": FORMAT_VERSION, **header}
    text = json.dumps(header)    # cannot fail: flatten_state and _plain_json made it JSON
    with atomic_write_path(path) as temp:
        save_file(arrays, temp, metadata={METADATA_KEY: text})


def save_weights(path, model, metadata: dict) -> None:
    """Write `model.state_dict()` to a .safetensors file, with `metadata` as JSON.

    The tensors keep the state_dict's names, dtypes and shapes (PyTorch's layouts).
    `metadata` must record 'model' (a zoo name; default: `model.name`), 'input_shape'
    [C, H, W] and 'num_classes' so that `load_model` can rebuild the net; add anything
    else (dataset, class_names, mean/std, recipe, epoch, metrics...), and 'model_options'
    (a dict of keyword arguments for the zoo builder) if the net was built with any. It is
    stored as JSON: tuples and numpy arrays come back as lists.
    """
    meta = _weights_metadata(model, metadata)
    state = model.state_dict()
    arrays = {}
    for key, value in state.items():
        if not isinstance(value, np.ndarray):
            raise CheckpointError(f"state_dict entry {key!r} is a {type(value).__name__}, "
                                  f"not an ndarray")
        arrays[key] = _contiguous(value)
    _write(path, arrays, {"kind": WEIGHTS, "metadata": meta, "tensors": list(state)})


def save_resume(path, *, model, optimizer, scheduler=None, ema_state=None,
                loop_state: dict, metadata: dict) -> None:
    """Write everything needed to continue a training run exactly.

    `model`, `optimizer` and `scheduler` are objects with `state_dict()` (or their state
    dicts); `ema_state` is the EMA's state (a dict of arrays, or None); `loop_state` is the
    trainer's own state: epoch, step, history, RNG states (`rng.bit_generator.state`)...
    Each is stored under its own namespace: tensor "model.features.0.weight",
    "optimizer.state.0.momentum_buffer", "ema...."; the non-array values go to the JSON.
    """
    if not isinstance(metadata, Mapping):
        raise CheckpointError(f"metadata must be a dict, got {type(metadata).__name__}")
    if not isinstance(loop_state, Mapping):
        raise CheckpointError(f"loop_state must be a dict, got {type(loop_state).__name__}")
    sections = {"model": _state_of(model), "optimizer": _state_of(optimizer),
                "scheduler": _state_of(scheduler), "ema": ema_state, "loop_state": loop_state}
    arrays: dict[str, np.ndarray] = {}
    state_json = {}
    for section, tree in sections.items():
        section_arrays, state_json[section] = flatten_state(tree, prefix=section)
        arrays.update(section_arrays)
    meta = _plain_json(metadata, "metadata")
    _write(path, arrays, {"kind": RESUME, "metadata": meta, "state": state_json})


def _state_of(obj):
    state_dict = getattr(obj, "state_dict", None)
    return state_dict() if callable(state_dict) else obj


# --- reading -------------------------------------------------------------------------------

_ADVICE = {
    WEIGHTS: "load it with minivgg.checkpoint.load_resume() (it was written by save_resume "
             "to continue training), or use the weights file the run wrote",
    RESUME: "it holds trained weights only (written by save_weights); load it with "
            "load_weights()/load_model(), or resume from the run's resume checkpoint",
}


def _read(path, kind: str):
    """(header, tensors) of a minivgg checkpoint of the given kind, fully validated."""
    name = str(path)
    if not os.path.exists(path):
        raise CheckpointError(f"checkpoint {name!r} does not exist; check the path")
    if os.path.isdir(path):
        raise CheckpointError(f"checkpoint {name!r} is a directory; give the .safetensors file")
    try:
        with safe_open(path, framework="np") as handle:
            strings = handle.metadata() or {}
            header = _parse_header(name, strings)
            if header["kind"] != kind:
                raise CheckpointError(f"{name!r} is a {header['kind']} checkpoint, not a {kind} "
                                      f"checkpoint; {_ADVICE[kind]}")
            tensors = {key: np.array(handle.get_tensor(key), copy=True) for key in handle.keys()}
    except SafetensorError as err:
        raise CheckpointError(f"{name!r} is not a readable safetensors file ({err}); it may be "
                              f"truncated or not a checkpoint at all: re-save or re-download it") from err
    except OSError as err:
        raise CheckpointError(f"cannot read checkpoint {name!r}: {err}") from err
    return header, tensors


def _parse_header(name: str, strings: dict) -> dict:
    if METADATA_KEY not in strings:
        raise CheckpointError(f"{name!r} is a safetensors file without minivgg metadata (no "
                              f"{METADATA_KEY!r} entry); it was not written by minivgg's "
                              f"save_weights/save_resume")
    try:
        header = json.loads(strings[METADATA_KEY])
    except ValueError as err:
        raise CheckpointError(f"{name!r}: the minivgg metadata is not valid JSON ({err}); the "
                              f"file is damaged: re-save it") from err
    if not isinstance(header, dict) or header.get("format") != FORMAT_NAME:
        raise CheckpointError(f"{name!r}: the minivgg metadata is malformed (expected a JSON "
                              f"object with format {FORMAT_NAME!r}); the file is damaged: re-save it")
    version = header.get("format_version")
    if version != FORMAT_VERSION:
        raise CheckpointError(f"{name!r} has checkpoint format version {version!r}, but this "
                              f"minivgg reads version {FORMAT_VERSION}; use the minivgg version "
                              f"that wrote it (or a newer one)")
    kind = header.get("kind")
    body = {WEIGHTS: "tensors", RESUME: "state"}.get(kind)
    if body is None or body not in header or not isinstance(header.get("metadata"), dict):
        raise CheckpointError(f"{name!r}: the minivgg metadata is malformed (kind {kind!r}, keys "
                              f"{sorted(header)}); the file is damaged: re-save it")
    return header


def load_weights(path):
    """(state_dict, metadata) of a weights file: an OrderedDict in the saved order."""
    header, tensors = _read(path, WEIGHTS)
    names = header["tensors"]
    if not isinstance(names, list) or sorted(names) != sorted(tensors):
        raise CheckpointError(f"{str(path)!r}: the tensors in the file do not match the list in "
                              f"its metadata; the file is damaged: re-save it")
    return OrderedDict((key, tensors[key]) for key in names), header["metadata"]


def load_model(path):
    """(model, metadata): the zoo model named in the file, with its weights, in eval mode."""
    from .models import zoo

    state, meta = load_weights(path)
    name = str(path)
    _check_model_keys(meta, where=repr(name))
    try:
        spec = zoo.get_model_spec(meta["model"])
    except zoo.UnknownModelError as err:
        raise CheckpointError(f"{name!r}: {err}; the file was written by a minivgg with more "
                              f"models, or its metadata is wrong") from err
    channels, size, _ = meta["input_shape"]
    options = meta.get("model_options", {})
    try:
        model = zoo.build(spec.name, in_channels=channels, num_classes=meta["num_classes"],
                          image_size=size, **options)
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"{name!r}: cannot build {spec.name!r} from the recorded "
                              f"metadata: {err}") from err
    try:
        model.load_state_dict(state, strict=True)
    except (ValueError, KeyError, RuntimeError) as err:
        raise CheckpointError(f"{name!r}: {err}") from err
    model.eval()
    return model, meta


def load_resume(path) -> dict:
    """The state written by `save_resume`: a dict with keys model, optimizer, scheduler,
    ema, loop_state (each as it was given, arrays as fresh copies) and metadata."""
    header, tensors = _read(path, RESUME)
    state_json = header["state"]
    if not isinstance(state_json, dict) or sorted(state_json) != sorted(RESUME_SECTIONS):
        raise CheckpointError(f"{str(path)!r}: the resume state is malformed (sections "
                              f"{sorted(state_json) if isinstance(state_json, dict) else state_json!r}); "
                              f"the file is damaged: re-save it")
    try:
        result = {section: unflatten_state(tensors, state_json[section])
                  for section in RESUME_SECTIONS}
    except CheckpointError as err:
        raise CheckpointError(f"{str(path)!r}: {err}; the file is damaged: re-save it") from err
    result["metadata"] = header["metadata"]
    return result
