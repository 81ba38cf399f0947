"""Multi-face tracking by box overlap and embedding similarity, with smoothed identities.

Each detection round, live tracks and new detections are paired by the Hungarian method on
a combined affinity ``iou_weight * IoU + (1 - iou_weight) * appearance``, where appearance
rescales the cosine similarity of the track's running embedding and the detection's embedding
from ``[similarity_floor, 1]`` to ``[0, 1]``. Unpaired detections start tracks; a track unseen
for more than `max_missed` rounds ends. Each track smooths its per-subject identity scores
with a sliding maximum over its last `window` observations, so that one bad frame does not
change its name.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.optimize import linear_sum_assignment

from facesphere.video.sliding_max import SlidingMax

Match = tuple[str, float]


@dataclass
class Detection:
    """One face found in a frame: box (x1, y1, x2, y2), optional unit embedding and the
    gallery's best (subject, score) matches for it."""

    box: np.ndarray
    score: float = 1.0
    embedding: np.ndarray | None = None
    matches: Sequence[Match] = ()

    def __post_init__(self) -> None:
        self.box = np.asarray(self.box, dtype=np.float32).reshape(4)
        if self.embedding is not None:
            self.embedding = np.asarray(self.embedding, dtype=np.float32).reshape(-1)


@dataclass
class TrackEvent:
    """Something that happened to a track: `appear`, `leave` or `identity` (a name change)."""

    kind: str
    track: int
    frame: int
    time: float
    box: np.ndarray
    identity: str | None
    score: float | None
    previous: str | None = None
    frames_seen: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        data: dict[str, Any] = {
            "event": self.kind,
            "track": self.track,
            "frame": self.frame,
            "time": round(float(self.time), 4),
            "box": [round(float(v), 1) for v in self.box],
            "identity": self.identity,
            "score": None if self.score is None else round(float(self.score), 4),
        }
        if self.kind == "identity":
            data["previous"] = self.previous
        if self.frames_seen is not None:
            data["frames_seen"] = self.frames_seen
        return data


class IdentitySmoother:
    """Per-subject sliding maxima of identity scores over the last `window` observations.

    A subject absent from one observation's matches counts as ``-inf`` there; subjects absent
    from the whole window are forgotten. The identity is the subject with the highest smoothed
    score when that score reaches `threshold`, else None (unknown).
    """

    def __init__(self, window: int, threshold: float) -> None:
        if window < 1:
            raise ValueError(f"window must be >= 1, got {window}")
        self.window = window
        self.threshold = threshold
        self._maxima: dict[str, SlidingMax] = {}
        self.scores: dict[str, float] = {}

    def update(self, matches: Iterable[Match]) -> tuple[str | None, float | None]:
        """Take one observation's (subject, score) matches; return (identity, its score)."""
        current: dict[str, float] = {}
        for subject, score in matches:
            value = float(score)
            if subject not in current or value > current[subject]:
                current[subject] = value
        for subject in current:
            if subject not in self._maxima:
                self._maxima[subject] = SlidingMax(self.window)
        smoothed: dict[str, float] = {}
        for subject, maxima in list(self._maxima.items()):
            value = maxima.push(current.get(subject, -math.inf))
            if value == -math.inf:
                del self._maxima[subject]
            else:
                smoothed[subject] = value
        self.scores = smoothed
        return self.best()

    def best(self) -> tuple[str | None, float | None]:
        """(identity or None, best smoothed score or None when no subject is known)."""
        if not self.scores:
            return None, None
        subject = min(self.scores, key=lambda s: (-self.scores[s], s))
        score = self.scores[subject]
        return (subject if score >= self.threshold else None), score


