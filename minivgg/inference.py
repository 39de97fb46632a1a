"""Evaluate a trained model on a dataset split, classify image files, and look inside the net
for given images."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from . import checkpoint, functional as F
from .autograd import Tensor, no_grad
from .data import DATASETS, load_dataset
from .metrics import macro_average, per_class_scores
from .metrics import confusion_matrix
from .preprocess import MNIST_SIZE, mnist_style
from .train import averaged_logits, evaluate
from .tta import saved_tta, saved_tta_translate

MNIST_STYLE_DATASETS = ("mnist",)  # digit datasets whose images were made by preprocess.mnist_style


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
    model, meta, tta_flip, tta_shift, translate = _load_for_inference(path, tta_flip, tta_shift)
    name = dataset or meta["dataset"]
    folder = {} if name in DATASETS else {"channels": meta["input_shape"][0],
                                          "image_size": meta["input_shape"][1]}
    images, labels = load_dataset(name, split, data_dir=data_dir, download=download, **folder)
    expected = tuple(meta["input_shape"])
    if images.shape[1:] != expected:
        raise ValueError(f"the model expects images of shape {expected} (C, H, W) but {name} has "
                         f"{images.shape[1:]}; evaluate on a dataset like {meta['dataset']}")
    result = evaluate(model, images, labels, (meta["mean"], meta["std"]), batch_size=batch_size,
                      tta_flip=tta_flip, tta_shift=tta_shift, tta_translate=translate)
    classes = meta.get("class_names") or [str(i) for i in range(meta["num_classes"])]
    matrix = confusion_matrix(labels, result["predictions"], len(classes))
    per_class = np.diag(matrix) / np.maximum(matrix.sum(axis=1), 1)
    scores = per_class_scores(matrix, classes)
    wrong = np.flatnonzero(result["predictions"] != labels)
    worst = wrong[np.argsort(-result["losses"][wrong], kind="stable")]
    return {"dataset": name, "split": split, "accuracy": result["acc"], "loss": result["loss"],
            "classes": classes, "per_class_accuracy": per_class.tolist(), "confusion": matrix,
            "per_class": scores, "macro_avg": macro_average(scores),
            "count": len(labels), "tta": {"flip": tta_flip, "shift": tta_shift,
                                          **({"translate": translate} if translate else {})},
            "metadata": meta,
            "misclassified": [{"index": int(i), "true": classes[labels[i]],
                               "predicted": classes[result["predictions"][i]],
                               "loss": float(result["losses"][i])} for i in worst],
            "images": images}


def plot_misclassified(result: dict, path=None, count: int = 32):
    """A grid of the `count` misclassified images with the highest loss, from the result of
    evaluate_checkpoint, each captioned with its true and predicted class; returns the Figure
    (None when nothing was misclassified)."""
    from .inspect_plots import plot_image_grid

    worst = result["misclassified"][:count]
    if not worst:
        return None
    images = result["images"][[w["index"] for w in worst]]
    captions = [f"#{w['index']}\ntrue {w['true']}\npred {w['predicted']}" for w in worst]
    return plot_image_grid(images, captions, path, title=f"{result['dataset']} {result['split']}: the "
                           f"{len(worst)} misclassified images with the highest loss "
                           f"(of {len(result['misclassified'])})")


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


def read_grey(path) -> np.ndarray:
    """A PNG/JPEG file as one uint8 (H, W) greyscale image at its own size."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            return np.asarray(img.convert("L"), dtype=np.uint8)
    except FileNotFoundError:
        raise FileNotFoundError(f"image file not found: {path}") from None
    except (UnidentifiedImageError, OSError) as e:
        raise ValueError(f"cannot read {path} as an image (PNG or JPEG expected): {e}") from None


def uses_mnist_style(meta: dict, preprocess=None) -> bool:
    """Whether predict feeds the net MNIST-style images (preprocess.mnist_style): by default for
    models trained on MNIST; preprocess=True asks for it (greyscale 28x28 models only)."""
    shape = tuple(meta["input_shape"])
    if preprocess is None:
        return meta.get("dataset") in MNIST_STYLE_DATASETS and shape == (1, MNIST_SIZE, MNIST_SIZE)
    if preprocess and shape != (1, MNIST_SIZE, MNIST_SIZE):
        raise ValueError(f"MNIST-style preprocessing makes 28x28 greyscale digits, but this model "
                         f"takes {shape} (C, H, W) images; predict without it")
    return bool(preprocess)


def prepare_images(files, meta: dict, invert="auto", preprocess=None) -> np.ndarray:
    """The image files as the model sees them: uint8 (N, C, H, W) of the model's input shape,
    MNIST-style when `uses_mnist_style(meta, preprocess)`, else resized (and, for greyscale
    models, inverted as load_image does)."""
    c, h, _ = meta["input_shape"]
    if not uses_mnist_style(meta, preprocess):
        return np.stack([load_image(f, c, h, invert) for f in files])
    flag = {"auto": "auto", "yes": True, "no": False}.get(invert, invert)
    out = []
    for f in files:
        try:
            out.append(mnist_style(read_grey(f), invert=flag)[None])
        except ValueError as e:
            raise ValueError(f"{f}: {e}") from None
    return np.stack(out)


def _load_for_inference(path, tta_flip, tta_shift):
    """The saved model, its metadata, and the test-time views of its recipe (flip, shift,
    translate) unless tta_flip / tta_shift say otherwise."""
    model, meta = checkpoint.load_model(locate_weights(path))
    translate = saved_tta_translate(meta, tta_flip, tta_shift)
    tta_flip, tta_shift = saved_tta(meta, tta_flip, tta_shift)
    return model, meta, tta_flip, tta_shift, translate


