"""Pseudo-labels for detector training: MMOD boxes plus approximate standard-5 landmarks.

The pretrained MMOD detector (torch engine) finds the faces of every celeba299 and ORL photo
and dlib's 5-point shape predictor places eye corners and the nose base on each box; these
become standard-5 points: the eye centres (midpoints of the corner pairs) only. dlib's nose
base sits below the standard nose tip, so the nose is left unknown like the mouth corners
(stored as ``None``, masked out of the landmark loss); landmarks5 crops supervise those.
LFW is never read here. Held-out splits are fixed by identity (see :func:`is_held_out`).
"""

from __future__ import annotations

import json
import math
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from facesphere.errors import DataError

LABEL_SOURCES = ("celeba299", "orl")
DEFAULT_LABELS = Path("out/thunder/pseudo_labels.json")


@dataclass
class FaceLabel:
    """One face: box (x1, y1, x2, y2, exclusive), score, standard-5 points (NaN = unknown)."""

    box: np.ndarray
    landmarks: np.ndarray
    score: float = 1.0


@dataclass
class ImageLabel:
    """All faces of one photo, with its source set, identity and held-out flag."""

    path: str
    source: str
    identity: str
    held_out: bool
    faces: list[FaceLabel] = field(default_factory=list)


def is_held_out(source: str, identity: str) -> bool:
    """The fixed validation split: ~10% of identities chosen by a CRC32 of the identity."""
    return zlib.crc32(f"{source}/{identity}".encode()) % 10 == 0


def list_photos(root: Path, source: str) -> Iterator[tuple[str, str]]:
    """(relative path, identity) of every photo of `source` under the data folder `root`."""
    base = root / source
    pattern = "*.png" if source == "orl" else "*.jpg"
    for folder in sorted(p for p in base.iterdir() if p.is_dir()):
        for path in sorted(folder.glob(pattern)):
            yield str(path.relative_to(root)), folder.name


def read_rgb(path: Path) -> np.ndarray:
    """A photo as RGB uint8 (H, W, 3)."""
    with Image.open(path) as img:
        return np.asarray(img.convert("RGB"))


def label_photos(
    root: Path,
    sources: tuple[str, ...] = LABEL_SOURCES,
    limit: int | None = None,
    progress: bool = True,
    held_out: bool | None = None,
) -> list[ImageLabel]:
    """Run MMOD + the shape predictor over `sources`; `limit` caps photos per source and
    `held_out` (True or False) labels only the photos of that side of the split."""
    from tqdm import tqdm

    from facesphere.align.templates import dlib5_to_standard5
    from facesphere.detect.registry import create_detector
    from facesphere.landmarks.registry import create_landmarker

    landmarker = create_landmarker("dlib-shape5")
    labels: list[ImageLabel] = []
    for source in sources:
        if source == "lfw":
            raise ValueError("LFW is the benchmark; it is never pseudo-labelled for training")
        # ORL faces (about 60-70 px) are below MMOD's 80 px window: upsample those once
        detector = create_detector("cnn", engine="torch", upsample=1 if source == "orl" else 0)
        photos = [
            (rel, identity)
            for rel, identity in list_photos(root, source)
            if held_out is None or is_held_out(source, identity) == held_out
        ][:limit]
        for rel, identity in tqdm(photos, desc=f"label {source}", disable=not progress):
            image = read_rgb(root / rel)
            found = detector.detect(image)
            item = ImageLabel(rel, source, identity, is_held_out(source, identity))
            if found:
                boxes = np.stack([d.box for d in found])
                points = landmarker.predict(image, boxes)
                for det, pts in zip(found, points, strict=True):
                    std5 = dlib5_to_standard5(pts).astype(np.float32)
                    std5[2] = np.nan  # the nose base is not the nose tip
                    item.faces.append(FaceLabel(det.box.astype(np.float32), std5, det.score))
            labels.append(item)
    return labels


def _num(value: float) -> float | None:
    return None if math.isnan(value) else round(float(value), 2)


def save_labels(labels: list[ImageLabel], path: Path) -> None:
    """Write labels as JSON (unknown landmarks as null)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = [
        {
            "path": item.path,
            "source": item.source,
            "identity": item.identity,
            "held_out": item.held_out,
            "faces": [
                {
                    "box": [round(float(v), 2) for v in face.box],
                    "score": round(face.score, 4),
                    "landmarks": [[_num(x), _num(y)] for x, y in face.landmarks],
                }
                for face in item.faces
            ],
        }
        for item in labels
    ]
    path.write_text(json.dumps({"format": "facesphere-thunder-labels", "images": rows}))


def load_labels(path: Path) -> list[ImageLabel]:
    """Read labels written by :func:`save_labels`."""
    if not Path(path).is_file():
        raise DataError(f"{path}: no pseudo-labels; create them with `facesphere detector-labels`")
    data = json.loads(Path(path).read_text())
    out = []
    for row in data["images"]:
        faces = [
            FaceLabel(
                np.asarray(f["box"], np.float32),
                np.asarray(
                    [[np.nan if v is None else v for v in p] for p in f["landmarks"]], np.float32
                ),
                float(f["score"]),
            )
            for f in row["faces"]
        ]
        out.append(ImageLabel(row["path"], row["source"], row["identity"], row["held_out"], faces))
    return out
