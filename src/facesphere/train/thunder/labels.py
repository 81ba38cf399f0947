"""Labels for detector training: real WIDER FACE boxes, and pretrained detectors as teachers.

Two kinds of photo are labelled, never LFW:

* ``celeba299`` and ``orl`` photos carry no boxes: the teachers (`yunet` and `retinaface`, see
  docs/thunder.md) find their faces. A face both teachers find (IoU >= 0.5) gets the mean of
  their boxes and five points; a face only one finds is kept when its score is at least
  `SOLO_SCORE`. This is the knowledge distillation: the student learns the teachers' boxes and
  landmarks on photos nobody annotated.
* ``wider`` photos, the training part of the shared WIDER FACE subset (`wider_split`; its dev
  part is never read here), keep their annotated boxes; WIDER's invalid boxes become boxes to
  ignore. WIDER has no landmarks: the teachers' points are taken for each annotated face they
  find (IoU >= 0.5) at the photo's own resolution, and are unknown (NaN, masked out of the
  loss) for the others.

Held-out splits are fixed by identity (:func:`is_held_out`) for celeba299/ORL.
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
from facesphere.video.tracker import iou_matrix

LABEL_SOURCES = ("wider", "orl", "celeba299")
TEACHERS = ("yunet", "retinaface")
DEFAULT_LABELS = Path("out/thunder/labels.json")
LABEL_FORMAT = "facesphere-thunder-labels-2"
MATCH_IOU = 0.5
SOLO_SCORE = 0.8  # a face one teacher alone finds is kept from this score up
TEACHER_SCORE = 0.5


@dataclass
class FaceLabel:
    """One face: box (x1, y1, x2, y2, exclusive), score, standard-5 points (NaN = unknown);
    `ignore` marks a box that is neither a face to learn nor background (WIDER's invalid)."""

    box: np.ndarray
    landmarks: np.ndarray
    score: float = 1.0
    ignore: bool = False


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


@dataclass
class Found:
    """A teacher's faces: boxes (F, 4), scores (F,), points (F, 5, 2)."""

    boxes: np.ndarray
    scores: np.ndarray
    points: np.ndarray

    @classmethod
    def of(cls, detections: list) -> Found:
        boxes = np.array([d.box for d in detections], np.float32).reshape(-1, 4)
        scores = np.array([d.score for d in detections], np.float32)
        points = np.array([d.landmarks for d in detections], np.float32).reshape(-1, 5, 2)
        return cls(boxes, scores, points)


def fuse_teachers(first: Found, second: Found) -> list[FaceLabel]:
    """One face list from two teachers: matched faces averaged, lone faces kept from
    `SOLO_SCORE`."""
    faces: list[FaceLabel] = []
    used: set[int] = set()
    iou = iou_matrix(first.boxes, second.boxes) if len(first.boxes) and len(second.boxes) else None
    for i in range(len(first.boxes)):
        j = int(np.argmax(iou[i])) if iou is not None else -1
        if j >= 0 and iou[i, j] >= MATCH_IOU and j not in used:
            used.add(j)
            faces.append(
                FaceLabel(
                    (first.boxes[i] + second.boxes[j]) / 2,
                    (first.points[i] + second.points[j]) / 2,
                    float(min(first.scores[i], second.scores[j])),
                )
            )
        elif first.scores[i] >= SOLO_SCORE:
            faces.append(FaceLabel(first.boxes[i], first.points[i], float(first.scores[i])))
    for j in range(len(second.boxes)):
        if j not in used and second.scores[j] >= SOLO_SCORE:
            faces.append(FaceLabel(second.boxes[j], second.points[j], float(second.scores[j])))
    return faces


class Teachers:
    """The pretrained detectors whose faces label the training photos."""

    def __init__(self, names: tuple[str, ...] = TEACHERS) -> None:
        from facesphere.detect.registry import create_detector

        self.detectors = [
            create_detector(name, score_threshold=TEACHER_SCORE, max_side=0) for name in names
        ]

    def find(self, image: np.ndarray) -> list[Found]:
        """Each teacher's faces in `image`, at its own resolution."""
        return [Found.of(detector.detect(image)) for detector in self.detectors]


def _wider_label(item, root: Path, teachers: Teachers) -> ImageLabel:
    """A WIDER training photo: its annotated boxes, the teachers' points where they agree."""
    from facesphere.eval.wider import wider_subset_dir

    path = item.path(wider_subset_dir(root))
    image = read_rgb(path)
    teacher_faces = fuse_teachers(*teachers.find(image))
    label = ImageLabel(str(path.relative_to(root)), "wider", item.event, False)
    known = np.array([f.box for f in teacher_faces], np.float32).reshape(-1, 4)
    iou = iou_matrix(item.boxes, known) if len(known) and len(item.boxes) else None
    for k, (box, invalid) in enumerate(zip(item.boxes, item.invalid, strict=True)):
        points = np.full((5, 2), np.nan, np.float32)
        if iou is not None and iou[k].max() >= MATCH_IOU:
            points = teacher_faces[int(np.argmax(iou[k]))].landmarks.copy()
        label.faces.append(FaceLabel(box.astype(np.float32), points, 1.0, bool(invalid)))
    return label


def label_photos(
    root: Path,
    sources: tuple[str, ...] = LABEL_SOURCES,
    limit: int | None = None,
    progress: bool = True,
    held_out: bool | None = None,
    teachers: tuple[str, ...] = TEACHERS,
) -> list[ImageLabel]:
    """Label `sources` as the module docstring says; `limit` caps photos per source and
    `held_out` (True or False) labels only the celeba299/ORL photos of that side of the split
    (WIDER's training part has no held-out side: its dev part is never read)."""
    from tqdm import tqdm

    from facesphere.eval.wider import load_wider_subset, wider_split

    if "lfw" in sources:
        raise ValueError("LFW is the benchmark; it is never labelled for training")
    unknown = set(sources) - set(LABEL_SOURCES)
    if unknown:
        raise DataError(f"unknown label sources {sorted(unknown)}; known: {LABEL_SOURCES}")
    crowd = Teachers(teachers)
    labels: list[ImageLabel] = []
    for source in sources:
        if source == "wider":
            if held_out:
                continue
            train, _ = wider_split(load_wider_subset(root))
            for item in tqdm(train[:limit], desc="label wider", disable=not progress):
                labels.append(_wider_label(item, root, crowd))
            continue
        photos = [
            (rel, identity)
            for rel, identity in list_photos(root, source)
            if held_out is None or is_held_out(source, identity) == held_out
        ][:limit]
        for rel, identity in tqdm(photos, desc=f"label {source}", disable=not progress):
            item = ImageLabel(rel, source, identity, is_held_out(source, identity))
            item.faces = fuse_teachers(*crowd.find(read_rgb(root / rel)))
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
                    "ignore": face.ignore,
                }
                for face in item.faces
            ],
        }
        for item in labels
    ]
    path.write_text(json.dumps({"format": LABEL_FORMAT, "images": rows}))


def load_labels(path: Path) -> list[ImageLabel]:
    """Read labels written by :func:`save_labels`."""
    if not Path(path).is_file():
        raise DataError(f"{path}: no labels; create them with `facesphere detector-labels`")
    data = json.loads(Path(path).read_text())
    if data.get("format") != LABEL_FORMAT:
        raise DataError(
            f"{path}: labels of an older format; make new ones with `facesphere detector-labels`"
        )
    out = []
    for row in data["images"]:
        faces = [
            FaceLabel(
                np.asarray(f["box"], np.float32),
                np.asarray(
                    [[np.nan if v is None else v for v in p] for p in f["landmarks"]], np.float32
                ),
                float(f["score"]),
                bool(f["ignore"]),
            )
            for f in row["faces"]
        ]
        out.append(ImageLabel(row["path"], row["source"], row["identity"], row["held_out"], faces))
    return out
