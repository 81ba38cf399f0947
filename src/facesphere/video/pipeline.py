"""Faces in a video: detect (every frame or every n-th), identify, track, annotate, report.

`process_video` reads a video with OpenCV, runs a `FaceAnalyzer` on the detection frames,
asks an optional gallery (anything with ``identify(embeddings, top_k)``) who each face is,
follows faces with a `Tracker`, and optionally writes an annotated copy of the video and the
track events as JSON lines. Between detection frames, boxes of tracks seen on both sides are
linearly interpolated; others are kept for the nearer half of the gap.
"""

from __future__ import annotations

import json
import math
import sys
import time as clock
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Protocol, runtime_checkable

import numpy as np

from facesphere.cards import Threshold
from facesphere.errors import VideoError
from facesphere.io.draw import mark_sizes
from facesphere.io.files import check_output, file_problem
from facesphere.video.tracker import Detection, Match, Tracker, TrackerConfig, TrackEvent
from facesphere.video.writer import FrameWriter, open_writer

DEFAULT_FPS = 25.0


@runtime_checkable
class Identifier(Protocol):
    """What a gallery must offer: one result per embedding row, each with `.matches`, the best
    subjects first, as (subject, score) pairs or objects with `.subject` and `.score`."""

    def identify(
        self, embeddings: np.ndarray, top_k: int = 5, threshold: float | None = None
    ) -> Sequence[Any]: ...

    def decision_threshold(
        self, threshold: float | None = None, fpir: float | None = None
    ) -> Threshold:
        """The score at which a match names a face: `threshold`, else the gallery model card's
        at `fpir`."""
        ...


def identify_matches(
    gallery: Identifier, embeddings: np.ndarray, top_k: int, threshold: float
) -> list[list[Match]]:
    """The (subject, score) matches of each embedding row, as plain lists (`threshold`: the
    naming threshold the tracker applies, passed on to the gallery)."""
    if len(embeddings) == 0:
        return []
    vectors = np.asarray(embeddings, dtype=np.float32)
    results = gallery.identify(vectors, top_k=top_k, threshold=threshold)
    out: list[list[Match]] = []
    for result in results:
        matches = result["matches"] if isinstance(result, dict) else result.matches
        out.append([_as_pair(match) for match in matches])
    if len(out) != len(embeddings):
        raise ValueError(f"gallery returned {len(out)} results for {len(embeddings)} embeddings")
    return out


def _as_pair(match: Any) -> Match:
    """(subject, score) from a pair, a mapping or an object with `.subject` and `.score`."""
    if isinstance(match, dict):
        return str(match["subject"]), float(match["score"])
    if hasattr(match, "subject") and hasattr(match, "score"):
        return str(match.subject), float(match.score)
    subject, score = match
    return str(subject), float(score)


@dataclass
class Overlay:
    """What is drawn for one track on one frame."""

    box: np.ndarray
    label: str


