"""LFW View 2 (6,000 pairs, 10 folds) with facesphere's detector x recognizer combinations,
side by side with the `face_recognition` package (ageitgey) on the same pairs, in the same run.

Prints a table of 10-fold accuracy, AUC, TAR@FAR, images without a face, wall time, and the
per-stage CPU time per face (decode, detect, landmarks, embed) measured single-process on a
sample of images; writes the same as JSON with --json. Embeddings go through the shared cache
(a fused recognizer's are fused from its members'), so a second run costs little.

    python bench/lfw.py --json out/bench/lfw.json              # every combination, 6,000 pairs
    python bench/lfw.py --limit 60 --pipelines yunet:sface     # 600 pairs, one pipeline

The peer needs `pip install --no-deps face_recognition==1.3.0` and `setuptools<81` (its models
package imports pkg_resources): `make bench-env` installs both.
"""

from __future__ import annotations

import argparse
import json
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import torch

from facesphere.eval.metrics import auc, kfold_accuracy, roc_curve, tar_at_far
from facesphere.eval.pairs import first_per_fold, read_lfw_pairs
from facesphere.eval.verification import evaluate_pairs
from facesphere.io.data import data_dir
from facesphere.io.image import load_image
from facesphere.pipeline.analyzer import FaceAnalyzer

PIPELINES = (
    "cnn:dlib-resnet",
    "yunet:dlib-resnet",
    "yunet:sface",
    "yunet:dlib-resnet+sface",
    "retinaface:sface",
    "retinaface:dlib-resnet+sface",
)


def stage_times_ours(paths: list[Path], config: dict) -> dict[str, float]:
    """CPU milliseconds per face for each stage, one process, one thread (landmarks: the
    landmark model's time where the pipeline runs one beside the detector)."""
    analyzer = FaceAnalyzer(**config)
    analyzer.recognizer  # noqa: B018 - models load before the clock starts
    analyzer.landmarker  # noqa: B018
    totals = dict.fromkeys(("decode", "detect", "landmarks", "embed"), 0.0)
    faces_done = 0
    for path in paths:
        t0 = time.process_time()
        image = load_image(path)
        t1 = time.process_time()
        detections = analyzer.detector.detect(image)
        t2 = time.process_time()
        if not detections:
            continue
        faces = analyzer.detect(image)[:1]  # detection again, plus any landmark model
        t3 = time.process_time()
        analyzer.embed_chips(*analyzer.align(image, faces))
        t4 = time.process_time()
        landmarks = (t3 - t2) - (t2 - t1)  # the second pass less its detection
        for key, value in zip(totals, (t1 - t0, t2 - t1, landmarks, t4 - t3)):
            totals[key] += value
        faces_done += 1
    return {k: 1000 * v / max(faces_done, 1) for k, v in totals.items()}


def stage_times_peer(paths: list[Path]) -> dict[str, float]:
    import face_recognition
    import face_recognition.api as fr_api

    totals = dict.fromkeys(("decode", "detect", "landmarks", "embed"), 0.0)
    faces_done = 0
    for path in paths:
        t0 = time.process_time()
        image = face_recognition.load_image_file(path)
        t1 = time.process_time()
        locations = face_recognition.face_locations(image, 1, "hog")
        t2 = time.process_time()
        if not locations:
            continue
        landmarks = fr_api._raw_face_landmarks(image, locations[:1], "small")
        t3 = time.process_time()
        np.array(fr_api.face_encoder.compute_face_descriptor(image, landmarks[0], 1))
        t4 = time.process_time()
        for key, value in zip(totals, (t1 - t0, t2 - t1, t3 - t2, t4 - t3)):
            totals[key] += value
        faces_done += 1
    return {k: 1000 * v / max(faces_done, 1) for k, v in totals.items()}


def peer_encode(path: str) -> tuple[str, np.ndarray, bool]:
    """face_recognition's encoding: HOG (upsample 1), whole photo as the face if none found."""
    import face_recognition

    image = face_recognition.load_image_file(path)
    locations = face_recognition.face_locations(image, 1, "hog")
    found = bool(locations)
    if not found:
        locations = [(0, image.shape[1], image.shape[0], 0)]
    encoding = face_recognition.face_encodings(image, locations[:1])[0]
    return path, encoding, found


