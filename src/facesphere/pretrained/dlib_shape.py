"""dlib's 5-point shape predictor (cascade of regression trees), vectorised with numpy.

Each cascade level (i) fits a similarity transform from the mean shape to the current shape
estimate, (ii) places the level's feature pixels (anchor landmark + delta, transformed, then
mapped from the unit square to the face box), rounds them to the nearest pixel and reads their
grey value (``(r + g + b) // 3`` like dlib's rgb -> unsigned char assignment; 0 outside the
image), and (iii) runs every tree of the level (each split compares the difference of two
feature pixels to a threshold) and adds the reached leaves' shape offsets. All faces and all
trees of a level are processed at once.

Boxes use dlib's rectangle convention: (left, top, right, bottom) with right/bottom inclusive,
i.e. width = right - left + 1; the unit square maps (0, 0) to (left, top) and (1, 1) to
(right, bottom).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from facesphere.pretrained.cards import DLIB_SHAPE5
from facesphere.pretrained.dlib_format import ShapePredictorData, load_shape_predictor
from facesphere.pretrained.weight_cache import ConvertedWeights, load_converted


def _round_half_up(x: np.ndarray) -> np.ndarray:
    return np.floor(x + 0.5)


def _similarity_2x2(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Linear part of the least-squares similarity transform src (P,2) -> dst (N,P,2)."""
    src = src.astype(np.float64)
    dst = dst.astype(np.float64)
    ms = src.mean(axis=0)
    md = dst.mean(axis=1, keepdims=True)
    s0 = src - ms
    d0 = dst - md
    sigma_src = (s0**2).sum(axis=1).mean()
    cov = np.einsum("npi,pj->nij", d0, s0) / src.shape[0]
    u, d, vt = np.linalg.svd(cov)
    s = np.ones((len(dst), 2))
    flip = np.linalg.det(cov) < 0
    flip |= (np.linalg.det(cov) == 0) & (np.linalg.det(u) * np.linalg.det(vt) < 0)
    smaller_second = d[:, 1] < d[:, 0]
    s[flip & smaller_second, 1] = -1
    s[flip & ~smaller_second, 0] = -1
    rot = np.einsum("nij,nj,njk->nik", u, s, vt)
    scale = (d * s).sum(axis=1) / sigma_src if sigma_src != 0 else np.ones(len(dst))
    return rot * scale[:, None, None]


def rgb_to_dlib_grey(image: np.ndarray) -> np.ndarray:
    """Grey levels as dlib assigns rgb_pixel to unsigned char: (r + g + b) // 3."""
    image = np.asarray(image)
    if image.ndim == 2:
        return image.astype(np.float32)
    return (image[..., :3].astype(np.uint16).sum(axis=-1) // 3).astype(np.float32)


class ShapeCascade:
    """dlib's shape predictor (a regression-tree cascade) evaluated in batch over faces.

    `predict` returns landmark positions rounded to whole pixels like dlib (its
    full_object_detection stores integer points); pass ``subpixel=True`` for the unrounded
    positions.
    """

    def __init__(self, data: ShapePredictorData) -> None:
        self.data = data
        self.num_parts = data.initial_shape.shape[0]
        leaves = data.leaf_values.shape[2]
        self.depth = round(float(np.log2(leaves)))
        if 2**self.depth != leaves:
            raise ValueError("shape predictor trees must be complete binary trees")

    def predict(self, image: np.ndarray, boxes: np.ndarray, subpixel: bool = False) -> np.ndarray:
        """Landmarks (N, P, 2) float32 (x, y) for RGB uint8 `image` and (N, 4) dlib boxes."""
        boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        grey = rgb_to_dlib_grey(image)
        h, w = grey.shape
        n = len(boxes)
        if n == 0:
            return np.zeros((0, self.num_parts, 2), np.float32)
        rect = _round_half_up(boxes)
        origin = rect[:, None, :2]  # (N,1,2)
        extent = (rect[:, 2:] - rect[:, :2])[:, None, :]  # (N,1,2)
        d = self.data
        init = d.initial_shape
        shape = np.broadcast_to(init, (n, *init.shape)).astype(np.float32).copy()
        rows = np.arange(n)[:, None]
        flat_grey = grey.reshape(-1)
        for level in range(d.anchor_idx.shape[0]):
            m = _similarity_2x2(init, shape).astype(np.float32)  # (N,2,2)
            local = np.einsum("nij,fj->nfi", m, d.deltas[level]) + shape[:, d.anchor_idx[level]]
            pix = _round_half_up(origin + extent * local.astype(np.float64))
            px = pix[..., 0].astype(np.int64)
            py = pix[..., 1].astype(np.int64)
            inside = (px >= 0) & (px < w) & (py >= 0) & (py < h)
            values = np.where(
                inside, flat_grey[np.clip(py, 0, h - 1) * w + np.clip(px, 0, w - 1)], np.float32(0)
            ).astype(np.float32)  # (N,F)
            i1, i2, thr = d.split_idx1[level], d.split_idx2[level], d.split_thresh[level]
            trees = np.arange(i1.shape[0])[None, :]
            node = np.zeros((n, i1.shape[0]), np.int64)
            for _ in range(self.depth):
                diff = values[rows, i1[trees, node]] - values[rows, i2[trees, node]]
                node = np.where(diff > thr[trees, node], 2 * node + 1, 2 * node + 2)
            leaf = node - i1.shape[1]
            # dlib adds the trees' outputs one after the other in float32; a running sum
            # reproduces that rounding (feature pixels are rounded, so it matters).
            steps = np.concatenate([shape[:, None], d.leaf_values[level][trees, leaf]], axis=1)
            shape = np.cumsum(steps, axis=1, dtype=np.float32)[:, -1]
        out = origin + extent * shape.astype(np.float64)
        if not subpixel:
            out = _round_half_up(out)
        return out.astype(np.float32)


def convert_shape_predictor(path: Path) -> ConvertedWeights:
    """The arrays of the shape predictor file at `path`."""
    return ConvertedWeights({}, dict(vars(load_shape_predictor(path))))


def load_dlib_shape5() -> ShapeCascade:
    """dlib's 5-point shape predictor, through the weight cache."""
    return load_converted(
        DLIB_SHAPE5,
        convert_shape_predictor,
        lambda converted: ShapeCascade(ShapePredictorData(**converted.arrays)),
    )
