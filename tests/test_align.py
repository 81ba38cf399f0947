"""Alignment: the similarity estimate and the warp."""

from __future__ import annotations

import numpy as np
import pytest

from facesphere.align import (
    DLIB_150,
    STANDARD_112,
    align_face,
    estimate_similarity,
    transform_points,
    warp_affine,
)


def _similarity(scale: float, angle: float, tx: float, ty: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[scale * c, -scale * s, tx], [scale * s, scale * c, ty]])


@pytest.mark.parametrize("seed", range(5))
def test_recovers_a_known_similarity_exactly(seed: int) -> None:
    rng = np.random.default_rng(seed)
    truth = _similarity(rng.uniform(0.3, 3), rng.uniform(-np.pi, np.pi), *rng.uniform(-50, 50, 2))
    src = rng.uniform(0, 200, size=(int(rng.integers(2, 9)), 2))
    estimated = estimate_similarity(src, transform_points(truth, src))
    np.testing.assert_allclose(estimated, truth, atol=1e-9)


def test_least_squares_with_noise_and_no_reflection() -> None:
    rng = np.random.default_rng(7)
    truth = _similarity(1.7, 0.4, 10, -5)
    src = rng.uniform(0, 100, size=(50, 2))
    dst = transform_points(truth, src) + rng.normal(0, 0.5, size=(50, 2))
    estimated = estimate_similarity(src, dst)
    np.testing.assert_allclose(estimated[:, :2], truth[:, :2], atol=0.01)
    np.testing.assert_allclose(estimated[:, 2], truth[:, 2], atol=0.3)
    mirrored = src * np.array([-1.0, 1.0])
    m = estimate_similarity(src, mirrored)
    assert np.linalg.det(m[:, :2]) > 0  # a reflection is never returned


def test_bad_point_sets_are_refused() -> None:
    with pytest.raises(ValueError, match="point sets"):
        estimate_similarity(np.zeros((3, 2)), np.zeros((4, 2)))
    with pytest.raises(ValueError, match="all the same"):
        estimate_similarity(np.ones((3, 2)), np.zeros((3, 2)))


def test_warp_puts_a_bright_dot_where_the_transform_sends_it() -> None:
    image = np.zeros((100, 120, 3), np.uint8)
    image[30, 40] = 255
    matrix = _similarity(2.0, np.pi / 2, 150, 10)
    out = warp_affine(image, matrix, (200, 260))
    expected = transform_points(matrix, np.array([[40.0, 30.0]]))[0]
    peak = np.unravel_index(np.argmax(out[:, :, 0]), out.shape[:2])
    assert abs(peak[1] - expected[0]) <= 1 and abs(peak[0] - expected[1]) <= 1


def test_warp_identity_and_translation_are_exact() -> None:
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, size=(40, 50, 3), dtype=np.uint8)
    np.testing.assert_array_equal(warp_affine(image, _similarity(1, 0, 0, 0), (50, 40)), image)
    shifted = warp_affine(image, _similarity(1, 0, -5, -3), (40, 30))
    np.testing.assert_array_equal(shifted, image[3:33, 5:45])


@pytest.mark.parametrize("template", [STANDARD_112, DLIB_150])
def test_aligned_landmarks_land_on_the_template(template) -> None:
    canvas = np.zeros((400, 400, 3), np.uint8)
    truth = _similarity(2.3, 0.3, 60, 40)
    landmarks = transform_points(truth, template.as_array())
    for x, y in landmarks:
        canvas[round(y) - 1 : round(y) + 2, round(x) - 1 : round(x) + 2] = 255
    chip = align_face(canvas, landmarks, template)
    assert chip.shape == (*template.size[::-1], 3)
    for tx, ty in template.as_array():
        patch = chip[round(ty) - 1 : round(ty) + 2, round(tx) - 1 : round(tx) + 2, 0]
        assert patch.max() > 60, f"no bright mark near ({tx:.1f}, {ty:.1f})"
    # A chip of another size is the template scaled.
    assert align_face(canvas, landmarks, template, size=(56, 56)).shape == (56, 56, 3)


def test_align_refuses_the_wrong_number_of_landmarks() -> None:
    with pytest.raises(ValueError, match="needs 5 landmarks"):
        align_face(np.zeros((50, 50, 3), np.uint8), np.zeros((68, 2)), STANDARD_112)


def test_large_faces_are_antialiased_and_still_land_on_the_template() -> None:
    # A face 8x larger than the chip on a fine checkerboard: plain bilinear sampling would
    # alias the pattern into strong stripes, a box-filtered reduction averages it to grey.
    size = 1200
    checker = ((np.indices((size, size)).sum(axis=0) % 2) * 255).astype(np.uint8)
    canvas = np.repeat(checker[:, :, None], 3, axis=2)
    truth = _similarity(8.0, 0.0, 0, 0)
    landmarks = transform_points(truth, STANDARD_112.as_array())
    chip = align_face(canvas, landmarks, STANDARD_112)
    assert abs(float(chip.mean()) - 127.5) < 10
    assert chip.std() < 20
