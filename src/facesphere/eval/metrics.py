"""Verification metrics: k-fold accuracy, ROC, AUC, EER and TAR at fixed FAR."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class RocCurve:
    """False-accept and true-accept rates for thresholds in decreasing order."""

    far: np.ndarray
    tar: np.ndarray
    thresholds: np.ndarray


def roc_curve(scores: np.ndarray, labels: np.ndarray) -> RocCurve:
    """ROC of `scores` (higher = more alike) against boolean `labels` (True = same)."""
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels, dtype=bool)
    positives, negatives = labels.sum(), (~labels).sum()
    if positives == 0 or negatives == 0:
        raise ValueError("ROC needs both same and different pairs")
    order = np.argsort(-scores, kind="mergesort")
    sorted_scores, sorted_labels = scores[order], labels[order]
    distinct = np.r_[np.flatnonzero(np.diff(sorted_scores)), len(scores) - 1]
    tp = np.cumsum(sorted_labels)[distinct]
    fp = np.cumsum(~sorted_labels)[distinct]
    tar = np.r_[0.0, tp / positives]
    far = np.r_[0.0, fp / negatives]
    thresholds = np.r_[np.inf, sorted_scores[distinct]]
    return RocCurve(far, tar, thresholds)


def auc(curve: RocCurve) -> float:
    """Area under the ROC curve (trapezoids)."""
    return float(np.trapezoid(curve.tar, curve.far))


def eer(curve: RocCurve) -> float:
    """Equal error rate: where the false-accept rate meets the false-reject rate."""
    frr = 1.0 - curve.tar
    index = int(np.argmin(np.abs(curve.far - frr)))
    return float((curve.far[index] + frr[index]) / 2.0)


def tar_at_far(curve: RocCurve, far_target: float) -> float:
    """The highest true-accept rate whose false-accept rate is at most `far_target`."""
    allowed = curve.far <= far_target + 1e-12
    return float(curve.tar[allowed].max()) if allowed.any() else 0.0


def best_threshold(scores: np.ndarray, labels: np.ndarray) -> float:
    """The threshold (decide `same` when score >= threshold) with the highest accuracy;
    ties resolve to the midpoint between neighbouring scores."""
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels, dtype=bool)
    candidates = np.unique(scores)
    midpoints = np.r_[
        candidates[0] - 1e-6, (candidates[:-1] + candidates[1:]) / 2, candidates[-1] + 1e-6
    ]
    accuracy = [((scores >= t) == labels).mean() for t in midpoints]
    return float(midpoints[int(np.argmax(accuracy))])


@dataclass
class KFoldResult:
    """Per-fold accuracy and the threshold chosen on the other folds."""

    accuracies: np.ndarray
    thresholds: np.ndarray

    @property
    def mean(self) -> float:
        return float(self.accuracies.mean())

    @property
    def std(self) -> float:
        return float(self.accuracies.std())


def kfold_accuracy(scores: np.ndarray, labels: np.ndarray, folds: np.ndarray) -> KFoldResult:
    """For each fold, pick the best threshold on the other folds and measure accuracy on it."""
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels, dtype=bool)
    folds = np.asarray(folds)
    accuracies, thresholds = [], []
    fold_ids = np.unique(folds)
    if len(fold_ids) < 2:
        raise ValueError("k-fold accuracy needs at least two folds")
    for fold in fold_ids:
        test = folds == fold
        threshold = best_threshold(scores[~test], labels[~test])
        accuracies.append(((scores[test] >= threshold) == labels[test]).mean())
        thresholds.append(threshold)
    return KFoldResult(np.array(accuracies), np.array(thresholds))
