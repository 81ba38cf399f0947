"""ThunderNet-style two-stage face detector with a five-landmark branch, registered as
``thunder`` (see docs/thunder.md). Training lives in `facesphere.train.thunder`."""

from __future__ import annotations

from pathlib import Path

from facesphere.detect.registry import register_detector
from facesphere.detect.thunder.detector import ThunderDetector
from facesphere.pretrained.cards import THUNDER


@register_detector("thunder", card=THUNDER)
def thunder_detector(
    device: str = "cpu", weights: str | Path | None = None, score_threshold: float = 0.5
) -> ThunderDetector:
    """The trained ThunderNet face detector (bundled weights unless `weights` is given)."""
    return ThunderDetector(weights=weights, device=device, score_threshold=score_threshold)