def _normalised(images: np.ndarray, meta: dict) -> np.ndarray:
    c = images.shape[1]
    mean = np.asarray(meta["mean"], np.float32).reshape(1, c, 1, 1)
    std = np.asarray(meta["std"], np.float32).reshape(1, c, 1, 1)
    return (images.astype(np.float32) / 255.0 - mean) / std


def predict_files(path, files, top_k=3, invert="auto", tta_flip=None, tta_shift=None,
                  preprocess=None, show=None) -> list[dict]:
    """Class probabilities for each image file, with the top_k classes; the logits are those
    of the recipe's test-time augmentation unless tta_flip / tta_shift say otherwise.
    preprocess: None (MNIST-style for MNIST models, see uses_mnist_style), True or False.
    show: a PNG path to write each image beside what the net saw, captioned with its prediction."""
    model, meta, tta_flip, tta_shift, translate = _load_for_inference(path, tta_flip, tta_shift)
    c, _, _ = meta["input_shape"]
    seen = prepare_images(files, meta, invert, preprocess)
    batch = seen.astype(np.float32) / 255.0
    mean = np.asarray(meta["mean"], np.float32).reshape(1, c, 1, 1)
    std = np.asarray(meta["std"], np.float32).reshape(1, c, 1, 1)
    model.eval()
    with no_grad():
        logits = averaged_logits(model, batch, mean, std, tta_flip, tta_shift, translate)
        probs = F.softmax(Tensor(logits), axis=1).data
    classes = meta.get("class_names") or [str(i) for i in range(meta["num_classes"])]
    out = []
    for f, p in zip(files, probs):
        order = np.argsort(-p)[:top_k]
        out.append({"file": str(f), "prediction": classes[order[0]],
                    "top": [(classes[i], float(p[i])) for i in order],
                    "probabilities": {classes[i]: float(p[i]) for i in range(len(classes))},
                    "mnist_style": uses_mnist_style(meta, preprocess)})
    if show is not None:
        plot_seen(files, seen, out, show)
    return out


def plot_seen(files, seen: np.ndarray, predictions: list[dict], path=None):
    """Each file as it is (resized for the page) beside the image the net saw, captioned with
    the prediction; returns the Figure."""
    from .inspect_plots import plot_image_grid

    c, h, w = seen.shape[1:]
    tiles, captions = [], []
    for f, s, r in zip(files, seen, predictions):
        tiles += [load_image(f, c, h, invert=False), s]
        name = Path(f).name
        captions += [name if len(name) <= 14 else name[:13] + "…", f"saw -> {r['prediction']}"]
    return plot_image_grid(np.stack(tiles), captions, path, columns=min(8, len(tiles)),
                           title="each file, and what the net saw with its prediction")


def inspect_files(path, files, out_dir, target=None, invert="auto", preprocess=None) -> list[Path]:
    """For each image file, PNGs of what the net does with it, in out_dir: <stem>-maps.png (every
    conv layer's feature maps), <stem>-gradcam.png (Grad-CAM over the image for the predicted
    class, or `target`, a class name or index), and filters.png (the first conv's filters).
    Returns the paths written."""
    from .inspect import feature_maps, first_conv_filters, grad_cam
    from .inspect_plots import plot_feature_maps, plot_filters, plot_grad_cam

    model, meta = checkpoint.load_model(locate_weights(path))
    classes = meta.get("class_names") or [str(i) for i in range(meta["num_classes"])]
    target_index = None if target is None else class_index(target, classes)
    seen = prepare_images(files, meta, invert, preprocess)
    x = _normalised(seen, meta)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    name, weights = first_conv_filters(model)
    written = [out / "filters.png"]
    plot_filters(weights, written[0], title=f"{meta['model']}: first conv layer ({name}), "
                                           f"{len(weights)} filters")
    maps = feature_maps(model, x)
    cams, chosen = grad_cam(model, x, target_index)
    model.eval()
    with no_grad():
        probs = F.softmax(model(Tensor(x)), axis=1).data
    for i, f in enumerate(files):
        stem = _unique_stem(Path(f), i, files)
        predicted = int(probs[i].argmax())
        caption = (f"{Path(f).name}: predicted {classes[predicted]} ({probs[i, predicted]:.3f})")
        maps_path, cam_path = out / f"{stem}-maps.png", out / f"{stem}-gradcam.png"
        plot_feature_maps([(n, m[i]) for n, m in maps], seen[i], maps_path, title=caption)
        plot_grad_cam(seen[i], cams[i], cam_path,
                      title=f"{caption}; Grad-CAM for class {classes[chosen[i]]}")
        written += [maps_path, cam_path]
    return written


def class_index(target, classes: list[str]) -> int:
    """A class given by name or by index, as its index."""
    if str(target) in classes:
        return classes.index(str(target))
    try:
        index = int(target)
    except (TypeError, ValueError):
        index = -1
    if not 0 <= index < len(classes):
        raise ValueError(f"unknown class {target!r}; the model's classes are {', '.join(classes)} "
                         f"(or their indices 0 .. {len(classes) - 1})")
    return index


def _unique_stem(path: Path, i: int, files) -> str:
    stems = [Path(f).stem for f in files]
    return path.stem if stems.count(path.stem) == 1 else f"{path.stem}-{i}"
