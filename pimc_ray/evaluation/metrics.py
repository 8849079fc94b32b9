"""Scores of the downstream tasks: RMSE per index, and the confusion-matrix scores of classification.

All take and return NumPy. Classes are ids ``0..n_classes-1``; the confusion matrix has true classes on rows
and predicted classes on columns.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "class_accuracy",
    "class_iou",
    "confusion_matrix",
    "mean_iou",
    "overall_accuracy",
    "rmse_per_channel",
]


def rmse_per_channel(prediction: np.ndarray, target: np.ndarray) -> np.ndarray:
    """``(C,)`` root-mean-square error per channel of ``(N, C, H)`` arrays, over pixels and horizon steps."""
    if prediction.shape != target.shape or prediction.ndim != 3:
        raise ValueError(
            f"expected two (N, C, H) arrays of one shape, got {prediction.shape} and {target.shape}"
        )
    diff = prediction.astype(np.float64) - target.astype(np.float64)
    return np.sqrt(np.mean(diff * diff, axis=(0, 2)))


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> np.ndarray:
    """``(n_classes, n_classes)`` int64 counts: entry ``[t, p]`` counts pixels of class ``t`` predicted ``p``."""
    y_true = np.asarray(y_true, dtype=np.int64)
    y_pred = np.asarray(y_pred, dtype=np.int64)
    if y_true.shape != y_pred.shape:
        raise ValueError(f"y_true and y_pred differ in shape: {y_true.shape} and {y_pred.shape}")
    for name, y in (("y_true", y_true), ("y_pred", y_pred)):
        if y.size and (y.min() < 0 or y.max() >= n_classes):
            raise ValueError(f"{name} holds ids outside 0..{n_classes - 1}")
    return np.bincount(y_true * n_classes + y_pred, minlength=n_classes * n_classes).reshape(
        n_classes, n_classes
    )


def overall_accuracy(cm: np.ndarray) -> float:
    """Share of correctly classified samples (NaN for an empty matrix)."""
    total = cm.sum()
    return float(np.trace(cm) / total) if total else float("nan")


def class_iou(cm: np.ndarray) -> np.ndarray:
    """``(n_classes,)`` intersection over union ``TP / (TP + FP + FN)`` per class; NaN for a class that is
    neither in the truth nor in the predictions."""
    tp = np.diag(cm).astype(np.float64)
    union = cm.sum(axis=0) + cm.sum(axis=1) - tp
    return np.divide(tp, union, out=np.full_like(tp, np.nan), where=union > 0)


def mean_iou(cm: np.ndarray) -> float:
    """Mean of :func:`class_iou` over the classes that are in the truth or the predictions."""
    iou = class_iou(cm)
    return float(np.nanmean(iou)) if np.isfinite(iou).any() else float("nan")


def class_accuracy(cm: np.ndarray) -> np.ndarray:
    """``(n_classes,)`` share of each class's samples classified correctly (its recall); NaN for an absent class."""
    tp = np.diag(cm).astype(np.float64)
    count = cm.sum(axis=1).astype(np.float64)
    return np.divide(tp, count, out=np.full_like(tp, np.nan), where=count > 0)
