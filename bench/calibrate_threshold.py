"""Choose the default verification threshold on development data (celeba299, never LFW).

Draws same/different pairs from celeba299 in 10 identity-disjoint folds, embeds every image
with the default pipeline with and without flip averaging (one detection and alignment per
image, the chip and its mirror embedded together), and reports for both: 10-fold accuracy,
the threshold of best accuracy on all pairs and its false-accept / false-reject rates.

    python bench/calibrate_threshold.py --pairs-per-class 100 --json out/bench/threshold.json
"""

from __future__ import annotations

import argparse
import json
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from facesphere.eval.metrics import auc, best_threshold, eer, kfold_accuracy, roc_curve, tar_at_far
from facesphere.eval.pairs import sample_pairs
from facesphere.io.data import data_dir
from facesphere.pipeline.analyzer import FaceAnalyzer
from facesphere.recognize.base import l2_normalize

_analyzer: FaceAnalyzer | None = None


def _embed_both(path: str) -> tuple[str, np.ndarray, np.ndarray, bool]:
    global _analyzer
    if _analyzer is None:
        torch.set_num_threads(1)
        _analyzer = FaceAnalyzer(flip=False)
    image = _analyzer.load(path)
    faces = _analyzer.detect(image)
    found = bool(faces)
    face = faces[0] if found else _analyzer.centre_face(image)
    chip = _analyzer.align(image, [face])
    plain, mirrored = _analyzer.recognizer.embed_chips(np.concatenate([chip, chip[:, :, ::-1]]))
    return path, plain, l2_normalize(plain + mirrored), found


def report(scores: np.ndarray, labels: np.ndarray, folds: np.ndarray) -> dict:
    kfold = kfold_accuracy(scores, labels, folds)
    curve = roc_curve(scores, labels)
    threshold = best_threshold(scores, labels)
    decided = scores >= threshold
    return {
        "accuracy_mean": kfold.mean,
        "accuracy_std": kfold.std,
        "auc": auc(curve),
        "eer": eer(curve),
        "tar_at_far": {"0.001": tar_at_far(curve, 1e-3), "0.01": tar_at_far(curve, 1e-2)},
        "threshold": threshold,
        "far_at_threshold": float(decided[~labels].mean()),
        "frr_at_threshold": float((~decided[labels]).mean()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs-per-class", type=int, default=100, help="per fold")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    pairs = sample_pairs(data_dir() / "celeba299", args.pairs_per_class, seed=args.seed)
    paths = sorted({str(p.path_a) for p in pairs} | {str(p.path_b) for p in pairs})
    with ProcessPoolExecutor(args.workers, mp_context=get_context("spawn")) as pool:
        results = list(
            tqdm(pool.map(_embed_both, paths, chunksize=8), total=len(paths), desc="embedding")
        )
    plain = {path: vector for path, vector, _, _ in results}
    flipped = {path: vector for path, _, vector, _ in results}
    labels = np.array([p.same for p in pairs])
    folds = np.array([p.fold for p in pairs])
    rows = {}
    for name, table in (("no flip", plain), ("flip averaging", flipped)):
        scores = np.array([float(table[str(p.path_a)] @ table[str(p.path_b)]) for p in pairs])
        rows[name] = report(scores, labels, folds)
    no_face = sum(1 for *_, found in results if not found)
    print(f"celeba299: {len(pairs)} pairs, {len(paths)} images, {no_face} without a detected face")
    print(
        f"{'embedding':<16} {'10-fold acc':>16} {'AUC':>7} {'EER':>7} {'threshold':>10} "
        f"{'FAR':>7} {'FRR':>7}"
    )
    for name, row in rows.items():
        print(
            f"{name:<16} {row['accuracy_mean'] * 100:>8.2f} +- {row['accuracy_std'] * 100:.2f} "
            f"{row['auc']:>7.4f} {row['eer']:>7.4f} {row['threshold']:>10.4f} "
            f"{row['far_at_threshold']:>7.4f} {row['frr_at_threshold']:>7.4f}"
        )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(
            json.dumps(
                {"pairs": len(pairs), "images": len(paths), "no_face": no_face, "results": rows},
                indent=2,
            )
            + "\n"
        )


if __name__ == "__main__":
    main()
