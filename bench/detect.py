"""Face detectors side by side on real face boxes (WIDER FACE), with speed and agreement rows.

Every detector registered (`list_detectors()`: cnn (MMOD, torch engine), hog, retinaface,
thunder, yunet) and the variants in VARIANTS (`thunder:upsample=1`: thunder asked for faces from
8 px; `thunder:refine_landmarks=false`: thunder's points from its R-CNN head rather than its
second landmark stage), in one run, on the same photos:

* AP at IoU 0.5 on the shared WIDER FACE subset (`facesphere.eval.wider`): its fixed ``dev``
  split (65 photos) and all 260 photos, overall and by ground-truth face height (<16, 16-32,
  32-64, >=64 px), with the number of counted faces per column. Rules: `detection_ap` in
  `facesphere.eval.metrics` (greedy matching by score, all-point interpolation, WIDER's
  invalid boxes ignored, out-of-bucket faces and unmatched out-of-bucket detections ignored).
  Detectors run with a low score threshold (LOW_THRESHOLDS) so that the precision-recall curve
  is complete, and otherwise as configured by default (their own NMS and input size).
* images/s of detect() at 320x320, 640x480 and 1920x1080 (WIDER dev photos centre-cropped to
  the aspect ratio and resized), default options, torch threads as given, after two warm-up
  calls: 1 / median wall seconds per call, and the median CPU ms per call (process time of
  all threads, which other jobs on the machine disturb less than wall time).
* Agreement rows, not accuracy: AP at IoU 0.5 against the teachers' labels (`yunet` and
  `retinaface` fused, as `facesphere detector-labels` makes them) on held-out celeba299/ORL
  photos (labelled inside this run unless --labels names a file), AP on held-out synthetic
  scenes (faces pasted at known boxes), and the landmark NME (mean point error over the
  inter-ocular distance) on held-out landmarks5 crops of every detector that gives five points.

yunet and retinaface were trained on WIDER FACE's training split, from which all 260 photos
come: their WIDER AP here is optimistic (seen data). thunder is trained on the subset's train
part only, so its dev AP is on photos it never saw and its "all photos" AP is optimistic too.

    python bench/detect.py --json out/bench/detect.json
    python bench/detect.py --limit 8 --json /tmp/d.json     # smoke run
    python bench/detect.py --parts speed                     # only the speed table

Nothing from an earlier run is read: the teacher labels of the agreement rows are made here
(a few minutes on 2 cores for the 763 held-out photos), unless --labels gives a file.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
import yaml
from PIL import Image

from facesphere.detect import DETECTORS, create_detector, list_detectors
from facesphere.eval.metrics import HEIGHT_BUCKETS, detection_ap
from facesphere.eval.wider import WiderImage, load_wider_subset, wider_split, wider_subset_dir
from facesphere.io.data import data_dir
from facesphere.train.thunder.data import SceneMaker, box_from_eyes, load_landmarks5
from facesphere.train.thunder.labels import label_photos, load_labels, read_rgb
from facesphere.video.tracker import iou_matrix

# faces of 32 px and up together: the range the default detector's target is set on
COMBINED_BUCKETS = {">=32": (32.0, math.inf)}

# option -> value for "keep nearly everything": probabilities for the networks, dlib's
# adjust/threshold for MMOD and HOG (on four WIDER photos MMOD gave 2-6 windows each at -1,
# 548-628 at -2)
LOW_THRESHOLDS = {"score_threshold": 0.02, "adjust_threshold": -1.0, "threshold": -1.0}
SPEED_SIZES = ((320, 320), (640, 480), (1920, 1080))
# beside every registered detector at its defaults: thunder asked for faces from 8 px, and thunder
# with the R-CNN head's landmarks instead of its second landmark stage (same boxes)
VARIANTS = ["thunder:upsample=1", "thunder:refine_landmarks=false"]
LABELS = {"cnn": "cnn (MMOD, torch)"}
NOTES = [
    "yunet and retinaface were trained on the WIDER FACE training split, and these 260 photos "
    "come from that split, so their AP here is optimistic (seen data); thunder is trained on the "
    "subset's train part only: its dev AP is on unseen photos.",
    "Agreement rows compare with the teachers' labels (yunet and retinaface fused): agreement, "
    "not accuracy; the teachers score against their own labels there.",
]

Found = tuple[np.ndarray, np.ndarray]


def run(detector, image: np.ndarray) -> Found:
    """(boxes (D, 4) float32, scores (D,) float32) of one detect() call."""
    dets = detector.detect(image)
    boxes = np.array([d.box for d in dets], np.float32).reshape(-1, 4)
    return boxes, np.array([d.score for d in dets], np.float32)


def parse_variant(entry: str) -> tuple[str, dict]:
    """`name` or `name:key=value:key=value` (e.g. ``thunder:upsample=1``) -> (name, options);
    values are read as YAML (numbers, booleans)."""
    name, *pairs = entry.split(":")
    options = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise SystemExit(f"--detectors: {entry!r}: expected key=value after the name")
        options[key] = yaml.safe_load(value)
    return name, options


def detector_options(entry: str, low: bool) -> dict:
    """The options to build detector `entry` (a `parse_variant` string) with: CPU, its own
    options, and with `low` its score threshold lowered."""
    name, extra = parse_variant(entry)
    accepted = DETECTORS.options(name)
    options: dict = {"device": "cpu"} if "device" in accepted else {}
    if low:
        options.update({k: v for k, v in LOW_THRESHOLDS.items() if k in accepted})
    return {**options, **extra}


def resized(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """`image` centre-cropped to the aspect ratio width:height and resized to it."""
    h, w = image.shape[:2]
    if w * height > h * width:  # too wide: crop the sides
        cw, ch = round(h * width / height), h
    else:
        cw, ch = w, round(w * height / width)
    x0, y0 = (w - cw) // 2, (h - ch) // 2
    crop = Image.fromarray(image[y0 : y0 + ch, x0 : x0 + cw])
    return np.asarray(crop.resize((width, height), Image.BILINEAR))


def speed(detector, images: list[np.ndarray], warmup: int = 2) -> dict[str, float]:
    """detect() over `images` after `warmup` calls: images/s as 1 / median wall seconds per
    call, and the median CPU milliseconds per call (all threads; steadier on a busy machine)."""
    for k in range(warmup):
        detector.detect(images[k % len(images)])
    wall, cpu = [], []
    for image in images:
        start, start_cpu = time.perf_counter(), time.process_time()
        detector.detect(image)
        wall.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    return {
        "images_per_s": 1.0 / statistics.median(wall),
        "cpu_ms_per_image": 1000.0 * statistics.median(cpu),
    }


def wider_scores(found: list[Found], images: list[WiderImage]) -> dict[str, dict]:
    """AP at IoU 0.5 overall and per height bucket, with the counted faces of each."""
    truth = [im.boxes for im in images]
    ignore = [im.invalid for im in images]
    out = {}
    for bucket, bounds in [("all", None), *HEIGHT_BUCKETS.items(), *COMBINED_BUCKETS.items()]:
        res = detection_ap(found, truth, ignore, 0.5, bounds)
        out[bucket] = {
            "ap50": res.ap,
            "faces": res.positives,
            "true_positives": res.true_positives,
            "false_positives": res.false_positives,
        }
    return out


def landmark_nme(detector, crops, geometry) -> tuple[float, int, int]:
    """(mean NME, crops with a matched face, crops) on landmarks5 crops."""
    errors = []
    for crop in crops:
        img = np.pad(read_rgb(data_dir() / crop.path), ((40, 40), (40, 40), (0, 0)), mode="edge")
        pts = crop.points + 40
        ref = box_from_eyes(pts, geometry)
        found = detector.detect(img)
        if not found:
            continue
        iou = iou_matrix(ref[None], np.stack([d.box for d in found]))[0]
        j = int(np.argmax(iou))
        if iou[j] < 0.3 or found[j].landmarks is None:
            continue
        iod = float(np.linalg.norm(pts[0] - pts[1]))
        errors.append(float(np.linalg.norm(found[j].landmarks - pts, axis=1).mean()) / iod)
    return (float(np.mean(errors)) if errors else float("nan"), len(errors), len(crops))


def agreement_sets(args, limit: int | None):
    """Held-out teacher-labelled photos (images, boxes), synthetic scenes, landmark crops
    and the eye-to-box geometry, built in this run (no file of an earlier run needed)."""
    root = data_dir()
    start = time.perf_counter()
    if args.labels:
        labels = [item for item in load_labels(Path(args.labels)) if item.held_out]
        if limit is not None:
            labels = labels[: 2 * limit]
    else:
        labels = label_photos(root, limit=limit, progress=False, held_out=True)
    step = max(len(labels) // args.real_limit, 1)
    real = labels[::step][: args.real_limit]
    images = [read_rgb(root / item.path) for item in real]
    truth = [np.array([f.box for f in item.faces], np.float32).reshape(-1, 4) for item in real]
    crops = [c for c in load_landmarks5(root) if c.held_out][: args.landmark_limit]
    maker = SceneMaker(root, labels, crops, held_out=True, seed=12345)
    scenes = [maker.synthetic_eval(i) for i in range(args.synthetic)]
    print(
        f"agreement sets: {len(labels)} held-out photos teacher-labelled "
        f"({'from ' + args.labels if args.labels else 'in this run'}, "
        f"{time.perf_counter() - start:.0f} s); {len(real)} scored "
        f"({sum(len(t) for t in truth)} faces), {len(scenes)} synthetic scenes "
        f"({sum(len(s.boxes) for s in scenes)} faces), {len(crops)} landmarks5 crops",
        flush=True,
    )
    return (images, truth), scenes, crops, maker.geometry


def finite(value):
    """`value` with every NaN replaced by None (JSON has no NaN)."""
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite(v) for v in value]
    if isinstance(value, float) and np.isnan(value):
        return None
    return value


def fmt(value: float, digits: int = 3) -> str:
    return "-" if value is None or np.isnan(value) else f"{value:.{digits}f}"


def print_table(title: str, header: list[str], rows: list[list[str]]) -> None:
    print(f"\n{title}")
    print("| " + " | ".join(header) + " |")
    print("|---" * len(header) + "|")
    for row in rows:
        print("| " + " | ".join(row) + " |")


PARTS = ("wider", "speed", "agreement")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, default=None, help="write every number here")
    parser.add_argument(
        "--detectors",
        default=None,
        help="comma list of NAME or NAME:key=value:... (default: all, and VARIANTS)",
    )
    parser.add_argument("--limit", type=int, default=None, help="first N dev photos (smoke)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--parts", default=",".join(PARTS), help="comma list of: " + ", ".join(PARTS)
    )
    parser.add_argument("--weights", default=None, help="thunder weights (default: bundled)")
    parser.add_argument("--speed-images", type=int, default=8, help="photos timed per size")
    parser.add_argument("--labels", default=None, help="label file to reuse (optional)")
    parser.add_argument("--real-limit", type=int, default=300)
    parser.add_argument("--synthetic", type=int, default=200)
    parser.add_argument("--landmark-limit", type=int, default=300)
    args = parser.parse_args()
    parts = set(args.parts.split(","))
    if parts - set(PARTS):
        parser.error(f"unknown --parts {sorted(parts - set(PARTS))}; known: {', '.join(PARTS)}")
    torch.set_num_threads(args.threads)
    load = os.getloadavg()
    names = args.detectors.split(",") if args.detectors else [*list_detectors(), *VARIANTS]
    limit = args.limit
    if limit is not None:
        args.real_limit = min(args.real_limit, limit)
        args.synthetic = min(args.synthetic, limit)
        args.landmark_limit = min(args.landmark_limit, limit)
        args.speed_images = min(args.speed_images, limit)

    root = wider_subset_dir()
    train, dev = wider_split(load_wider_subset())
    if limit is not None:
        dev, train = dev[:limit], train[:limit]
    photos = sorted(dev + train, key=lambda im: im.name)
    dev_index = [photos.index(im) for im in dev]
    speed_photos = [read_rgb(im.path(root)) for im in dev[: args.speed_images]]
    speed_sets = {f"{w}x{h}": [resized(p, w, h) for p in speed_photos] for w, h in SPEED_SIZES}
    print(
        f"WIDER subset: {len(photos)} photos ({len(dev)} dev), "
        f"{sum(int((~im.invalid).sum()) for im in photos)} valid faces; speed on "
        f"{len(speed_photos)} dev photos per size; torch.set_num_threads({args.threads}); "
        f"parts {', '.join(p for p in PARTS if p in parts)}",
        flush=True,
    )
    agreement = agreement_sets(args, limit) if "agreement" in parts else None

    results: dict[str, dict] = {}
    for name in names:
        options = detector_options(name, low=True)
        fast_options = detector_options(name, low=False)
        base = parse_variant(name)[0]
        if base == "thunder" and args.weights:
            options["weights"] = fast_options["weights"] = args.weights
        detector = create_detector(base, **options)
        row: dict = {"options": options}
        if "wider" in parts:
            start = time.perf_counter()
            found = [run(detector, read_rgb(im.path(root))) for im in photos]
            row["wider_seconds"] = time.perf_counter() - start
            row["wider_dev"] = wider_scores([found[i] for i in dev_index], dev)
            row["wider_all"] = wider_scores(found, photos)
            print(
                f"{name}: dev AP50 {fmt(row['wider_dev']['all']['ap50'])}, all AP50 "
                f"{fmt(row['wider_all']['all']['ap50'])}, WIDER pass "
                f"{row['wider_seconds']:.0f} s",
                flush=True,
            )
        if "speed" in parts:
            fast = create_detector(base, **fast_options)
            row["speed_options"] = fast_options
            row["speed"] = {size: speed(fast, ims) for size, ims in speed_sets.items()}
        if agreement is not None:
            (real_images, real_truth), scenes, crops, geometry = agreement
            row["agreement"] = {
                "ap50_teacher_labels": detection_ap(
                    [run(detector, im) for im in real_images], real_truth
                ).ap,
                "ap50_synthetic": detection_ap(
                    [run(detector, s.image) for s in scenes], [s.boxes for s in scenes]
                ).ap,
            }
            # every detector that gives five points (thunder, yunet, retinaface), same crops
            nme, matched, total = landmark_nme(detector, crops, geometry)
            row["agreement"]["landmark_nme"] = nme
            row["agreement"]["landmark_faces_found"] = matched / max(total, 1)
        results[name] = row
    end_load = os.getloadavg()

    if "wider" in parts:
        buckets = ["all", *HEIGHT_BUCKETS, *COMBINED_BUCKETS]
        for key, title in (("wider_dev", "WIDER dev split"), ("wider_all", "WIDER, all photos")):
            counts = results[names[0]][key]
            header = ["detector"] + [f"AP50 {b} ({counts[b]['faces']} faces)" for b in buckets]
            rows = [
                [LABELS.get(n, n)] + [fmt(results[n][key][b]["ap50"]) for b in buckets]
                for n in names
            ]
            count = len(dev) if key == "wider_dev" else len(photos)
            print_table(
                f"{title} ({count} photos), AP at IoU 0.5 by face height (px)", header, rows
            )
    if "speed" in parts:
        sizes = list(speed_sets)
        print_table(
            f"detect() images/s (median CPU ms per image), default options, "
            f"torch.set_num_threads({args.threads}), load average {load[0]:.1f} at start, "
            f"{end_load[0]:.1f} at the end",
            ["detector", *sizes],
            [
                [LABELS.get(n, n)]
                + [
                    f"{fmt(results[n]['speed'][s]['images_per_s'], 1)} "
                    f"({results[n]['speed'][s]['cpu_ms_per_image']:.0f})"
                    for s in sizes
                ]
                for n in names
            ],
        )
    if agreement is not None:
        keys = ["ap50_teacher_labels", "ap50_synthetic", "landmark_nme"]
        print_table(
            "Agreement with the teachers' labels, not accuracy (held-out celeba299/ORL, "
            "synthetic scenes, landmarks5)",
            ["detector", *keys],
            [
                [LABELS.get(n, n)]
                + [fmt(results[n]["agreement"].get(k, float("nan"))) for k in keys]
                for n in names
            ],
        )
    print()
    for note in NOTES:
        print(f"* {note}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        summary = {
            "command": " ".join(["python", *sys.argv]),
            "parts": [p for p in PARTS if p in parts],
            "threads": args.threads,
            "load_average": {"start": load[0], "end": end_load[0]},
            "limit": limit,
            "photos": {"dev": len(dev), "all": len(photos)},
            "low_thresholds": LOW_THRESHOLDS,
            "notes": NOTES,
            "detectors": results,
        }
        args.json.write_text(json.dumps(finite(summary), indent=2, default=float))


if __name__ == "__main__":
    main()
