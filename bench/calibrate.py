"""Calibrate every shipped recognizer's thresholds on celeba299 (development data, never LFW).

Embeds the central face of every celeba299 photo with `--detector` (the default pipeline's)
and each single recognizer (flip averaging on; cached), keeps the photos where the detector
found a face (thresholds decide between detected faces), scores every pair of them (genuine:
one person; impostor: two) and reports for each recognizer the cosine threshold at FAR 1e-1
down to 1e-6 with the FRR there. For `dlib-resnet+sface` it first chooses the fusion weight
(lowest mean FRR at FAR 1e-3 and 1e-4 over a 0.05 grid). Then it checks the open-set
identification thresholds the cards derive from these points (FPIR 1% for a gallery of N):
galleries of N people (one photo each) drawn from the even-numbered identities, strangers
= every photo of the odd-numbered ones, measured FPIR against the target.

Labelling errors are left out: copies of one picture (both recognizers at cosine >= 0.99 /
0.95) and every pair between two identities that share a copy (one person filed twice in
CelebA); the numbers of each are printed.

    python bench/calibrate.py --json out/bench/calibrate.json
    python bench/calibrate.py --write        # also regenerate facesphere/pretrained/calibrations.py
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from facesphere.cards import Calibration
from facesphere.defaults import DEFAULT_DETECTOR
from facesphere.eval.calibration import (
    CALIBRATED_FARS,
    choose_fusion_weight,
    labelling_errors,
    measured_fpir,
    operating_points,
    pair_scores,
)
from facesphere.eval.verification import embed_main_faces
from facesphere.io.data import data_dir
from facesphere.paths import facesphere_home
from facesphere.pipeline.analyzer import FaceAnalyzer

MODULE = Path(__file__).resolve().parents[1] / "src/facesphere/pretrained/calibrations.py"
SINGLE = ("dlib-resnet", "sface")
FUSED = "dlib-resnet+sface"
DATASET = "celeba299 (all pairs of {photos} photos with a {detector} face, labelling errors out)"
GALLERY_SIZES = (10, 30, 100, 149)


def celeba_photos() -> tuple[list[Path], np.ndarray]:
    """Every celeba299 photo and its person's index (people sorted by folder name)."""
    people = sorted(p for p in (data_dir() / "celeba299").iterdir() if p.is_dir())
    paths, labels = [], []
    for index, person in enumerate(people):
        for path in sorted(person.glob("*.jpg")):
            paths.append(path)
            labels.append(index)
    return paths, np.array(labels)


def embeddings(
    paths: list[Path], detector: str, recognizer: str, workers: int
) -> tuple[np.ndarray, np.ndarray]:
    """Unit embeddings (N, D) of the central face of each photo (the centre crop when no face
    is detected), through the shared embedding cache, and whether a face was detected."""
    config = FaceAnalyzer(detector=detector, recognizer=recognizer, flip=True).config
    cache = facesphere_home() / "cache" / "embeddings.sqlite"
    faces, unreadable = embed_main_faces(paths, config, workers, "centre", cache, True, "central")
    if unreadable:
        raise SystemExit(f"{len(unreadable)} photos could not be embedded: {unreadable[:3]}")
    detected = np.array([faces[p].source == "detector" for p in paths])
    return np.stack([faces[p].embedding for p in paths]), detected


def identification_check(
    vectors: np.ndarray,
    labels: np.ndarray,
    calibration: Calibration,
    ignore: np.ndarray,
    seed: int = 0,
) -> list[dict]:
    """Measured FPIR at the threshold each gallery size gets (target: the default FPIR)."""
    people = np.unique(labels)
    members, strangers = people[0::2], people[1::2]
    stranger_rows = np.flatnonzero(np.isin(labels, strangers))
    rng = np.random.default_rng(seed)
    rows = []
    for size in GALLERY_SIZES:
        fpirs = []
        threshold = calibration.identification(size)
        for _ in range(20):  # 20 random galleries of `size` people, one random photo each
            chosen = rng.choice(members, size, replace=False)
            gallery = [rng.choice(np.flatnonzero(labels == person)) for person in chosen]
            fpirs.append(
                measured_fpir(vectors[gallery], vectors[stranger_rows], threshold.value)[0]
            )
        rows.append(
            {
                "gallery_size": size,
                "threshold": threshold.value,
                "far_per_comparison": threshold.far,
                "fpir_target": threshold.fpir,
                "fpir_measured": float(np.mean(fpirs)),
                "strangers": len(stranger_rows),
            }
        )
    return rows


def literal(calibration: Calibration) -> str:
    """Python source of a Calibration."""
    points = "\n".join(
        f"        OperatingPoint({p.far:g}, {p.threshold:.4f}, {p.frr:.4f}),"
        for p in calibration.points
    )
    return (
        "Calibration(\n"
        f"    dataset={calibration.dataset!r},\n"
        f"    points=(\n{points}\n    ),\n"
        f"    genuine_pairs={calibration.genuine_pairs},\n"
        f"    impostor_pairs={calibration.impostor_pairs},\n"
        f"    note={calibration.note!r},\n"
        ")"
    )


