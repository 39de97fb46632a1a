"""The confusion matrix, and per-class precision, recall and F1 from it (scikit-learn's
confusion_matrix and classification_report, without the dependency)."""
from __future__ import annotations

import numpy as np

from .autograd import Tensor


def _labels_array(labels, name: str) -> np.ndarray:
    array = np.asarray(labels.data if isinstance(labels, Tensor) else labels)
    if array.ndim != 1:
        raise ValueError(f"confusion_matrix: {name} must be 1-D class indices, got shape "
                         f"{array.shape}; for logits pass logits.argmax(axis=1)")
    if array.size and not np.issubdtype(array.dtype, np.integer):
        raise ValueError(f"confusion_matrix: {name} must hold integer class indices, got "
                         f"dtype {array.dtype}")
    return array.astype(np.int64, copy=False)


def confusion_matrix(y_true, y_pred, num_classes: int) -> np.ndarray:
    """Counts[t, p] = how many samples of true class t were predicted as p; int64 (K, K)."""
    if not isinstance(num_classes, (int, np.integer)) or num_classes < 1:
        raise ValueError(f"confusion_matrix: num_classes must be a positive int, got {num_classes!r}")
    y_true = _labels_array(y_true, "y_true")
    y_pred = _labels_array(y_pred, "y_pred")
    if y_true.shape != y_pred.shape:
        raise ValueError(f"confusion_matrix: y_true and y_pred differ in length "
                         f"({len(y_true)} vs {len(y_pred)})")
    for name, array in (("y_true", y_true), ("y_pred", y_pred)):
        bad = np.flatnonzero((array < 0) | (array >= num_classes))
        if bad.size:
            raise ValueError(f"confusion_matrix: {name}[{bad[0]}] = {array[bad[0]]} is outside "
                             f"[0, {num_classes}) ({bad.size} such labels); check num_classes")
    flat = np.bincount(y_true * num_classes + y_pred, minlength=num_classes * num_classes)
    return flat.reshape(num_classes, num_classes).astype(np.int64, copy=False)


def per_class_scores(matrix, class_names) -> list[dict]:
    """For each class: precision (of the images predicted as it, the fraction that are it),
    recall (of its images, the fraction predicted as it), F1 (their harmonic mean) and support
    (its image count). A ratio with nothing to divide by is 0, as scikit-learn's zero_division=0.
    `matrix` is a confusion matrix, rows true, columns predicted."""
    counts = np.asarray(matrix, np.int64)
    if counts.ndim != 2 or counts.shape[0] != counts.shape[1] or len(class_names) != len(counts):
        raise ValueError(f"per_class_scores: expected a square confusion matrix with one row per "
                         f"class name; got shape {counts.shape} and {len(class_names)} names")
    hits = np.diag(counts).astype(np.float64)
    predicted, actual = counts.sum(axis=0), counts.sum(axis=1)
    precision = np.divide(hits, predicted, out=np.zeros_like(hits), where=predicted > 0)
    recall = np.divide(hits, actual, out=np.zeros_like(hits), where=actual > 0)
    both = precision + recall
    f1 = np.divide(2 * precision * recall, both, out=np.zeros_like(hits), where=both > 0)
    return [{"class": str(name), "precision": float(p), "recall": float(r), "f1": float(f),
             "support": int(n)}
            for name, p, r, f, n in zip(class_names, precision, recall, f1, actual)]


def macro_average(scores: list[dict]) -> dict:
    """The unweighted mean of each score over the classes."""
    return {key: float(np.mean([s[key] for s in scores])) for key in ("precision", "recall", "f1")}


def format_scores(scores: list[dict]) -> str:
    """The scores as a plain-text table, with the macro average as its last row."""
    width = max(len("macro avg"), *(len(s["class"]) for s in scores))
    lines = [f"  {'class':<{width}}  precision  recall      f1  support"]
    for s in scores:
        lines.append(f"  {s['class']:<{width}}  {s['precision']:9.4f}  {s['recall']:6.4f}  "
                     f"{s['f1']:6.4f}  {s['support']:7,d}")
    avg = macro_average(scores)
    total = sum(s["support"] for s in scores)
    lines.append(f"  {'macro avg':<{width}}  {avg['precision']:9.4f}  {avg['recall']:6.4f}  "
                 f"{avg['f1']:6.4f}  {total:7,d}")
    return "\n".join(lines)
