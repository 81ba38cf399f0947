"""Calibrating decision thresholds on development data: operating points at given false-accept
rates, fusion weights, and the measured false-positive identification rate of a threshold.

Scores are cosine similarities of every pair of a labelled set (celeba299 for the shipped
cards): pairs of one person are genuine, pairs of two people impostor.
"""

from __future__ import annotations

import numpy as np

from facesphere.cards import OperatingPoint
from facesphere.errors import DataError

# The FARs calibrated for every shipped recognizer: 1e-1 down to 1e-6 in half decades.
CALIBRATED_FARS = (1e-1, 3e-2, 1e-2, 3e-3, 1e-3, 3e-4, 1e-4, 3e-5, 1e-5, 3e-6, 1e-6)


def pair_scores(
    similarity: np.ndarray, labels: np.ndarray, ignore: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(genuine, impostor) scores of every unordered pair of a square `similarity` matrix
    whose rows carry `labels`, leaving out the pairs marked in the boolean matrix `ignore`."""
    similarity, labels = np.asarray(similarity), np.asarray(labels)
    if similarity.ndim != 2 or similarity.shape != (len(labels), len(labels)):
        raise DataError(f"need an N x N similarity matrix for {len(labels)} labels")
    rows, cols = np.triu_indices(len(labels), 1)
    if ignore is not None:
        kept = ~np.asarray(ignore)[rows, cols]
        rows, cols = rows[kept], cols[kept]
    same = labels[rows] == labels[cols]
    scores = similarity[rows, cols]
    return scores[same], scores[~same]


def labelling_errors(duplicates: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """The pairs a calibration should leave out: photos marked as copies of one picture in the
    boolean matrix `duplicates` (a copy is no test of recognition), and every pair between two
    identities that share such a copy (the same person filed under two labels)."""
    duplicates, labels = np.asarray(duplicates, bool), np.asarray(labels)
    duplicates = duplicates & ~np.eye(len(labels), dtype=bool)
    a, b = np.nonzero(duplicates)
    confused = np.zeros((labels.max() + 1,) * 2, bool)
    confused[labels[a], labels[b]] = labels[a] != labels[b]
    return duplicates | confused[labels[:, None], labels[None, :]]


def threshold_at_far(impostor: np.ndarray, far: float) -> float:
    """The cosine threshold (decision: score >= threshold) accepting a share `far` of the
    `impostor` scores: half-way between the k-th and (k+1)-th highest, k = floor(far * n)."""
    impostor = np.asarray(impostor, np.float64).ravel()
    n = len(impostor)
    if not 0.0 < far < 1.0 or n == 0:
        raise DataError(f"need impostor scores and 0 < FAR < 1, got {n} and {far:g}")
    accepted = int(np.floor(far * n))
    if accepted == 0:
        return float(impostor.max()) + 1e-6
    # ascending order: the k-th highest sits at n - k
    lower, upper = np.partition(impostor, [n - accepted - 1, n - accepted])[
        [n - accepted - 1, n - accepted]
    ]
    return float((lower + upper) / 2.0)


def operating_points(
    genuine: np.ndarray, impostor: np.ndarray, fars: tuple[float, ...] = CALIBRATED_FARS
) -> tuple[OperatingPoint, ...]:
    """The threshold at each FAR (highest FAR first, rounded to 4 decimals) with the FRR of the
    `genuine` scores there; DataError when there are too few impostor pairs to measure the
    lowest FAR."""
    genuine, impostor = np.asarray(genuine), np.asarray(impostor)
    if min(fars) * len(impostor) < 1:
        raise DataError(f"{len(impostor)} impostor pairs cannot measure a FAR of {min(fars):g}")
    points = []
    for far in sorted(fars, reverse=True):
        threshold = round(threshold_at_far(impostor, far), 4)  # as the card keeps it
        points.append(OperatingPoint(far, threshold, round(float(np.mean(genuine < threshold)), 4)))
    return tuple(points)


def frr_at_far(genuine: np.ndarray, impostor: np.ndarray, far: float) -> float:
    """The share of genuine scores below the threshold that accepts `far` of the impostors."""
    return float(np.mean(np.asarray(genuine) < threshold_at_far(impostor, far)))


def choose_fusion_weight(
    first: np.ndarray,
    second: np.ndarray,
    labels: np.ndarray,
    fars: tuple[float, ...] = (1e-3, 1e-4),
    step: float = 0.05,
    ignore: np.ndarray | None = None,
) -> tuple[float, dict[float, float]]:
    """The weight w of the first recognizer (1 - w for the second) whose fused similarity
    w * first + (1 - w) * second has the lowest mean FRR at `fars`; also every weight tried
    with its mean FRR. `first` and `second` are N x N similarity matrices of one labelled set
    (pairs marked in `ignore` left out)."""
    tried: dict[float, float] = {}
    for weight in np.round(np.arange(0.0, 1.0 + step / 2, step), 6):
        fused = weight * np.asarray(first) + (1.0 - weight) * np.asarray(second)
        genuine, impostor = pair_scores(fused, labels, ignore)
        tried[float(weight)] = float(np.mean([frr_at_far(genuine, impostor, f) for f in fars]))
    best = min(tried, key=lambda w: (tried[w], abs(w - 0.5)))
    return best, tried


def measured_fpir(
    gallery: np.ndarray,
    strangers: np.ndarray,
    threshold: float,
    ignore: np.ndarray | None = None,
) -> tuple[float, int]:
    """The share of `strangers` (embeddings of people not in the gallery) whose best score
    against the `gallery` embeddings is at or above `threshold` (comparisons marked in the
    strangers x gallery boolean matrix `ignore` left out), and how many strangers."""
    scores = np.asarray(strangers) @ np.asarray(gallery).T
    if ignore is not None:
        scores = np.where(ignore, -np.inf, scores)
    best = scores.max(axis=1)
    return float(np.mean(best >= threshold)), len(best)
