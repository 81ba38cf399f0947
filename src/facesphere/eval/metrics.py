"""Verification metrics (k-fold accuracy, ROC, AUC, EER, TAR at fixed FAR) and detection
average precision (:func:`detection_ap`)."""

from __future__ import annotations

import math
from collections.abc import Sequence
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


# -- detection ---------------------------------------------------------------------------------

# Face-height buckets of :func:`detection_ap`, in pixels: [low, high), the low end included.
HEIGHT_BUCKETS: dict[str, tuple[float, float]] = {
    "<16": (0.0, 16.0),
    "16-32": (16.0, 32.0),
    "32-64": (32.0, 64.0),
    ">=64": (64.0, math.inf),
}


@dataclass
class DetectionAP:
    """Average precision of a detector on a set of images, with the counts behind it.

    `positives` is the number of ground-truth boxes that count (not ignored); `ap` is NaN when
    there are none. `ignored` counts the detections that were neither true nor false positives.
    """

    ap: float
    positives: int
    true_positives: int
    false_positives: int
    ignored: int


def _box_heights(boxes: np.ndarray) -> np.ndarray:
    return boxes[:, 3] - boxes[:, 1]


def _match_image(
    boxes: np.ndarray,
    scores: np.ndarray,
    truth: np.ndarray,
    ignore: np.ndarray,
    iou_threshold: float,
    low: float,
    high: float,
) -> np.ndarray:
    """The outcome of each detection of one image: 1 true positive, 0 false positive,
    -1 ignored (see :func:`detection_ap` for the rules)."""
    # the one IoU of the package; imported here so verification metrics stay light to import
    from facesphere.video.tracker import iou_matrix

    outcome = np.zeros(len(boxes), np.int8)
    if len(boxes) == 0:
        return outcome
    ious = iou_matrix(boxes, truth) if len(truth) else np.zeros((len(boxes), 0))
    taken = np.zeros(len(truth), bool)
    heights = _box_heights(boxes)
    for d in np.argsort(-scores, kind="stable"):
        reachable = (ious[d] >= iou_threshold) & ~taken
        chosen = -1
        for pool in (reachable & ~ignore, reachable & ignore):  # a counted box first
            if pool.any():
                chosen = int(np.argmax(np.where(pool, ious[d], -1.0)))
                break
        if chosen >= 0:
            taken[chosen] = True
            outcome[d] = -1 if ignore[chosen] else 1
        elif not low <= heights[d] < high:
            outcome[d] = -1
    return outcome


def detection_ap(
    found: Sequence[tuple[np.ndarray, np.ndarray]],
    truth: Sequence[np.ndarray],
    ignore: Sequence[np.ndarray] | None = None,
    iou_threshold: float = 0.5,
    height_range: tuple[float, float] | None = None,
) -> DetectionAP:
    """Average precision of detections against ground-truth boxes, VOC style.

    `found` holds per image the detections as (boxes (D, 4), scores (D,)); `truth` the ground
    truth boxes (N, 4) of the same image and `ignore` (optional) a boolean (N,) flag per box.
    Boxes are (x1, y1, x2, y2) in pixels.

    Rules: within an image, detections are taken by decreasing score and each is matched to
    the still unmatched ground-truth box of highest IoU among those with IoU >= `iou_threshold`;
    boxes that count are preferred to ignored ones (as COCO does). A detection matched to a
    counted box is a true positive, one matched to an ignored box is ignored (neither true nor
    false positive), one left unmatched is a false positive. Ignored boxes are not positives.
    Over all images, detections are ranked by score (ties keep their order) and the AP is the
    area under the precision-recall curve with all-point interpolation (precision at each
    recall replaced by the best precision at that recall or higher, as in VOC 2010 and later).

    `height_range` (low, high) restricts the score to faces whose ground-truth box height h
    satisfies low <= h < high (see HEIGHT_BUCKETS): boxes outside become ignored, and a
    detection left unmatched whose own box height lies outside the range is ignored too
    instead of counting as a false positive (COCO's area-range convention, by height).
    """
    if len(found) != len(truth):
        raise ValueError(f"{len(found)} images of detections against {len(truth)} of truth")
    if ignore is not None and len(ignore) != len(truth):
        raise ValueError(f"{len(ignore)} ignore flags lists against {len(truth)} images")
    low, high = height_range if height_range is not None else (-math.inf, math.inf)
    positives = 0
    all_scores: list[np.ndarray] = []
    outcomes: list[np.ndarray] = []
    for index, (boxes, scores) in enumerate(found):
        boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
        scores = np.asarray(scores, np.float64).reshape(-1)
        gt = np.asarray(truth[index], np.float64).reshape(-1, 4)
        flags = np.zeros(len(gt), bool)
        if ignore is not None:
            flags = np.asarray(ignore[index], bool).reshape(-1).copy()
            if len(flags) != len(gt):
                raise ValueError(f"image {index}: {len(flags)} ignore flags for {len(gt)} boxes")
        heights = _box_heights(gt)
        flags |= (heights < low) | (heights >= high)
        positives += int((~flags).sum())
        all_scores.append(scores)
        outcomes.append(_match_image(boxes, scores, gt, flags, iou_threshold, low, high))
    score = np.concatenate(all_scores) if all_scores else np.zeros(0)
    outcome = np.concatenate(outcomes) if outcomes else np.zeros(0, np.int8)
    outcome = outcome[np.argsort(-score, kind="stable")]
    ignored = int((outcome == -1).sum())
    outcome = outcome[outcome >= 0]
    tp = int(outcome.sum())
    fp = len(outcome) - tp
    if positives == 0:
        return DetectionAP(math.nan, 0, tp, fp, ignored)
    cum_tp = np.cumsum(outcome)
    precision = cum_tp / np.arange(1, len(outcome) + 1)
    best_after = np.maximum.accumulate(precision[::-1])[::-1]
    ap = float(best_after[outcome == 1].sum() / positives)
    return DetectionAP(ap, positives, tp, fp, ignored)