@dataclass
class Track:
    """A face followed across frames."""

    id: int
    box: np.ndarray
    first_frame: int
    last_frame: int
    first_time: float
    last_time: float
    smoother: IdentitySmoother
    embedding: np.ndarray | None = None
    missed: int = 0
    hits: int = 1
    identity: str | None = None
    identity_score: float | None = None
    identities_seen: set[str] = field(default_factory=set)

    @property
    def visible(self) -> bool:
        """Whether the track was seen in the latest detection round."""
        return self.missed == 0


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Intersection over union of every box of `a` (N, 4) with every box of `b` (M, 4)."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    x1 = np.maximum(a[:, None, 0], b[None, :, 0])
    y1 = np.maximum(a[:, None, 1], b[None, :, 1])
    x2 = np.minimum(a[:, None, 2], b[None, :, 2])
    y2 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area_a = np.clip(a[:, 2] - a[:, 0], 0, None) * np.clip(a[:, 3] - a[:, 1], 0, None)
    area_b = np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)


@dataclass
class TrackerConfig:
    """Association and smoothing settings of a `Tracker`.

    iou_weight: share of IoU in the affinity (the rest is appearance);
    similarity_floor: cosine similarity at which appearance counts 0 (1 at cosine 1);
    min_iou: least overlap for a pairing on position, unless cosine >= rejoin_similarity;
    min_similarity: pairs below this cosine never join when both have embeddings;
    min_affinity: least combined affinity of a pairing;
    max_missed: detection rounds a track may go unseen before it ends;
    window: observations in the identity smoothing window;
    threshold: smoothed score needed to name a track;
    embedding_momentum: weight of the old running embedding in each update.
    """

    iou_weight: float = 0.5
    similarity_floor: float = 0.75
    min_iou: float = 0.1
    rejoin_similarity: float = 0.95
    min_similarity: float = 0.7
    min_affinity: float = 0.2
    max_missed: int = 5
    window: int = 5
    threshold: float = 0.9
    embedding_momentum: float = 0.7

    def __post_init__(self) -> None:
        if not 0.0 <= self.iou_weight <= 1.0:
            raise ValueError(f"iou_weight must be in [0, 1], got {self.iou_weight}")
        if not self.similarity_floor < 1.0:
            raise ValueError(f"similarity_floor must be < 1, got {self.similarity_floor}")
        if self.max_missed < 0:
            raise ValueError(f"max_missed must be >= 0, got {self.max_missed}")
        if self.window < 1:
            raise ValueError(f"window must be >= 1, got {self.window}")
        if not 0.0 <= self.embedding_momentum < 1.0:
            raise ValueError(f"embedding_momentum must be in [0, 1), got {self.embedding_momentum}")


