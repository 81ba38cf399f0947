"""Similarity transforms from landmarks (Umeyama 1991) and affine warping of images."""

from __future__ import annotations

import numpy as np


def estimate_similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity (rotation, uniform scale, translation) mapping `src` to `dst`.

    `src` and `dst` are (N, 2) point sets, N >= 2. Returns the 2x3 matrix M with
    dst ~ M[:, :2] @ src + M[:, 2]. Reflections are excluded (Umeyama's sign correction).
    """
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    if src.shape != dst.shape or src.ndim != 2 or src.shape[1] != 2 or src.shape[0] < 2:
        raise ValueError(f"need two (N, 2) point sets with N >= 2, got {src.shape} and {dst.shape}")
    mean_src = src.mean(axis=0)
    mean_dst = dst.mean(axis=0)
    src_c = src - mean_src
    dst_c = dst - mean_dst
    variance = (src_c**2).sum() / len(src)
    if variance <= 1e-12:
        raise ValueError("source points are all the same; no transform is defined")
    covariance = dst_c.T @ src_c / len(src)
    u, singular, vt = np.linalg.svd(covariance)
    sign = np.eye(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        sign[1, 1] = -1.0
    rotation = u @ sign @ vt
    scale = float(np.trace(np.diag(singular) @ sign) / variance)
    translation = mean_dst - scale * rotation @ mean_src
    return np.hstack([scale * rotation, translation[:, None]])


def invert_affine(matrix: np.ndarray) -> np.ndarray:
    """Inverse of a 2x3 affine matrix."""
    full = np.vstack([np.asarray(matrix, dtype=np.float64), [0.0, 0.0, 1.0]])
    return np.linalg.inv(full)[:2]


def transform_points(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Apply a 2x3 affine matrix to (N, 2) points."""
    points = np.asarray(points, dtype=np.float64)
    return points @ matrix[:, :2].T + matrix[:, 2]


def warp_affine(image: np.ndarray, matrix: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Warp `image` (H, W, C) uint8 into an output of `size` = (width, height).

    `matrix` maps input pixel coordinates to output pixel coordinates (pixel centres at integer
    positions). Sampling is bilinear; pixels that fall outside the input are black.
    """
    width, height = size
    if width <= 0 or height <= 0:
        raise ValueError(f"output size must be positive, got {size}")
    inverse = invert_affine(matrix)
    xs, ys = np.meshgrid(np.arange(width, dtype=np.float64), np.arange(height, dtype=np.float64))
    src_x = inverse[0, 0] * xs + inverse[0, 1] * ys + inverse[0, 2]
    src_y = inverse[1, 0] * xs + inverse[1, 1] * ys + inverse[1, 2]
    return _sample_bilinear(image, src_x, src_y)


def _sample_bilinear(image: np.ndarray, src_x: np.ndarray, src_y: np.ndarray) -> np.ndarray:
    squeeze = image.ndim == 2
    data = image[:, :, None] if squeeze else image
    rows, cols = data.shape[:2]
    inside = (src_x >= 0) & (src_y >= 0) & (src_x <= cols - 1) & (src_y <= rows - 1)
    x0 = np.clip(np.floor(src_x), 0, max(cols - 2, 0)).astype(np.int64)
    y0 = np.clip(np.floor(src_y), 0, max(rows - 2, 0)).astype(np.int64)
    x1 = np.minimum(x0 + 1, cols - 1)
    y1 = np.minimum(y0 + 1, rows - 1)
    fx = np.clip(src_x - x0, 0.0, 1.0)[..., None]
    fy = np.clip(src_y - y0, 0.0, 1.0)[..., None]
    pixels = data.astype(np.float32)
    top = pixels[y0, x0] * (1 - fx) + pixels[y0, x1] * fx
    bottom = pixels[y1, x0] * (1 - fx) + pixels[y1, x1] * fx
    out = top * (1 - fy) + bottom * fy
    out[~inside] = 0.0
    result = np.clip(out + 0.5, 0, 255).astype(np.uint8)
    return result[:, :, 0] if squeeze else result
