"""Draw detected faces (boxes, scores, landmarks) onto an image."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw


def draw_faces(
    image: np.ndarray, faces: Sequence, labels: Sequence[str] | None = None
) -> Image.Image:
    """A copy of `image` with each face's box, landmarks and label (default: its score)."""
    canvas = Image.fromarray(image).convert("RGB")
    pen = ImageDraw.Draw(canvas)
    width = max(2, round(min(canvas.size) / 200))
    for index, face in enumerate(faces):
        x1, y1, x2, y2 = (float(v) for v in face.box)
        colour = (40, 220, 60) if face.source == "detector" else (240, 160, 20)
        pen.rectangle([x1, y1, x2, y2], outline=colour, width=width)
        radius = max(2, width)
        for x, y in face.landmarks:
            if np.isfinite(x) and np.isfinite(y):
                pen.ellipse([x - radius, y - radius, x + radius, y + radius], fill=(255, 40, 40))
        text = labels[index] if labels is not None else f"{face.score:.2f}"
        pen.text((x1 + width, max(0.0, y1 - 12 - width)), text, fill=colour)
    return canvas


def save_image(image: Image.Image, path: str | Path) -> None:
    """Save with the format implied by the suffix (JPEG at quality 92)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() in (".jpg", ".jpeg"):
        image.save(path, quality=92)
    else:
        image.save(path)
