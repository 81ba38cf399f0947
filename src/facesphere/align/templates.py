"""Canonical landmark positions that faces are aligned to."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from facesphere.align.similarity import estimate_similarity, warp_affine


@dataclass(frozen=True)
class AlignmentTemplate:
    """Target landmark coordinates in a crop of `size` = (width, height) pixels.

    `scheme` names the landmark set the points belong to: `dlib5` (outer and inner corner of
    the image-right eye, outer and inner corner of the image-left eye, bottom of the nose; the
    order of dlib's 5-point shape predictor) or `standard5` (left eye centre, right eye
    centre, nose tip, left and right mouth corner, in image coordinates).
    """

    name: str
    scheme: str
    size: tuple[int, int]
    points: tuple[tuple[float, float], ...]

    def as_array(self) -> np.ndarray:
        return np.asarray(self.points, dtype=np.float64)


# The ArcFace / insightface 112x112 five-point template.
STANDARD_112 = AlignmentTemplate(
    name="standard112",
    scheme="standard5",
    size=(112, 112),
    points=(
        (38.2946, 51.6963),
        (73.5318, 51.5014),
        (56.0252, 71.7366),
        (41.5493, 92.3655),
        (70.7299, 92.2041),
    ),
)

# dlib's 150x150 face chip (size 150, padding 0.25), which its ResNet recognizer expects. The
# points were fitted by least squares to the chip geometry `dlib.get_face_chip_details` gives
# for 40 celeba299 faces (chip corners within 0.3 px of dlib's), see bench/fit_dlib_chip.py.
DLIB_150 = AlignmentTemplate(
    name="dlib150",
    scheme="dlib5",
    size=(150, 150),
    points=(
        (110.7489, 45.4367),
        (88.8452, 47.6454),
        (36.4665, 45.5816),
        (58.0771, 47.7037),
        (73.3923, 87.2395),
    ),
)

TEMPLATES = {template.name: template for template in (STANDARD_112, DLIB_150)}


def dlib5_to_standard5(points: np.ndarray) -> np.ndarray:
    """Approximate standard five points from dlib's five: eye centres from the corner pairs,
    the nose from dlib's nose base; mouth corners cannot be derived and are returned as NaN."""
    points = np.asarray(points, dtype=np.float64)
    image_right_eye = points[0:2].mean(axis=0)
    image_left_eye = points[2:4].mean(axis=0)
    nan = np.full(2, np.nan)
    return np.stack([image_left_eye, image_right_eye, points[4], nan, nan])


def align_face(
    image: np.ndarray,
    landmarks: np.ndarray,
    template: AlignmentTemplate,
    size: tuple[int, int] | None = None,
) -> np.ndarray:
    """Warp the face with `landmarks` (in `template.scheme`) onto `template`.

    `size` (width, height) scales the template to another crop size. Landmarks given as NaN are
    left out of the fit (at least two must remain).
    """
    landmarks = np.asarray(landmarks, dtype=np.float64)
    target = template.as_array()
    out_size = size or template.size
    if out_size != template.size:
        target = target * np.array([out_size[0] / template.size[0], out_size[1] / template.size[1]])
    if landmarks.shape != target.shape:
        raise ValueError(
            f"template {template.name} needs {len(target)} landmarks, got {landmarks.shape}"
        )
    valid = np.isfinite(landmarks).all(axis=1)
    matrix = estimate_similarity(landmarks[valid], target[valid])
    return warp_affine(*_antialias(image, matrix), out_size)


def align_to_template(
    image: np.ndarray, landmarks: np.ndarray, scheme: str | None, template: AlignmentTemplate
) -> np.ndarray:
    """The chip of the face with `landmarks` in landmark `scheme`, aligned to `template`.

    dlib5 points are converted to standard5 (:func:`dlib5_to_standard5`) for a standard5
    template; any other scheme that is not the template's is a ValueError.
    """
    if scheme != template.scheme:
        if scheme != "dlib5" or template.scheme != "standard5":
            raise ValueError(f"cannot align {scheme} landmarks to {template.name}")
        landmarks = dlib5_to_standard5(landmarks)
    return align_face(image, landmarks, template)


def _antialias(image: np.ndarray, matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """When the warp shrinks by more than 2x, box-filter the image down by an integer factor
    first (bilinear sampling alone would alias) and adjust the matrix to the smaller image."""
    scale = float(np.sqrt(abs(np.linalg.det(matrix[:, :2]))))
    factor = int(1.0 / scale) if scale > 0 else 1
    if factor < 2:
        return image, matrix
    reduced = np.asarray(Image.fromarray(image).reduce(factor))
    adjusted = matrix.copy()
    adjusted[:, :2] = matrix[:, :2] * factor
    adjusted[:, 2] = matrix[:, :2] @ np.full(2, (factor - 1) / 2.0) + matrix[:, 2]
    return reduced, adjusted
