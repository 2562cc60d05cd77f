"""Classification metrics as pure numpy functions (no sklearn), each with its own tests.

Conventions: labels are class indices ``0..K-1``; the confusion matrix has true classes in rows and
predicted classes in columns; a metric whose denominator is zero is 0.0 (as sklearn's
``zero_division=0``), so an empty class never produces NaN in eval.json.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def _as_labels(values, name: str) -> np.ndarray:
    arr = np.asarray(values)
    if arr.ndim != 1 or (arr.size and not np.issubdtype(arr.dtype, np.integer)):
        raise ValueError(
            f"{name} must be a 1-D array of integer class indices, got dtype {arr.dtype} shape {arr.shape}"
        )
    return arr.astype(np.int64)


def confusion_matrix(y_true, y_pred, num_classes: int) -> np.ndarray:
    """``(K, K)`` int64 counts: ``[i, j]`` = samples of true class i predicted as j."""
    t, p = _as_labels(y_true, "y_true"), _as_labels(y_pred, "y_pred")
    if t.shape != p.shape:
        raise ValueError(f"y_true and y_pred differ in length: {t.shape[0]} vs {p.shape[0]}")
    bad = (t < 0) | (t >= num_classes) | (p < 0) | (p >= num_classes)
    if bad.any():
        raise ValueError(
            f"class indices must be in [0, {num_classes}); got {sorted(set(t[bad]) | set(p[bad]))[:5]}"
        )
    cm = np.zeros((num_classes, num_classes), np.int64)
    np.add.at(cm, (t, p), 1)
    return cm


def _safe_div(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    num = np.asarray(num, np.float64)
    den = np.asarray(den, np.float64)
    return np.divide(num, den, out=np.zeros_like(num), where=den > 0)


@dataclass(frozen=True)
class PerClass:
    """Per-class precision, recall, F1 (float64 arrays of length K) and support (int64)."""

    precision: np.ndarray
    recall: np.ndarray
    f1: np.ndarray
    support: np.ndarray


def per_class_metrics(cm: np.ndarray) -> PerClass:
    """Precision / recall / F1 / support of each class from a confusion matrix."""
    cm = np.asarray(cm)
    tp = np.diag(cm).astype(np.float64)
    predicted = cm.sum(axis=0)
    support = cm.sum(axis=1)
    precision = _safe_div(tp, predicted)
    recall = _safe_div(tp, support)
    f1 = _safe_div(2 * precision * recall, precision + recall)
    return PerClass(precision, recall, f1, support.astype(np.int64))


def macro_f1(cm: np.ndarray) -> float:
    """Mean F1 over the classes that occur (support > 0) or are predicted; 0.0 for an empty matrix."""
    m = per_class_metrics(cm)
    present = (m.support > 0) | (np.asarray(cm).sum(axis=0) > 0)
    return float(m.f1[present].mean()) if present.any() else 0.0


def binary_prf(positive_true, positive_pred) -> tuple[float, float, float]:
    """``(precision, recall, f1)`` of boolean predictions against boolean truth."""
    t = np.asarray(positive_true, bool)
    p = np.asarray(positive_pred, bool)
    tp = float((t & p).sum())
    precision = float(_safe_div(tp, p.sum()))
    recall = float(_safe_div(tp, t.sum()))
    f1 = float(_safe_div(2 * precision * recall, precision + recall))
    return precision, recall, f1


def precision_recall_curve(scores, positive) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(thresholds descending, precision, recall)`` of the rule ``score >= threshold``.

    One point per distinct score (ties are decided together, as they must be).
    """
    s = np.asarray(scores, np.float64)
    y = np.asarray(positive, bool)
    if s.shape != y.shape or s.ndim != 1:
        raise ValueError(f"scores and positive must be 1-D of equal length, got {s.shape} and {y.shape}")
    if np.isnan(s).any():
        raise ValueError("scores contain NaN")
    order = np.argsort(-s, kind="stable")
    s, y = s[order], y[order]
    last_of_tie = np.r_[np.flatnonzero(np.diff(s) != 0), s.size - 1] if s.size else np.array([], int)
    tp = np.cumsum(y)[last_of_tie].astype(np.float64)
    n_pred = (last_of_tie + 1).astype(np.float64)
    precision = tp / n_pred
    recall = _safe_div(tp, np.full_like(tp, y.sum()))
    return s[last_of_tie], precision, recall


def average_precision(scores, positive) -> float:
    """AP = sum_n (R_n - R_{n-1}) P_n over distinct thresholds (sklearn's definition); 0 if no positive."""
    y = np.asarray(positive, bool)
    if not y.any():
        return 0.0
    _, precision, recall = precision_recall_curve(scores, y)
    prev = np.r_[0.0, recall[:-1]]
    return float(((recall - prev) * precision).sum())


@dataclass(frozen=True)
class ThresholdChoice:
    """The accept threshold on ``p_available`` and what it gives on the evaluated set."""

    threshold: float | None  # None: the target precision is reachable by no threshold
    target_precision: float
    reached: bool
    precision: float
    recall: float
    f1: float
    accept_rate: float


def choose_threshold(scores, positive, target_precision: float) -> ThresholdChoice:
    """The lowest threshold ``t`` whose rule ``score >= t`` has precision >= ``target_precision``.

    The lowest such threshold accepts the most images (highest recall) at the required precision.
    If no threshold reaches the target, ``threshold`` is None and the other fields describe the
    most precise threshold, for the report.
    """
    if not 0.0 < target_precision <= 1.0:
        raise ValueError(f"target_precision must be in (0, 1], got {target_precision!r}")
    s = np.asarray(scores, np.float64)
    y = np.asarray(positive, bool)
    if s.size == 0:
        return ThresholdChoice(None, target_precision, False, 0.0, 0.0, 0.0, 0.0)
    thresholds, precision, _ = precision_recall_curve(s, y)
    ok = np.flatnonzero(precision >= target_precision - 1e-12)
    reached = ok.size > 0
    # Thresholds descend, so the last qualifying index is the lowest threshold.
    i = int(ok[-1]) if reached else int(np.flatnonzero(precision == precision.max())[-1])
    t = float(thresholds[i])
    p, r, f = binary_prf(y, s >= t)
    return ThresholdChoice(t if reached else None, target_precision, reached, p, r, f, float((s >= t).mean()))
