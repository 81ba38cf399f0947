"""Training and evaluation scenes for the face detector.

Three kinds of sample, all of the network's input size (square, default 320):

* ``real``: a pseudo-labelled celeba299/ORL photo, rescaled, placed on a random background
  and possibly mirrored; labels are the MMOD boxes and approximate standard-5 points.
* ``synthetic``: a background (a face-free strip of a celeba photo, mirrored and tiled, or a
  random texture) with 1-4 faces pasted at random sizes (about 20-250 px), positions and small
  rotations through a feathered elliptical mask; boxes and points are transformed exactly.
  Pasted faces are pseudo-labelled crops or landmarks5 crops (all five points known).
* landmarks5 crops carry no box; one is derived from the eye positions with the average
  eye-to-box geometry of the pseudo-labels (:func:`box_from_eyes`), so they match MMOD boxes.

Every sample is drawn from ``numpy.random.default_rng((seed, index))``, so a sample depends
only on its index (resumable, identical across runs).
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageFilter

from facesphere.errors import DataError
from facesphere.pretrained.cards import THUNDER
from facesphere.train.thunder.labels import ImageLabel, read_rgb

FLIP_ORDER = [1, 0, 2, 4, 3]  # standard-5 points after a horizontal mirror


@dataclass
class Scene:
    """An input image (S, S, 3) uint8 with boxes (F, 4) and standard-5 points (F, 5, 2), and
    boxes to ignore (G, 4): neither faces to learn nor background."""

    image: np.ndarray
    boxes: np.ndarray
    landmarks: np.ndarray
    ignore: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), np.float32))


@dataclass
class LandmarkCrop:
    """A landmarks5 crop path (relative to the data folder) and its five points."""

    path: str
    points: np.ndarray
    held_out: bool


def load_landmarks5(root: Path) -> list[LandmarkCrop]:
    """All landmarks5 crops; about 10% held out by a CRC32 of the file name."""
    out = []
    for line in (root / "landmarks5" / "landmarks.txt").read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        parts = line.split()
        values = np.asarray([float(v) for v in parts[1:11]], np.float32)
        points = np.stack([values[:5], values[5:]], axis=1)
        held = zlib.crc32(parts[0].encode()) % 10 == 0
        out.append(LandmarkCrop(f"landmarks5/{parts[0]}", points, held))
    return out


def eye_box_geometry(labels: list[ImageLabel]) -> tuple[float, float, float]:
    """Median (box size, centre dx, centre dy) in inter-ocular units, measured on the eye
    midpoint of pseudo-labelled faces (dx, dy in the eye-aligned frame)."""
    rows = []
    for item in labels:
        for face in item.faces:
            le, re = face.landmarks[0], face.landmarks[1]
            if not (np.isfinite(le).all() and np.isfinite(re).all()):
                continue
            d = float(np.hypot(*(re - le)))
            if d < 4:
                continue
            mid = (le + re) / 2
            centre = (face.box[:2] + face.box[2:]) / 2
            size = float(np.sqrt(np.prod(face.box[2:] - face.box[:2])))
            rows.append((size / d, (centre[0] - mid[0]) / d, (centre[1] - mid[1]) / d))
    if not rows:
        return 2.6, 0.0, 0.45
    med = np.median(np.asarray(rows), axis=0)
    return float(med[0]), float(med[1]), float(med[2])


def box_from_eyes(points: np.ndarray, geometry: tuple[float, float, float]) -> np.ndarray:
    """A square MMOD-like box from the two eye centres of standard-5 `points`."""
    size, dx, dy = geometry
    le, re = points[0], points[1]
    d = float(np.hypot(*(re - le)))
    mid = (le + re) / 2
    centre = mid + np.array([dx * d, dy * d], np.float32)
    half = size * d / 2
    return np.array(
        [centre[0] - half, centre[1] - half, centre[0] + half, centre[1] + half], np.float32
    )


@lru_cache(maxsize=4096)
def _cached_rgb(path: str) -> np.ndarray:
    return read_rgb(Path(path))


def random_texture(rng: np.random.Generator, size: int) -> np.ndarray:
    """A smooth random colour field plus fine noise, (size, size, 3) uint8."""
    cells = int(rng.integers(2, 24))
    low = rng.uniform(0, 255, (cells, cells, 3)).astype(np.uint8)
    img = np.asarray(Image.fromarray(low).resize((size, size), Image.BILINEAR), np.float32)
    img += rng.normal(0, rng.uniform(0, 20), img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def background_strip(item: ImageLabel, root: Path) -> np.ndarray | None:
    """The largest strip of a photo that lies outside all its face boxes (or None)."""
    image = _cached_rgb(str(root / item.path))
    h, w = image.shape[:2]
    if not item.faces:
        return image
    boxes = np.stack([f.box for f in item.faces])
    margin = np.tile((boxes[:, 2:] - boxes[:, :2]) * 0.3, 2) * np.array([-1, -1, 1, 1])
    boxes = boxes + margin  # keep hair, ears and chin out of the background
    x1, y1 = boxes[:, 0].min(), boxes[:, 1].min()
    x2, y2 = boxes[:, 2].max(), boxes[:, 3].max()
    strips = [
        (0, 0, int(max(x1, 0)), h),
        (int(min(x2, w)), 0, w, h),
        (0, 0, w, int(max(y1, 0))),
        (0, int(min(y2, h)), w, h),
    ]
    best = max(strips, key=lambda s: (s[2] - s[0]) * (s[3] - s[1]))
    if min(best[2] - best[0], best[3] - best[1]) < 16:
        return None
    return image[best[1] : best[3], best[0] : best[2]]


def tiled_background(strip: np.ndarray, rng: np.random.Generator, size: int) -> np.ndarray:
    """Mirror-tile a strip and resize it to (size, size, 3)."""
    tile = np.concatenate([strip, strip[:, ::-1]], axis=1)
    tile = np.concatenate([tile, tile[::-1]], axis=0)
    reps = int(rng.integers(1, 3))
    tile = np.tile(tile, (reps, reps, 1))
    return np.asarray(Image.fromarray(tile).resize((size, size), Image.BILINEAR))


def _ellipse_mask(w: int, h: int, box: np.ndarray, feather: float) -> Image.Image:
    """Alpha mask: an ellipse a bit larger than `box`, blurred at the edge."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32) + 0.5
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    rx, ry = (box[2] - box[0]) * 0.68, (box[3] - box[1]) * 0.8
    r = np.sqrt(((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2)
    alpha = np.clip((1.0 - r) / max(feather, 1e-3) + 0.5, 0, 1)
    return Image.fromarray((alpha * 255).astype(np.uint8))


class SceneMaker:
    """Builds training / evaluation scenes from pseudo-labels and landmarks5 crops."""

    def __init__(
        self,
        root: Path,
        labels: list[ImageLabel],
        crops: list[LandmarkCrop],
        held_out: bool,
        size: int = 320,
        seed: int = 0,
        real_fraction: float = 0.4,
        landmark_fraction: float = 0.35,
        wider_fraction: float = 0.0,
        min_face: float = 20.0,
        max_face: float = 250.0,
        max_rotation: float = 15.0,
    ) -> None:
        self.root = root
        self.size = size
        self.seed = seed
        self.real_fraction = real_fraction
        self.landmark_fraction = landmark_fraction
        self.wider_fraction = wider_fraction
        self.min_face = min_face
        self.max_face = max_face
        self.max_rotation = max_rotation
        self.geometry = eye_box_geometry(labels)
        mine = [item for item in labels if item.held_out == held_out]
        self.crowds = [
            item
            for item in mine
            if item.source == "wider" and any(not face.ignore for face in item.faces)
        ]
        self.photos = [item for item in mine if item.faces and item.source != "wider"]
        self.backgrounds = [item for item in mine if item.source == "celeba299"]
        self.faces = [
            (item, face)
            for item in self.photos
            for face in item.faces
            if face.box[2] - face.box[0] >= 40
        ]
        self.crops = [c for c in crops if c.held_out == held_out]
        if not self.photos or not self.faces:
            raise DataError("no labelled faces for this split")
        if wider_fraction and not self.crowds:
            raise DataError("wider_fraction > 0 but the labels hold no WIDER photo")

    # -- pieces -------------------------------------------------------------------------------
    def background(self, rng: np.random.Generator) -> np.ndarray:
        if self.backgrounds and rng.random() < 0.6:
            item = self.backgrounds[int(rng.integers(len(self.backgrounds)))]
            strip = background_strip(item, self.root)
            if strip is not None:
                return tiled_background(strip, rng, self.size)
        return random_texture(rng, self.size)

    def face_source(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(crop image, box, standard-5 points) of one face to paste, in crop coordinates."""
        if self.crops and rng.random() < self.landmark_fraction:
            crop = self.crops[int(rng.integers(len(self.crops)))]
            image = _cached_rgb(str(self.root / crop.path))
            return image, box_from_eyes(crop.points, self.geometry), crop.points.copy()
        item, face = self.faces[int(rng.integers(len(self.faces)))]
        image = _cached_rgb(str(self.root / item.path))
        box = face.box
        cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
        half = (box[2] - box[0]) * 0.85
        x0, y0 = int(max(cx - half, 0)), int(max(cy - half * 1.1, 0))
        x1, y1 = int(min(cx + half, image.shape[1])), int(min(cy + half * 1.1, image.shape[0]))
        shift = np.array([x0, y0], np.float32)
        return (image[y0:y1, x0:x1], box - np.tile(shift, 2), face.landmarks - shift)

    def paste(
        self, canvas: Image.Image, rng: np.random.Generator, taken: list[np.ndarray]
    ) -> tuple[np.ndarray, np.ndarray] | None:
        """Paste one face onto `canvas` away from the boxes in `taken`."""
        image, box, points = self.face_source(rng)
        bw = float(box[2] - box[0])
        target = math.exp(rng.uniform(math.log(self.min_face), math.log(self.max_face)))
        target = min(target, self.size * 0.85)
        scale = target / bw
        h, w = image.shape[:2]
        nw, nh = max(round(w * scale), 2), max(round(h * scale), 2)
        sx, sy = nw / w, nh / h
        patch = Image.fromarray(image).resize((nw, nh), Image.BILINEAR)
        box = box * np.array([sx, sy, sx, sy], np.float32)
        points = points * np.array([sx, sy], np.float32)
        mask = _ellipse_mask(nw, nh, box, feather=0.15)
        angle = float(rng.uniform(-self.max_rotation, self.max_rotation))
        centre = np.array([(box[0] + box[2]) / 2, (box[1] + box[3]) / 2], np.float32)
        if abs(angle) > 0.5:
            patch = patch.rotate(angle, Image.BILINEAR, center=tuple(centre))
            mask = mask.rotate(angle, Image.BILINEAR, center=tuple(centre))
            t = math.radians(angle)  # PIL rotates counter-clockwise on screen (y down)
            rot = np.array([[math.cos(t), math.sin(t)], [-math.sin(t), math.cos(t)]], np.float32)
            points = (points - centre) @ rot.T + centre
        half = (box[2:] - box[:2]) / 2
        lo = -centre + half
        hi = self.size - centre - half
        if np.any(hi < lo):
            return None
        for _ in range(10):
            offset = rng.uniform(lo, hi).astype(np.float32)
            new_box = np.concatenate([centre + offset - half, centre + offset + half])
            if not taken or _max_iou(new_box, taken) < 0.1:
                break
        else:
            return None
        ox, oy = round(offset[0]), round(offset[1])
        canvas.paste(patch, (ox, oy), mask)
        shift = np.array([ox, oy], np.float32)
        new_box = np.concatenate([centre + shift - half, centre + shift + half])
        return new_box.astype(np.float32), (points + shift).astype(np.float32)

    def synthetic(self, rng: np.random.Generator) -> Scene:
        canvas = Image.fromarray(self.background(rng))
        boxes: list[np.ndarray] = []
        points: list[np.ndarray] = []
        for _ in range(int(rng.integers(1, 5))):
            placed = self.paste(canvas, rng, boxes)
            if placed is not None:
                boxes.append(placed[0])
                points.append(placed[1])
        return Scene(np.asarray(canvas), _stack(boxes, (0, 4)), _stack(points, (0, 5, 2)))

    def real(
        self, rng: np.random.Generator, item: ImageLabel | None = None, jitter: bool = True
    ) -> Scene:
        """A labelled photo fitted into the square input (randomly scaled/placed if jitter)."""
        if item is None:
            item = self.photos[int(rng.integers(len(self.photos)))]
        image = _cached_rgb(str(self.root / item.path))
        h, w = image.shape[:2]
        fit = self.size / max(h, w)
        scale = fit * (float(rng.uniform(0.35, 1.0)) if jitter else 1.0)
        nw, nh = max(round(w * scale), 1), max(round(h * scale), 1)
        ox = int(rng.integers(0, self.size - nw + 1)) if jitter else 0
        oy = int(rng.integers(0, self.size - nh + 1)) if jitter else 0
        canvas = Image.fromarray(
            self.background(rng) if jitter else np.full((self.size, self.size, 3), 128, np.uint8)
        )
        canvas.paste(Image.fromarray(image).resize((nw, nh), Image.BILINEAR), (ox, oy))
        sx, sy = nw / w, nh / h
        boxes = _stack([f.box for f in item.faces], (0, 4)) * np.array([sx, sy, sx, sy])
        boxes += np.array([ox, oy, ox, oy])
        pts = _stack([f.landmarks for f in item.faces], (0, 5, 2)) * np.array([sx, sy])
        pts += np.array([ox, oy])
        return Scene(np.asarray(canvas), boxes.astype(np.float32), pts.astype(np.float32))

    def crowd(self, rng: np.random.Generator, min_side: float = 8.0) -> Scene:
        """A window of an annotated WIDER photo around one of its faces, scaled so that face
        is 10-200 px high (log-uniform). Annotated faces under `min_side` px after scaling, cut
        to less than 60% by the window, or marked invalid become boxes to ignore."""
        item = self.crowds[int(rng.integers(len(self.crowds)))]
        image = _cached_rgb(str(self.root / item.path))
        valid = [f for f in item.faces if not f.ignore]
        face = valid[int(rng.integers(len(valid)))]
        height = max(float(face.box[3] - face.box[1]), 1.0)
        scale = math.exp(rng.uniform(math.log(10.0), math.log(200.0))) / height
        scale = min(scale, 0.85 * self.size / height, 4.0)
        warp = scale
        if scale < 0.5:  # shrink by area first: warpAffine alone would alias
            image = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
            warp = 1.0
        # the window [origin, origin + size) holds the chosen face (in scaled pixels)
        low, high = face.box[:2] * scale, face.box[2:] * scale
        first, last = high - self.size, low
        origin = rng.uniform(np.minimum(first, last), np.maximum(first, last))
        matrix = np.array([[warp, 0, -origin[0]], [0, warp, -origin[1]]], np.float32)
        canvas = cv2.warpAffine(
            image,
            matrix,
            (self.size, self.size),
            flags=cv2.INTER_LINEAR,
            borderMode=cv2.BORDER_CONSTANT,
            borderValue=(128, 128, 128),
        )
        boxes, points, ignore = [], [], []
        for f in item.faces:
            box = f.box * scale - np.tile(origin, 2)
            clipped = np.clip(box, 0, self.size)
            area = float(np.prod(np.clip(box[2:] - box[:2], 0, None)))
            seen = float(np.prod(np.clip(clipped[2:] - clipped[:2], 0, None)))
            if seen <= 0:
                continue
            small = min(box[2] - box[0], box[3] - box[1]) < min_side
            if f.ignore or small or seen < 0.6 * area:
                ignore.append(clipped)
            else:
                boxes.append(clipped)
                points.append(f.landmarks * scale - origin)
        return Scene(
            canvas,
            _stack(boxes, (0, 4)),
            _stack(points, (0, 5, 2)),
            _stack(ignore, (0, 4)),
        )

    # -- the sampler ----------------------------------------------------------------------------
    def sample(self, index: int, augment: bool = True) -> Scene:
        """Training sample `index`: real or synthetic, then colour and flip augmentation."""
        rng = np.random.default_rng((self.seed, index))
        kind = rng.random()
        if kind < self.wider_fraction:
            scene = self.crowd(rng)
        elif kind < self.wider_fraction + self.real_fraction:
            scene = self.real(rng)
        else:
            scene = self.synthetic(rng)
        if augment:
            scene = augment_scene(scene, rng)
        return scene

    def synthetic_eval(self, index: int) -> Scene:
        """Evaluation scene `index` (synthetic, no extra augmentation)."""
        return self.synthetic(np.random.default_rng((self.seed, 1_000_003, index)))


def _max_iou(box: np.ndarray, others: list[np.ndarray]) -> float:
    o = np.stack(others)
    lt = np.maximum(o[:, :2], box[:2])
    rb = np.minimum(o[:, 2:], box[2:])
    inter = np.clip(rb - lt, 0, None).prod(axis=1)
    area = lambda b: (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])  # noqa: E731
    return float((inter / (area(o) + area(box) - inter)).max())


def _stack(items: list[np.ndarray], empty: tuple[int, ...]) -> np.ndarray:
    return np.stack(items).astype(np.float32) if items else np.zeros(empty, np.float32)


def augment_scene(scene: Scene, rng: np.random.Generator) -> Scene:
    """Brightness/contrast jitter, occasional greyscale or blur, horizontal mirror."""
    img = scene.image.astype(np.float32)
    img = (img - 128) * rng.uniform(0.7, 1.3) + 128 + rng.uniform(-30, 30)
    if rng.random() < 0.15:
        img = np.repeat(img.mean(axis=2, keepdims=True), 3, axis=2)
    img = np.clip(img, 0, 255).astype(np.uint8)
    if rng.random() < 0.1:
        img = np.asarray(
            Image.fromarray(img).filter(ImageFilter.GaussianBlur(rng.uniform(0.5, 1.5)))
        )
    boxes, points, ignore = scene.boxes.copy(), scene.landmarks.copy(), scene.ignore.copy()
    if rng.random() < 0.5:
        w = img.shape[1]
        img = img[:, ::-1]
        boxes, ignore = (
            np.stack([w - b[:, 2], b[:, 1], w - b[:, 0], b[:, 3]], axis=1) for b in (boxes, ignore)
        )
        points = points[:, FLIP_ORDER]
        points[..., 0] = w - points[..., 0]
    return Scene(
        np.ascontiguousarray(img),
        boxes.astype(np.float32),
        points.astype(np.float32),
        ignore.astype(np.float32),
    )


def to_tensor_batch(scenes: list[Scene]):
    """Stack scenes into the network input (N, 3, S, S) float32, normalised as the THUNDER
    card says (the detector feeds its input the same way)."""
    import torch

    arr = THUNDER.normalization.apply(np.stack([s.image for s in scenes]))
    return torch.from_numpy(arr).permute(0, 3, 1, 2).contiguous()
