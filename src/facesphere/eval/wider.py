"""WIDER FACE annotations: the reader, and the fixed dev/train split of the shared subset.

The shared data folder holds ``wider_train_subset/``: 260 photos of WIDER FACE's training
split under ``images/<event>/<file>.jpg`` and their boxes in WIDER's own
``wider_face_train_bbx_gt.txt`` layout (see :func:`read_wider_annotations`). Detection AP on
it is computed by :func:`facesphere.eval.metrics.detection_ap` with the ``invalid`` flags as
boxes to ignore.

The split (:func:`wider_split`) is part of the benchmark: detectors trained in this project
train on its ``train`` part only and are scored on ``dev``.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from facesphere.errors import DataError
from facesphere.io.data import data_dir

WIDER_SUBSET = "wider_train_subset"
WIDER_ANNOTATIONS = "wider_face_train_bbx_gt.txt"
DEV_EVERY = 4  # every 4th photo of each event (in sorted order) is a dev photo
FIELDS = 10  # x y w h blur expression illumination invalid occlusion pose
INVALID_FIELD = 7


@dataclass(eq=False)
class WiderImage:
    """One annotated photo: `name` is ``event/file.jpg`` (relative to ``images/``), `boxes`
    (N, 4) float32 (x1, y1, x2, y2) in pixels with the right/bottom edge exclusive, and
    `invalid` (N,) bool: WIDER's unusable boxes, which evaluation ignores."""

    name: str
    boxes: np.ndarray
    invalid: np.ndarray

    @property
    def event(self) -> str:
        """The event folder, e.g. ``1--Handshaking``."""
        return self.name.split("/", 1)[0]

    def path(self, root: Path) -> Path:
        """The photo's file under the subset folder `root`."""
        return root / "images" / self.name


def _error(path: Path, lineno: int, message: str, line: str | None = None) -> DataError:
    shown = f": {line.strip()!r}" if line is not None else ""
    return DataError(f"{path}, line {lineno}: {message}{shown}")


def _box_line(path: Path, lineno: int, line: str) -> list[int]:
    parts = line.split()
    if len(parts) != FIELDS:
        raise _error(path, lineno, f"expected {FIELDS} numbers (x y w h and six flags)", line)
    try:
        values = [int(v) for v in parts]
    except ValueError:
        raise _error(path, lineno, "a box line holds whole numbers only", line) from None
    if values[2] < 0 or values[3] < 0:
        raise _error(path, lineno, "negative box width or height", line)
    if values[INVALID_FIELD] not in (0, 1):
        raise _error(path, lineno, "the invalid flag (8th number) must be 0 or 1", line)
    return values


def read_wider_annotations(path: Path) -> list[WiderImage]:
    """Read a file in the layout of WIDER's ``wider_face_*_bbx_gt.txt``.

    Each photo is a line ``event/file.jpg``, a line with its number of faces N, then N lines
    ``x y w h blur expression illumination invalid occlusion pose`` (whole pixels, top-left
    corner and size). WIDER writes one line of ten zeros after N = 0; it is skipped (and not
    required). A box of zero width or height is kept and flagged invalid (it cannot be matched
    by any detection). Anything else, a truncated file or a repeated photo raise DataError
    naming the line.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no WIDER annotation file there")
    lines = path.read_text().splitlines()
    while lines and not lines[-1].strip():
        lines.pop()
    images: list[WiderImage] = []
    seen: set[str] = set()
    i = 0
    while i < len(lines):
        name = lines[i].strip()
        event, _, file = name.partition("/")
        if not event or not file or "/" in file or len(name.split()) != 1:
            raise _error(path, i + 1, "expected a photo name event/file.jpg", lines[i])
        if name in seen:
            raise _error(path, i + 1, f"photo {name} is listed twice")
        seen.add(name)
        if i + 1 >= len(lines):
            raise _error(path, i + 2, f"file ends before the face count of {name}")
        count_line = lines[i + 1]
        try:
            count = int(count_line.strip())
        except ValueError:
            raise _error(
                path, i + 2, f"expected the number of faces of {name}", count_line
            ) from None
        if count < 0:
            raise _error(path, i + 2, "negative number of faces", count_line)
        i += 2
        rows = []
        for _ in range(count):
            if i >= len(lines):
                raise _error(path, i + 1, f"file ends inside the {count} boxes of {name}")
            rows.append(_box_line(path, i + 1, lines[i]))
            i += 1
        if count == 0 and i < len(lines) and len(lines[i].split()) == FIELDS:
            if any(v != 0 for v in _box_line(path, i + 1, lines[i])):
                raise _error(path, i + 1, f"{name} has 0 faces but a box line follows", lines[i])
            i += 1
        table = np.asarray(rows, np.int64).reshape(-1, FIELDS)
        x, y, w, h = (table[:, k].astype(np.float32) for k in range(4))
        boxes = np.stack([x, y, x + w, y + h], axis=1)
        invalid = (table[:, INVALID_FIELD] == 1) | (w == 0) | (h == 0)
        images.append(WiderImage(name, boxes, invalid))
    return images


def wider_subset_dir(root: Path | None = None) -> Path:
    """The shared WIDER subset folder (under `root`, default the shared data folder)."""
    return (root if root is not None else data_dir()) / WIDER_SUBSET


def load_wider_subset(root: Path | None = None) -> list[WiderImage]:
    """All 260 annotated photos of the shared subset, in file order."""
    return read_wider_annotations(wider_subset_dir(root) / WIDER_ANNOTATIONS)


def wider_split(images: Iterable[WiderImage]) -> tuple[list[WiderImage], list[WiderImage]]:
    """The fixed (train, dev) split of the WIDER subset, each sorted by name.

    Within each event the photos are sorted by name and every 4th one (the 4th, 8th, ...;
    positions 3, 7, ... counting from 0) goes to ``dev``, the rest to ``train``: 65 dev and
    195 train photos of the shared 260 (13 and 39 per event). The split depends only on the
    names, so it is the same in every run.

    ``dev`` is held out: train and tune detectors (ThunderNet included) on ``train`` only and
    never read ``dev`` for training, model selection or thresholds; detection benchmarks
    report ``dev``. Pass every photo of the annotation file (``load_wider_subset()``), not a
    filtered part: the positions, and so the split, are those of the whole subset.
    """
    by_event: dict[str, list[WiderImage]] = defaultdict(list)
    for image in images:
        by_event[image.event].append(image)
    train: list[WiderImage] = []
    dev: list[WiderImage] = []
    for event in sorted(by_event):
        for position, image in enumerate(sorted(by_event[event], key=lambda im: im.name)):
            (dev if position % DEV_EVERY == DEV_EVERY - 1 else train).append(image)
    return sorted(train, key=lambda im: im.name), sorted(dev, key=lambda im: im.name)
