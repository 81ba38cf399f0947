"""Draw detected faces (boxes, scores, landmarks) onto an image."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont


@dataclass(frozen=True)
class MarkSizes:
    """How big to draw the marks of one face, in pixels: box line width, landmark dot radius
    and label text height."""

    line: int
    dot: int
    text: int


def mark_sizes(box: Sequence[float]) -> MarkSizes:
    """Marks scaled to the face: a 40 px face gets a 1 px line, 1 px dots and 10 px text, a
    400 px one a 5 px line, 5 px dots and 40 px text (text at least 10 px, to stay legible)."""
    side = max(1.0, min(float(box[2]) - float(box[0]), float(box[3]) - float(box[1])))
    return MarkSizes(
        line=max(1, round(side / 80)),
        dot=max(1, round(side / 80)),
        text=max(10, round(side / 10)),
    )


def draw_faces(
    image: np.ndarray, faces: Sequence, labels: Sequence[str] | None = None
) -> Image.Image:
    """A copy of `image` with each face's box, landmarks and label (default: its score), the
    marks sized to the face (`mark_sizes`)."""
    canvas = Image.fromarray(image).convert("RGB")
    pen = ImageDraw.Draw(canvas)
    for index, face in enumerate(faces):
        x1, y1, x2, y2 = (float(v) for v in face.box)
        size = mark_sizes(face.box)
        colour = (40, 220, 60) if face.source == "detector" else (240, 160, 20)
        pen.rectangle([x1, y1, x2, y2], outline=colour, width=size.line)
        r = size.dot
        for x, y in face.landmarks:
            if np.isfinite(x) and np.isfinite(y):
                pen.ellipse([x - r, y - r, x + r, y + r], fill=(255, 40, 40))
        text = labels[index] if labels is not None else f"{face.score:.2f}"
        font = ImageFont.load_default(size=size.text)
        pen.text((x1 + size.line, max(0.0, y1 - size.text - 2 * size.line)), text, colour, font)
    return canvas


def save_image(image: Image.Image, path: str | Path) -> None:
    """Save with the format implied by the suffix (JPEG at quality 92)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() in (".jpg", ".jpeg"):
        image.save(path, quality=92)
    else:
        image.save(path)
