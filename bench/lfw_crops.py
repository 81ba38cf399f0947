"""Cache LFW's pair images as 112x112 crops once, so many models can be scored cheaply.

    python bench/lfw_crops.py --mode center --out out/lfw_center.npz
    python bench/lfw_crops.py --mode aligned --per-fold 60 --out out/lfw_aligned_60.npz

``center`` takes the same central crop as the trainer's ``data.kind: center_crop`` (no
alignment); ``aligned`` detects (HOG), finds dlib's five points and aligns to the standard
112x112 template exactly as ``facesphere prepare`` does, falling back to a centre face when
nothing is detected. ``--per-fold N`` keeps the first N/2 same and N/2 different pairs of each
fold (600, the default, is the full View 2 protocol). The npz holds ``images`` (N, 112, 112, 3)
uint8, ``pairs`` (P, 2) indices into it, ``same`` (P,) and ``fold`` (P,).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

MODES = ("center", "aligned")


def crop_images(paths: list[Path], mode: str, fraction: float = 0.5) -> np.ndarray:
    """(N, 112, 112, 3) uint8 crops of `paths` in `mode` (``center`` or ``aligned``)."""
    from facesphere.io.image import load_image
    from facesphere.train.data import center_crop

    if mode == "center":
        return np.stack([center_crop(load_image(p), fraction) for p in paths])
    if mode != "aligned":
        raise ValueError(f"unknown mode {mode!r}; choose one of {', '.join(MODES)}")
    from facesphere.align.templates import STANDARD_112, align_to_template
    from facesphere.pipeline.analyzer import FaceAnalyzer

    analyzer = FaceAnalyzer(detector="hog")
    crops = []
    for path in paths:
        image = analyzer.load(path)
        face = (analyzer.detect(image) or [analyzer.centre_face(image)])[0]
        crops.append(align_to_template(image, face.landmarks, face.landmark_scheme, STANDARD_112))
    return np.stack(crops)


def build(lfw: Path, mode: str, per_fold: int) -> dict[str, np.ndarray]:
    """Crops of the images used by the (first `per_fold` per fold) LFW pairs, and the pairs."""
    from facesphere.eval.pairs import first_per_fold, read_lfw_pairs

    pairs = read_lfw_pairs(lfw / "pairs.txt", lfw / "images")
    if per_fold < 600:
        pairs = first_per_fold(pairs, per_fold)
    paths = sorted({p.path_a for p in pairs} | {p.path_b for p in pairs})
    where = {path: i for i, path in enumerate(paths)}
    return {
        "images": crop_images(paths, mode),
        "paths": np.array([str(p.relative_to(lfw)) for p in paths]),
        "pairs": np.array([(where[p.path_a], where[p.path_b]) for p in pairs], dtype=np.int64),
        "same": np.array([p.same for p in pairs], dtype=bool),
        "fold": np.array([p.fold for p in pairs], dtype=np.int64),
    }


def load_or_build(out: Path, lfw: Path, mode: str, per_fold: int) -> dict[str, np.ndarray]:
    """The cached crops at `out`, built first when missing."""
    if not out.is_file():
        out.parent.mkdir(parents=True, exist_ok=True)
        started = time.perf_counter()
        data = build(lfw, mode, per_fold)
        np.savez(out, **data)
        print(f"cached {len(data['images'])} crops in {time.perf_counter() - started:.0f} s")
    with np.load(out) as blob:
        return {key: blob[key] for key in blob.files}


def main() -> None:
    """Command line entry point."""
    from facesphere.io.data import data_dir

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mode", choices=MODES, default="center")
    parser.add_argument("--per-fold", type=int, default=600, help="pairs per fold (600: all)")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--lfw", type=Path, default=None, help="LFW folder (pairs.txt, images/)")
    args = parser.parse_args()
    lfw = args.lfw or data_dir() / "lfw"
    out = args.out or Path("out") / f"lfw_{args.mode}_{args.per_fold}.npz"
    data = load_or_build(out, lfw, args.mode, args.per_fold)
    print(f"{out}: {len(data['images'])} images, {len(data['pairs'])} pairs")


if __name__ == "__main__":
    main()