def run_peer(pairs: list, workers: int) -> dict:
    paths = sorted({str(p.path_a) for p in pairs} | {str(p.path_b) for p in pairs})
    start = time.perf_counter()
    with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
        results = list(pool.map(peer_encode, paths, chunksize=8))
    seconds = time.perf_counter() - start
    encodings = {path: enc for path, enc, _ in results}
    no_face = sum(1 for _, _, found in results if not found)
    # face_recognition compares by Euclidean distance: a smaller distance means more alike.
    scores = np.array(
        [-np.linalg.norm(encodings[str(p.path_a)] - encodings[str(p.path_b)]) for p in pairs]
    )
    labels = np.array([p.same for p in pairs])
    folds = np.array([p.fold for p in pairs])
    kfold = kfold_accuracy(scores, labels, folds)
    curve = roc_curve(scores, labels)
    return {
        "accuracy_mean": kfold.mean,
        "accuracy_std": kfold.std,
        "auc": auc(curve),
        "tar_at_far": {"0.001": tar_at_far(curve, 1e-3), "0.01": tar_at_far(curve, 1e-2)},
        "no_face": no_face,
        "images": len(paths),
        "seconds": seconds,
    }


def save(path: Path | None, pairs: list, rows: dict) -> None:
    """Write what has been measured so far (after each pipeline, so a crash loses little)."""
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"pairs": len(pairs), "results": rows}, indent=2) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--limit", type=int, help="pairs per fold (default: all 600)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument(
        "--pipelines", default=",".join(PIPELINES), help="comma-separated detector:recognizer"
    )
    parser.add_argument("--timing-images", type=int, default=100)
    parser.add_argument("--skip-peer", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)  # stage timings are per core; the pools use one thread per worker

    lfw = data_dir() / "lfw"
    pairs = read_lfw_pairs(lfw / "pairs.txt", lfw / "images")
    if args.limit:
        pairs = first_per_fold(pairs, args.limit)
    sample = sorted({p.path_a for p in pairs})[: args.timing_images]
    rows: dict[str, dict] = {}
    configs = []
    for pipeline in args.pipelines.split(","):
        detector, recognizer = pipeline.split(":")
        configs.append((pipeline, {"detector": detector, "recognizer": recognizer, "flip": True}))
    for name, config in configs:
        analyzer_config = FaceAnalyzer(**config, threshold=0.5).config
        report = evaluate_pairs(pairs, analyzer_config, args.workers).to_dict()
        rows[name] = report
        save(args.json, pairs, rows)  # the accuracy is kept even if the timing below fails
        report["stage_ms_per_face"] = stage_times_ours(sample, config)
        print(f"done: {name}", flush=True)
        save(args.json, pairs, rows)
    if not args.skip_peer:
        peer = run_peer(pairs, args.workers)
        peer["stage_ms_per_face"] = stage_times_peer(sample)
        rows["face_recognition 1.3 (hog)"] = peer
        save(args.json, pairs, rows)

    header = (
        f"{'pipeline':<30} {'accuracy':>16} {'AUC':>7} {'TAR@1e-3':>9} {'TAR@1e-2':>9} "
        f"{'no face':>8} {'wall s':>7} {'decode':>7} {'detect':>7} {'landm.':>7} {'embed':>7} "
        f"{'total ms':>8}"
    )
    print(
        f"\nLFW View 2: {len(pairs)} pairs, {args.workers} worker processes; "
        f"stage CPU ms per face on {len(sample)} images, one process"
    )
    print(header)
    for name, row in rows.items():
        stages = row["stage_ms_per_face"]
        print(
            f"{name:<30} {row['accuracy_mean'] * 100:>8.2f} +- {row['accuracy_std'] * 100:.2f} "
            f"{row['auc']:>7.4f} {row['tar_at_far']['0.001']:>9.4f} "
            f"{row['tar_at_far']['0.01']:>9.4f} "
            f"{row['no_face']:>8d} {row['seconds']:>7.0f} "
            + " ".join(f"{stages[k]:>7.1f}" for k in ("decode", "detect", "landmarks", "embed"))
            + f" {sum(stages.values()):>8.1f}"
        )
    peer_name = "face_recognition 1.3 (hog)"
    if peer_name in rows:
        for name, row in rows.items():
            if name != peer_name:
                speed = sum(rows[peer_name]["stage_ms_per_face"].values()) / sum(
                    row["stage_ms_per_face"].values()
                )
                gain = row["accuracy_mean"] - rows[peer_name]["accuracy_mean"]
                print(
                    f"{name}: accuracy {gain:+.4f} vs face_recognition; "
                    f"CPU time per face ratio (peer/ours) {speed:.2f}"
                )
    save(args.json, pairs, rows)


if __name__ == "__main__":
    main()
