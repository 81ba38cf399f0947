"""ThunderNet-style two-stage face detector with a five-landmark branch, registered as
``thunder`` (see docs/thunder.md). Training lives in `facesphere.train.thunder`."""

from __future__ import annotations

from pathlib import Path

from facesphere.detect.geometry import DEFAULT_MAX_SIDE
from facesphere.detect.registry import register_detector
from facesphere.detect.thunder.detector import DEFAULT_MIN_FACE, ThunderDetector
from facesphere.pretrained.cards import THUNDER


@register_detector("thunder", card=THUNDER)
def thunder_detector(
    device: str = "cpu",
    weights: str | Path | None = None,
    score_threshold: float = 0.5,
    min_face: float = DEFAULT_MIN_FACE,
    upsample: int = 0,
    max_side: int = DEFAULT_MAX_SIDE,
    refine_landmarks: bool = True,
) -> ThunderDetector:
    """The trained ThunderNet face detector (bundled weights unless `weights` is given):
    faces from `min_face` px high (halved per `upsample`), working side at most `max_side`;
    `refine_landmarks` re-reads each face's points with the file's second landmark stage."""
    return ThunderDetector(
        weights=weights,
        device=device,
        score_threshold=score_threshold,
        min_face=min_face,
        upsample=upsample,
        max_side=max_side,
        refine_landmarks=refine_landmarks,
    )
