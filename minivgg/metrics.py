"""Per-class precision, recall and F1 from a confusion matrix (scikit-learn's
classification_report, without the dependency)."""
from __future__ import annotations

import numpy as np


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
