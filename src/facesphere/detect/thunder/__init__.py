"""ThunderNet-style two-stage face detector with a five-landmark branch, registered as
``thunder`` (see docs/thunder.md). Importing this package does not import torch; the model
is loaded when the detector is created."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from facesphere.detect.registry import register_detector


@register_detector("thunder")
def thunder_detector(
    weights: str | Path | None = None,
    device: str = "cpu",
    score_threshold: float = 0.5,
    **_: Any,
) -> Any:
    """The trained ThunderNet face detector (``engine``/``upsample`` are ignored)."""
    from facesphere.detect.thunder.detector import ThunderDetector

    return ThunderDetector(weights=weights, device=device, score_threshold=score_threshold)