def write_module(calibrations: dict[str, Calibration], weight: float, command: str) -> None:
    names = {
        "dlib-resnet": "DLIB_RESNET_CALIBRATION",
        "sface": "SFACE_CALIBRATION",
        FUSED: "DLIB_RESNET_SFACE_CALIBRATION",
    }
    body = "\n\n".join(f"{names[k]} = {literal(v)}" for k, v in calibrations.items())
    MODULE.write_text(
        '"""Measured operating points of the shipped recognizers (see facesphere.cards).\n\n'
        f"Written by `{command}`; run it again rather than editing by hand.\n"
        '"""\n\n'
        "from facesphere.cards import Calibration, OperatingPoint\n\n"
        "# dlib-resnet's weight in dlib-resnet+sface (sface has the rest)\n"
        f"DLIB_RESNET_SFACE_WEIGHT = {weight:.2f}\n\n{body}\n"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--detector", default=DEFAULT_DETECTOR)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--write", action="store_true", help=f"regenerate {MODULE.name}")
    args = parser.parse_args()

    paths, labels = celeba_photos()
    embedded = {name: embeddings(paths, args.detector, name, args.workers) for name in SINGLE}
    # thresholds decide between detected faces: photos without one are left out
    detected = np.logical_and.reduce([found for _, found in embedded.values()])
    labels = labels[detected]
    vectors = {name: v[detected] for name, (v, _) in embedded.items()}
    similarity = {name: v @ v.T for name, v in vectors.items()}
    copies = (similarity["dlib-resnet"] >= 0.99) & (similarity["sface"] >= 0.95)
    ignore = labelling_errors(copies, labels)
    weight, tried = choose_fusion_weight(
        similarity["dlib-resnet"], similarity["sface"], labels, ignore=ignore
    )
    similarity[FUSED] = weight * similarity["dlib-resnet"] + (1 - weight) * similarity["sface"]
    vectors[FUSED] = np.concatenate(
        [np.sqrt(weight) * vectors["dlib-resnet"], np.sqrt(1 - weight) * vectors["sface"]], 1
    )
    dataset = DATASET.format(photos=f"{int(detected.sum()):,}", detector=args.detector)
    upper = np.triu(np.ones_like(ignore), 1)
    left_out = {
        "copies": int((np.triu(copies, 1)).sum()),
        "pairs_left_out": int((ignore & upper).sum()),
    }
    calibrations = {}
    report = {
        "photos": len(paths),
        "with_a_face": int(detected.sum()),
        "people": len(np.unique(labels)),
        "left_out": left_out,
    }
    report["fusion"] = {"weight_dlib_resnet": weight, "mean_frr_by_weight": tried}
    for name, matrix in similarity.items():
        genuine, impostor = pair_scores(matrix, labels, ignore)
        points = operating_points(genuine, impostor, CALIBRATED_FARS)
        note = f"fusion weight {weight:.2f} for dlib-resnet" if name == FUSED else ""
        calibration = Calibration(dataset, points, len(genuine), len(impostor), note=note)
        calibrations[name] = calibration
        report[name] = {
            "points": [p.__dict__ for p in points],
            "identification": identification_check(vectors[name], labels, calibration, ignore),
        }

    print(
        f"celeba299: {len(paths)} photos, {report['with_a_face']} with a face found by "
        f"{args.detector} (the others left out), {report['people']} people"
    )
    print(
        f"left out: {left_out['copies']} pairs of copies of one picture; "
        f"{left_out['pairs_left_out']} pairs in all with the identities that share a copy"
    )
    print(f"fusion weight of dlib-resnet: {weight:.2f} (mean FRR at FAR 1e-3/1e-4 by weight:)")
    print("  " + "  ".join(f"{w:.2f}:{frr:.4f}" for w, frr in tried.items()))
    print(f"\n{'recognizer':<20} {'FAR':>7} {'threshold':>9} {'FRR':>7}")
    for name, calibration in calibrations.items():
        for point in calibration.points:
            print(f"{name:<20} {point.far:>7g} {point.threshold:>9.4f} {point.frr:>7.4f}")
    header = f"{'gallery N':>9} {'threshold':>9} {'FPIR target':>11} {'measured':>8}"
    print(f"\n{'recognizer':<20} {header}")
    for name in calibrations:
        for row in report[name]["identification"]:
            print(
                f"{name:<20} {row['gallery_size']:>9d} {row['threshold']:>9.4f} "
                f"{row['fpir_target']:>11.3f} {row['fpir_measured']:>8.4f}"
            )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    if args.write:
        write_module(calibrations, weight, "python bench/calibrate.py --write")
        subprocess.run([sys.executable, "-m", "ruff", "format", "-q", str(MODULE)], check=False)
        print(f"wrote {MODULE}")


if __name__ == "__main__":
    main()
