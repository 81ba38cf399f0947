"""The demo: detect, draw and verify on public-domain portraits that ship with scikit-image
(`astronaut`, Eileen Collins) and matplotlib (`grace_hopper.jpg`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from facesphere.io.draw import draw_faces, save_image
from facesphere.pipeline.analyzer import FaceAnalyzer


def demo_photos() -> dict[str, np.ndarray]:
    """The two sample portraits as RGB uint8 arrays."""
    import matplotlib.cbook
    import skimage.data

    from facesphere.io.image import load_image

    hopper = matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)
    return {"astronaut": skimage.data.astronaut(), "grace_hopper": load_image(hopper)}


def variants(image: np.ndarray) -> dict[str, np.ndarray]:
    """The same photo mirrored, rescaled to 150% and rotated by 10 degrees."""
    pil = Image.fromarray(image)
    size = (round(pil.width * 1.5), round(pil.height * 1.5))
    larger = pil.resize(size, Image.Resampling.LANCZOS)
    rotated = pil.rotate(10, resample=Image.Resampling.BILINEAR, expand=True, fillcolor=(0, 0, 0))
    return {
        "flip": image[:, ::-1].copy(),
        "rescale": np.asarray(larger),
        "rotate": np.asarray(rotated),
    }


@dataclass
class DemoCheck:
    """One verification the demo expects to come out a certain way."""

    name: str
    expected_same: bool
    similarity: float
    same: bool

    @property
    def passed(self) -> bool:
        return self.same == self.expected_same


def run_demo(
    out_dir: Path, analyzer: FaceAnalyzer | None = None
) -> tuple[list[DemoCheck], dict[str, int]]:
    """Detect and draw each portrait into `out_dir`, then verify each against its variants
    (expected: same) and the two people against each other (expected: different)."""
    analyzer = analyzer or FaceAnalyzer()
    out_dir.mkdir(parents=True, exist_ok=True)
    photos = demo_photos()
    references = {}
    face_counts = {}
    for name, image in photos.items():
        faces = analyzer.analyze(image)
        face_counts[name] = len(faces)
        save_image(draw_faces(image, faces), out_dir / f"{name}_faces.jpg")
        if faces:
            references[name] = faces[0].embedding
    checks = []
    for name, image in photos.items():
        for variant, changed in variants(image).items():
            faces = analyzer.analyze(changed)
            score = (
                float(faces[0].embedding @ references[name])
                if faces and name in references
                else -1.0
            )
            checks.append(
                DemoCheck(f"{name} vs {name} ({variant})", True, score, score >= analyzer.threshold)
            )
    if len(references) == 2:
        score = float(references["astronaut"] @ references["grace_hopper"])
        checks.append(
            DemoCheck("astronaut vs grace_hopper", False, score, score >= analyzer.threshold)
        )
    return checks, face_counts
