"""Fit the `dlib150` alignment template to the chips `dlib.get_face_chip_details` makes.

dlib places its 150x150 chip (padding 0.25) by a similarity transform from the five landmarks
of its shape predictor; this script finds, by least squares over a sample of photos, the five
chip positions that reproduce dlib's chip geometry, and prints them with the worst residual
(the corners of the chip, in image pixels). facesphere.align.templates.DLIB_150 holds the result.

    python bench/fit_dlib_chip.py --images 40
"""

from __future__ import annotations

import argparse

import dlib
import numpy as np
from scipy.optimize import least_squares

from facesphere.align import DLIB_150, estimate_similarity, transform_points
from facesphere.io.data import data_dir
from facesphere.io.image import load_image
from facesphere.pretrained.cards import DLIB_SHAPE5
from facesphere.pretrained.files import card_file

SIZE, PADDING = 150, 0.25


def rotate(centre: np.ndarray, point: tuple[float, float], angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    dx, dy = point[0] - centre[0], point[1] - centre[1]
    return centre + np.array([c * dx - s * dy, s * dx + c * dy])


def sample_faces(count: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """(landmarks, dlib chip corners in the image) for `count` celeba299 faces."""
    detector = dlib.get_frontal_face_detector()
    predictor = dlib.shape_predictor(str(card_file(DLIB_SHAPE5)))
    files = sorted((data_dir() / "celeba299").glob("*/*.jpg"))[::50]
    samples = []
    for path in files:
        image = load_image(path)
        found = detector(image, 1)
        if not found:
            continue
        shape = predictor(image, found[0])
        points = np.array([(p.x, p.y) for p in shape.parts()], float)
        details = dlib.get_face_chip_details(shape, SIZE, PADDING)
        r = details.rect
        centre = np.array([(r.left() + r.right()) / 2, (r.top() + r.bottom()) / 2])
        corners = np.array(
            [
                rotate(centre, (r.left(), r.top()), details.angle),
                rotate(centre, (r.right(), r.top()), details.angle),
                rotate(centre, (r.left(), r.bottom()), details.angle),
            ]
        )
        samples.append((points, corners))
        if len(samples) == count:
            break
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=40)
    args = parser.parse_args()
    samples = sample_faces(args.images)
    chip_corners = np.array([[0, 0], [SIZE - 1, 0], [0, SIZE - 1]], float)

    def residuals(flat: np.ndarray) -> np.ndarray:
        template = flat.reshape(5, 2)
        out = []
        for points, corners in samples:
            chip_to_image = estimate_similarity(template, points)
            out.append((transform_points(chip_to_image, chip_corners) - corners).ravel())
        return np.concatenate(out)

    start = DLIB_150.as_array().ravel()
    fit = least_squares(residuals, start)
    print(
        f"{len(samples)} faces; worst corner residual: "
        f"start {np.abs(residuals(start)).max():.3f} px, "
        f"fitted {np.abs(fit.fun).max():.3f} px"
    )
    for x, y in fit.x.reshape(5, 2):
        print(f"({x:.4f}, {y:.4f}),")


if __name__ == "__main__":
    main()
