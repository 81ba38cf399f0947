"""Faces in videos: tracking, identity smoothing with a sliding maximum, annotation.

>>> from facesphere import FaceAnalyzer
>>> from facesphere.video import process_video
>>> summary = process_video("clip.mp4", FaceAnalyzer(), gallery, out="annotated.mp4")
>>> summary.identities                                   # name -> track ids
"""

from facesphere.video.pipeline import (
    Identifier,
    VideoError,
    VideoSummary,
    identify_matches,
    open_video,
    process_video,
)
from facesphere.video.sliding_max import SlidingMax, sliding_window_max
from facesphere.video.tracker import (
    Detection,
    IdentitySmoother,
    Track,
    Tracker,
    TrackerConfig,
    TrackEvent,
    iou_matrix,
)

__all__ = [
    "Detection",
    "Identifier",
    "IdentitySmoother",
    "SlidingMax",
    "Track",
    "TrackEvent",
    "Tracker",
    "TrackerConfig",
    "VideoError",
    "VideoSummary",
    "identify_matches",
    "iou_matrix",
    "open_video",
    "process_video",
    "sliding_window_max",
]
