"""Evaluate a trained model on a dataset split, and classify image files."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from . import checkpoint, functional as F
from .autograd import Tensor, no_grad
from .data import load_dataset
from .plots import confusion_matrix
from .train import averaged_logits, evaluate
from .tta import saved_tta, saved_tta_translate


def locate_weights(path) -> Path:
    """A weights file, or a run directory holding model.safetensors."""
    p = Path(path)
    if p.is_dir():
        p = p / "model.safetensors"
    if not p.exists():
        raise FileNotFoundError(f"no model found at {path}: give a model.safetensors file or a run "
                                f"directory written by `minivgg train`")
    return p


def evaluate_checkpoint(path, dataset=None, split="test", data_dir=None, download=False,
                        tta_flip=None, tta_shift=None, batch_size=1000) -> dict:
    """Accuracy, loss, per-class accuracy and confusion matrix of a saved model, scored with
    the test-time augmentation of its recipe unless tta_flip / tta_shift say otherwise."""
    model, meta = checkpoint.load_model(locate_weights(path))
    translate = saved_tta_translate(meta, tta_flip, tta_shift)
    tta_flip, tta_shift = saved_tta(meta, tta_flip, tta_shift)
    name = dataset or meta["dataset"]
    images, labels = load_dataset(name, split, data_dir=data_dir, download=download)
    expected = tuple(meta["input_shape"])
    if images.shape[1:] != expected:
        raise ValueError(f"the model expects images of shape {expected} (C, H, W) but {name} has "
                         f"{images.shape[1:]}; evaluate on a dataset like {meta['dataset']}")
    result = evaluate(model, images, labels, (meta["mean"], meta["std"]), batch_size=batch_size,
                      tta_flip=tta_flip, tta_shift=tta_shift, tta_translate=translate)
    classes = meta["class_names"]
    matrix = confusion_matrix(labels, result["predictions"], len(classes))
    per_class = np.diag(matrix) / np.maximum(matrix.sum(axis=1), 1)
    return {"dataset": name, "split": split, "accuracy": result["acc"], "loss": result["loss"],
            "classes": classes, "per_class_accuracy": per_class.tolist(), "confusion": matrix,
            "count": len(labels), "tta": {"flip": tta_flip, "shift": tta_shift,
                                          **({"translate": translate} if translate else {})},
            "metadata": meta}


def load_image(path, channels: int, size: int, invert="auto") -> np.ndarray:
    """Read a PNG/JPEG as uint8 (C, size, size). MNIST-style data is light-on-dark: with
    invert="auto" a greyscale image whose border is mostly light is inverted to match."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            img = img.convert("L" if channels == 1 else "RGB")
            if img.size != (size, size):
                img = img.resize((size, size), Image.BILINEAR)
            array = np.asarray(img, dtype=np.uint8)
    except FileNotFoundError:
        raise FileNotFoundError(f"image file not found: {path}") from None
    except (UnidentifiedImageError, OSError) as e:
        raise ValueError(f"cannot read {path} as an image (PNG or JPEG expected): {e}") from None
    array = array[None] if channels == 1 else array.transpose(2, 0, 1)
    if channels == 1:
        if invert == "auto":
            border = np.concatenate([array[0, 0], array[0, -1], array[0, :, 0], array[0, :, -1]])
            invert = bool(border.mean() > 127)
        if invert in (True, "yes"):
            array = 255 - array
    return np.ascontiguousarray(array)


def predict_files(path, files, top_k=3, invert="auto", tta_flip=None, tta_shift=None) -> list[dict]:
    """Class probabilities for each image file, with the top_k classes; the logits are those
    of the recipe's test-time augmentation unless tta_flip / tta_shift say otherwise."""
    model, meta = checkpoint.load_model(locate_weights(path))
    translate = saved_tta_translate(meta, tta_flip, tta_shift)
    tta_flip, tta_shift = saved_tta(meta, tta_flip, tta_shift)
    c, h, _ = meta["input_shape"]
    batch = np.stack([load_image(f, c, h, invert) for f in files]).astype(np.float32) / 255.0
    mean = np.asarray(meta["mean"], np.float32).reshape(1, c, 1, 1)
    std = np.asarray(meta["std"], np.float32).reshape(1, c, 1, 1)
    model.eval()
    with no_grad():
        logits = averaged_logits(model, batch, mean, std, tta_flip, tta_shift, translate)
        probs = F.softmax(Tensor(logits), axis=1).data
    classes = meta["class_names"]
    out = []
    for f, p in zip(files, probs):
        order = np.argsort(-p)[:top_k]
        out.append({"file": str(f), "prediction": classes[order[0]],
                    "top": [(classes[i], float(p[i])) for i in order],
                    "probabilities": {classes[i]: float(p[i]) for i in range(len(classes))}})
    return out