@dataclass
class VideoSummary:
    """What `process_video` saw: `frames` read, of the `frames_expected` the container
    declares (0: it does not say); fewer means the video is `truncated`."""

    path: str
    frames: int
    detection_frames: int
    fps: float
    width: int
    height: int
    tracks: int
    identities: dict[str, list[int]]
    unnamed_tracks: list[int]
    events: list[TrackEvent] = field(default_factory=list, repr=False)
    seconds: float = 0.0
    out: str | None = None
    events_path: str | None = None
    decided: Threshold | None = None  # the naming threshold (None without a gallery)
    frames_expected: int = 0
    codec: str | None = None  # of the annotated video (see `video.writer`)

    @property
    def truncated(self) -> bool:
        """Whether fewer frames could be read than the container declares."""
        return self.frames < self.frames_expected

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (events counted, not listed)."""
        counts: dict[str, int] = {}
        for event in self.events:
            counts[event.kind] = counts.get(event.kind, 0) + 1
        return {
            "video": self.path,
            "frames": self.frames,
            "frames_expected": self.frames_expected or None,
            "truncated": self.truncated,
            "detection_frames": self.detection_frames,
            "fps": round(self.fps, 3),
            "width": self.width,
            "height": self.height,
            "tracks": self.tracks,
            "identities": self.identities,
            "unnamed_tracks": self.unnamed_tracks,
            "events": counts,
            "seconds": round(self.seconds, 2),
            "out": self.out,
            "codec": self.codec,
            "events_path": self.events_path,
            "naming": None if self.decided is None else self.decided.describe(),
        }


def open_video(path: str | Path) -> tuple[Any, float, int, int, int]:
    """Open `path` with OpenCV: (capture, fps, width, height, frame count or 0 if unknown).

    Raises VideoError when `path` is no regular file (missing, a folder, a FIFO, a device: it
    is never opened then) or OpenCV cannot decode it.
    """
    import cv2

    path = Path(path)
    problem = file_problem(path)
    if problem is not None:
        raise VideoError(f"{path}: {problem}")
    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        capture.release()
        raise VideoError(f"{path}: cannot read video (unsupported or corrupt file)")
    fps = float(capture.get(cv2.CAP_PROP_FPS) or 0.0)
    if not math.isfinite(fps) or fps <= 0:
        fps = DEFAULT_FPS
    width = int(capture.get(cv2.CAP_PROP_FRAME_WIDTH) or 0)
    height = int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT) or 0)
    count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
    return capture, fps, width, height, max(count, 0)


def iter_frames(capture: Any) -> Iterator[np.ndarray]:
    """The BGR frames of an opened capture, until it ends."""
    while True:
        ok, frame = capture.read()
        if not ok or frame is None:
            return
        yield frame


_PALETTE = [
    (60, 200, 60),
    (230, 120, 30),
    (40, 160, 240),
    (200, 60, 200),
    (30, 220, 220),
    (240, 200, 40),
    (120, 80, 240),
    (80, 240, 160),
]


def track_colour(track_id: int) -> tuple[int, int, int]:
    """A BGR colour per track id."""
    return _PALETTE[(track_id - 1) % len(_PALETTE)]


def draw_overlays(frame: np.ndarray, overlays: dict[int, Overlay]) -> np.ndarray:
    """Draw each track's box and label onto the BGR `frame` in place and return it, sized to
    each face (`mark_sizes`)."""
    import cv2

    for track_id, overlay in sorted(overlays.items()):
        colour = track_colour(track_id)
        size = mark_sizes(overlay.box)
        # Hershey text is about 22 px tall at scale 1
        scale = size.text / 22
        x1, y1, x2, y2 = (round(float(v)) for v in overlay.box)
        cv2.rectangle(frame, (x1, y1), (x2, y2), colour, size.line)
        (tw, th), base = cv2.getTextSize(overlay.label, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
        top = y1 - th - base - 2 if y1 - th - base - 2 >= 0 else y2 + 2
        cv2.rectangle(frame, (x1, top), (x1 + tw + 4, top + th + base + 2), colour, -1)
        cv2.putText(
            frame,
            overlay.label,
            (x1 + 2, top + th + 1),
            cv2.FONT_HERSHEY_SIMPLEX,
            scale,
            (0, 0, 0),
            1,
            cv2.LINE_AA,
        )
    return frame


def track_label(track: Any, named: bool) -> str:
    """`#id name score` (name `unknown` when not identified; no name without a gallery)."""
    label = f"#{track.id}"
    if named:
        label += f" {track.identity or 'unknown'}"
        if track.identity_score is not None:
            label += f" {track.identity_score:.2f}"
    return label


def interpolate_overlays(
    before: dict[int, Overlay],
    after: dict[int, Overlay],
    start: int,
    end: int,
    frame: int,
) -> dict[int, Overlay]:
    """Overlays for `frame` between detection frames `start` and `end`.

    Tracks in both get a linearly interpolated box (and the later label); tracks in one only
    are kept on the nearer half of the gap.
    """
    t = (frame - start) / (end - start)
    result: dict[int, Overlay] = {}
    for track_id, first in before.items():
        last = after.get(track_id)
        if last is not None:
            result[track_id] = Overlay(first.box + (last.box - first.box) * t, last.label)
        elif t <= 0.5:
            result[track_id] = first
    for track_id, last in after.items():
        if track_id not in before and t > 0.5:
            result[track_id] = last
    return result


class AnnotatedWriter:
    """Writes frames with their tracks drawn on. Frames between two detection frames wait
    (`hold`) until the later one is known, so their boxes can be interpolated."""

    def __init__(self, writer: FrameWriter) -> None:
        self.writer = writer
        self.pending: list[tuple[int, np.ndarray]] = []
        self.previous: dict[int, Overlay] = {}
        self.previous_frame = 0

    def hold(self, index: int, frame: np.ndarray) -> None:
        """Keep a frame without detections until the next detection frame."""
        self.pending.append((index, frame))

    def detection_frame(self, index: int, frame: np.ndarray, overlays: dict[int, Overlay]) -> None:
        """Write the held frames (interpolated) and then this detection frame."""
        for held, image in self.pending:
            between = interpolate_overlays(
                self.previous, overlays, self.previous_frame, index, held
            )
            self.writer.write(draw_overlays(image, between))
        self.pending.clear()
        self.writer.write(draw_overlays(frame, overlays))
        self.previous, self.previous_frame = overlays, index

    def close(self) -> None:
        """Write the frames after the last detection frame (boxes kept) and release."""
        for _, image in self.pending:
            self.writer.write(draw_overlays(image, self.previous))
        self.pending.clear()
        self.writer.release()


class EventLog:
    """Collects track events, writes them as JSON lines and passes them to a callback."""

    def __init__(
        self,
        path: str | Path | None = None,
        on_event: Callable[[TrackEvent], None] | None = None,
    ) -> None:
        self.events: list[TrackEvent] = []
        self.on_event = on_event
        self.file: IO[str] | None = None
        if path is not None:
            try:
                Path(path).parent.mkdir(parents=True, exist_ok=True)
                self.file = open(path, "w", encoding="utf-8")  # noqa: SIM115
            except OSError as exc:
                raise VideoError(f"{path}: cannot write ({exc.strerror or exc})") from exc

    def add(self, events: Sequence[TrackEvent]) -> None:
        for event in events:
            self.events.append(event)
            if self.file is not None:
                self.file.write(json.dumps(event.to_dict()) + "\n")
            if self.on_event is not None:
                self.on_event(event)

    def close(self) -> None:
        if self.file is not None:
            self.file.close()


def _detections(
    analyzer: Any, frame_bgr: np.ndarray, gallery: Identifier | None, top_k: int, threshold: float
) -> list[Detection]:
    """The faces of one frame as tracker detections, boxes clipped to the frame."""
    import cv2

    rgb = cv2.cvtColor(frame_bgr, cv2.COLOR_BGR2RGB)
    faces = analyzer.analyze(rgb)
    if not faces:
        return []
    embeddings = np.stack([face.embedding for face in faces]).astype(np.float32)
    matches: list[list[Match]] = (
        identify_matches(gallery, embeddings, top_k, threshold)
        if gallery is not None
        else [[]] * len(faces)
    )
    height, width = frame_bgr.shape[:2]
    frame_box = np.array([width, height, width, height], np.float32)
    return [
        Detection(np.clip(face.box, 0, frame_box), float(face.score), embedding, found)
        for face, embedding, found in zip(faces, embeddings, matches)
    ]


def process_video(
    path: str | Path,
    analyzer: Any,
    gallery: Identifier | None = None,
    *,
    out: str | Path | None = None,
    events_path: str | Path | None = None,
    every: int = 1,
    window: int = 5,
    top_k: int = 5,
    threshold: float | None = None,
    fpir: float | None = None,
    tracker_config: TrackerConfig | None = None,
    progress: bool = False,
    on_event: Callable[[TrackEvent], None] | None = None,
) -> VideoSummary:
    """Track and identify the faces of the video at `path`.

    analyzer: a `FaceAnalyzer` (or anything with ``analyze(rgb) -> faces`` with `.box`,
    `.score`, `.embedding`); gallery: optional `Identifier`; out: annotated video (H.264, or
    VP9/VP8 for a .webm name: `video.writer`; the summary's `codec`); events_path: JSON lines
    of track events; every: detect on every n-th frame; window: identity smoothing window
    (observations); threshold: smoothed score needed to name a track (default: the gallery's
    `decision_threshold(None, fpir)`; without a gallery no track is named). A video that ends
    before the frames its container declares (a truncated file) is processed as far as it can
    be read, and its summary says so (`truncated`). Raises
    VideoError.
    """
    if every < 1:
        raise ValueError(f"every must be >= 1, got {every}")
    if window < 1:
        raise ValueError(f"window must be >= 1, got {window}")
    if top_k < 1:
        raise ValueError(f"top_k must be >= 1, got {top_k}")
    decided = None if gallery is None else gallery.decision_threshold(threshold, fpir)
    if decided is not None:
        threshold = decided.value
    elif threshold is None:
        threshold = math.inf
    config = tracker_config or TrackerConfig()
    tracker = Tracker(config, window=window, threshold=float(threshold))

    started = clock.perf_counter()
    path = Path(path)
    if out is not None:
        check_output(out, path)
    capture, fps, width, height, count = open_video(path)
    annotated: AnnotatedWriter | None = None
    log: EventLog | None = None
    named = gallery is not None
    frames = detection_frames = 0
    try:
        frame_iter = iter_frames(capture)
        frame = next(frame_iter, None)
        if frame is None:
            raise VideoError(f"{path}: cannot read video (no frames could be decoded)")
        height, width = frame.shape[:2]
        log = EventLog(events_path, on_event)
        if out is not None:
            annotated = AnnotatedWriter(open_writer(out, fps, width, height))
        with _progress_bar(count, progress) as bar:
            while frame is not None:
                if frames % every == 0:
                    detections = _detections(analyzer, frame, gallery, top_k, threshold)
                    detection_frames += 1
                    log.add(tracker.update(detections, frames, frames / fps))
                    if annotated is not None:
                        overlays = {
                            t.id: Overlay(t.box.copy(), track_label(t, named))
                            for t in tracker.tracks
                            if t.visible
                        }
                        annotated.detection_frame(frames, frame, overlays)
                elif annotated is not None:
                    annotated.hold(frames, frame)
                frames += 1
                bar.update(1)
                frame = next(frame_iter, None)
        log.add(tracker.finish())
    finally:
        capture.release()
        if annotated is not None:
            annotated.close()
        if log is not None:
            log.close()

    identities: dict[str, list[int]] = {}
    unnamed: list[int] = []
    for track in tracker.all_tracks:
        for name in sorted(track.identities_seen):
            identities.setdefault(name, []).append(track.id)
        if not track.identities_seen:
            unnamed.append(track.id)
    return VideoSummary(
        path=str(path),
        frames=frames,
        detection_frames=detection_frames,
        fps=fps,
        width=width,
        height=height,
        tracks=len(tracker.all_tracks),
        identities=dict(sorted(identities.items())),
        unnamed_tracks=unnamed,
        events=log.events,
        seconds=clock.perf_counter() - started,
        out=None if out is None else str(out),
        events_path=None if events_path is None else str(events_path),
        decided=decided,
        frames_expected=count,
        codec=None if annotated is None else annotated.writer.codec,
    )


def _progress_bar(total: int, enabled: bool) -> Any:
    from tqdm import tqdm

    return tqdm(
        total=total or None,
        unit="frame",
        desc="video",
        disable=not enabled,
        file=sys.stderr,
        leave=False,
    )