class Tracker:
    """Follows faces over detection rounds; `update` returns the round's events."""

    def __init__(self, config: TrackerConfig | None = None, **overrides: Any) -> None:
        base = config or TrackerConfig()
        if overrides:
            base = TrackerConfig(**{**base.__dict__, **overrides})
        self.config = base
        self.tracks: list[Track] = []
        self.finished: list[Track] = []
        self._next_id = 1

    @property
    def all_tracks(self) -> list[Track]:
        """Finished and live tracks, by id."""
        return sorted(self.finished + self.tracks, key=lambda t: t.id)

    def affinity(self, detections: Sequence[Detection]) -> np.ndarray:
        """Affinity (tracks x detections) of live tracks and `detections`; -inf: not allowed."""
        cfg = self.config
        n, m = len(self.tracks), len(detections)
        if n == 0 or m == 0:
            return np.zeros((n, m))
        ious = iou_matrix(
            np.stack([t.box for t in self.tracks]), np.stack([d.box for d in detections])
        )
        result = np.full((n, m), -np.inf)
        for i, track in enumerate(self.tracks):
            for j, det in enumerate(detections):
                iou = ious[i, j]
                if track.embedding is None or det.embedding is None:
                    score = iou
                    allowed = iou >= cfg.min_iou
                else:
                    cosine = float(track.embedding @ det.embedding)
                    appearance = (cosine - cfg.similarity_floor) / (1.0 - cfg.similarity_floor)
                    appearance = min(1.0, max(0.0, appearance))
                    score = cfg.iou_weight * iou + (1.0 - cfg.iou_weight) * appearance
                    allowed = cosine >= cfg.min_similarity and (
                        iou >= cfg.min_iou or cosine >= cfg.rejoin_similarity
                    )
                if allowed and score >= cfg.min_affinity:
                    result[i, j] = score
        return result

    def update(
        self, detections: Sequence[Detection], frame: int, time: float = 0.0
    ) -> list[TrackEvent]:
        """Take one detection round at `frame` (`time` seconds); return the events it caused."""
        cfg = self.config
        events: list[TrackEvent] = []
        scores = self.affinity(detections)
        pairs: list[tuple[int, int]] = []
        if scores.size:
            finite = np.isfinite(scores)
            cost = np.where(finite, 1.0 - scores, 1e6)
            rows, cols = linear_sum_assignment(cost)
            pairs = [(int(i), int(j)) for i, j in zip(rows, cols) if finite[i, j]]
        matched_tracks = {i for i, _ in pairs}
        matched_dets = {j for _, j in pairs}
        for i, j in pairs:
            event = self._observe(self.tracks[i], detections[j], frame, time)
            if event is not None:
                events.append(event)
        for i, track in enumerate(self.tracks):
            if i not in matched_tracks:
                track.missed += 1
        for j, det in enumerate(detections):
            if j not in matched_dets:
                track = self._start(det, frame, time)
                events.append(
                    TrackEvent(
                        "appear",
                        track.id,
                        frame,
                        time,
                        track.box.copy(),
                        track.identity,
                        track.identity_score,
                    )
                )
        alive = []
        for track in self.tracks:
            if track.missed > cfg.max_missed:
                events.append(self._leave_event(track))
                self.finished.append(track)
            else:
                alive.append(track)
        self.tracks = alive
        return events

    def finish(self) -> list[TrackEvent]:
        """End every live track (the video is over); return their `leave` events."""
        events = [self._leave_event(track) for track in self.tracks]
        self.finished.extend(self.tracks)
        self.tracks = []
        return events

    def _leave_event(self, track: Track) -> TrackEvent:
        return TrackEvent(
            "leave",
            track.id,
            track.last_frame,
            track.last_time,
            track.box.copy(),
            track.identity,
            track.identity_score,
            frames_seen=track.hits,
        )

    def _start(self, det: Detection, frame: int, time: float) -> Track:
        track = Track(
            id=self._next_id,
            box=det.box.copy(),
            first_frame=frame,
            last_frame=frame,
            first_time=time,
            last_time=time,
            smoother=IdentitySmoother(self.config.window, self.config.threshold),
            embedding=None if det.embedding is None else det.embedding.copy(),
        )
        self._next_id += 1
        track.identity, track.identity_score = track.smoother.update(det.matches)
        if track.identity is not None:
            track.identities_seen.add(track.identity)
        self.tracks.append(track)
        return track

    def _observe(self, track: Track, det: Detection, frame: int, time: float) -> TrackEvent | None:
        track.box = det.box.copy()
        track.last_frame = frame
        track.last_time = time
        track.missed = 0
        track.hits += 1
        if det.embedding is not None:
            if track.embedding is None:
                track.embedding = det.embedding.copy()
            else:
                m = self.config.embedding_momentum
                mixed = m * track.embedding + (1.0 - m) * det.embedding
                norm = float(np.linalg.norm(mixed))
                track.embedding = mixed / norm if norm > 0 else det.embedding.copy()
        previous = track.identity
        track.identity, track.identity_score = track.smoother.update(det.matches)
        if track.identity is not None:
            track.identities_seen.add(track.identity)
        if track.identity != previous:
            return TrackEvent(
                "identity",
                track.id,
                frame,
                time,
                track.box.copy(),
                track.identity,
                track.identity_score,
                previous=previous,
            )
        return None
