"""Face detectors side by side: ThunderNet (`thunder`), MMOD (`cnn`, torch) and HOG (`hog`).

Measured in one run, per detector:

* ``ap50_real``: AP at IoU 0.5 on held-out pseudo-labelled photos (celeba299/ORL identities
  of the held-out split; ground truth = MMOD boxes, so MMOD is scored against its own labels,
  except that ORL was labelled with one upsampling and MMOD runs here without);
* ``ap50_synthetic``: AP at IoU 0.5 on held-out synthetic scenes (exact boxes);
* ``lfw_recall``: share of LFW photos (evenly spaced sample) with a detection whose centre lies
  within 15% of the image size of the image centre and whose width is 25-90% of the image;
* ``images_per_s_320``: detect() calls per second on 320x320 scenes, torch threads as given;
* ``landmark_nme`` (thunder only): mean point error over inter-ocular distance on held-out
  landmarks5 crops (edge-padded to 160x160; faces the detector misses are counted apart).

    python bench/detect.py --lfw-limit 500 --json out/thunder/bench.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from facesphere.detect import create_detector
from facesphere.io.data import data_dir
from facesphere.train.thunder.data import SceneMaker, box_from_eyes, load_landmarks5
from facesphere.train.thunder.labels import load_labels, read_rgb


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(-1)
    area = lambda x: (x[:, 2] - x[:, 0]) * (x[:, 3] - x[:, 1])  # noqa: E731
    return inter / (area(a)[:, None] + area(b)[None] - inter)


def average_precision(
    found: list[tuple[np.ndarray, np.ndarray]], truth: list[np.ndarray], thr: float = 0.5
) -> float:
    """All-point interpolated AP; `found` holds (boxes, scores) per image."""
    total = sum(len(t) for t in truth)
    rows = []
    for img, (boxes, scores) in enumerate(found):
        for box, score in zip(boxes, scores, strict=True):
            rows.append((score, img, box))
    rows.sort(key=lambda r: -r[0])
    used = [np.zeros(len(t), bool) for t in truth]
    tp = np.zeros(len(rows))
    for k, (_, img, box) in enumerate(rows):
        gt = truth[img]
        if len(gt):
            iou = iou_matrix(box[None], gt)[0]
            iou[used[img]] = -1
            j = int(np.argmax(iou))
            if iou[j] >= thr:
                used[img][j] = True
                tp[k] = 1
    if total == 0:
        return float("nan")
    cum_tp = np.cumsum(tp)
    recall = cum_tp / total
    precision = cum_tp / np.arange(1, len(rows) + 1)
    r = np.concatenate([[0.0], recall, [recall[-1] if len(recall) else 0.0]])
    p = np.concatenate([[1.0], precision, [0.0]])
    p = np.maximum.accumulate(p[::-1])[::-1]
    return float(np.sum((r[1:] - r[:-1]) * p[1:]))


def run(detector, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    dets = detector.detect(image)
    boxes = np.array([d.box for d in dets], np.float32).reshape(-1, 4)
    return boxes, np.array([d.score for d in dets], np.float32)


def lfw_sample(limit: int) -> list[Path]:
    paths = sorted((data_dir() / "lfw" / "images").glob("*/*.jpg"))
    idx = np.linspace(0, len(paths) - 1, min(limit, len(paths))).round().astype(int)
    return [paths[i] for i in idx]


def lfw_hit(boxes: np.ndarray, h: int, w: int) -> bool:
    for x1, y1, x2, y2 in boxes:
        cx, cy, bw = (x1 + x2) / 2, (y1 + y2) / 2, x2 - x1
        near = abs(cx - w / 2) <= 0.15 * w and abs(cy - h / 2) <= 0.15 * h
        if near and 0.25 * w <= bw <= 0.9 * w:
            return True
    return False


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
        boxes = np.stack([d.box for d in found])
        iou = iou_matrix(ref[None], boxes)[0]
        j = int(np.argmax(iou))
        if iou[j] < 0.3:
            continue
        iod = float(np.linalg.norm(pts[0] - pts[1]))
        errors.append(float(np.linalg.norm(found[j][1] - pts, axis=1).mean()) / iod)
    return (float(np.mean(errors)) if errors else float("nan"), len(errors), len(crops))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--labels", default="out/thunder/pseudo_labels.json")
    parser.add_argument("--detectors", default="thunder,cnn,hog")
    parser.add_argument("--weights", default=None, help="thunder weights (default: bundled)")
    parser.add_argument("--lfw-limit", type=int, default=500)
    parser.add_argument("--real-limit", type=int, default=300)
    parser.add_argument("--synthetic", type=int, default=200)
    parser.add_argument("--landmark-limit", type=int, default=300)
    parser.add_argument("--speed-images", type=int, default=40)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    root = data_dir()
    labels = load_labels(Path(args.labels))
    held = [item for item in labels if item.held_out]
    step = max(len(held) // args.real_limit, 1)
    real = held[::step][: args.real_limit]
    real_images = [read_rgb(root / item.path) for item in real]
    real_truth = [np.array([f.box for f in item.faces], np.float32).reshape(-1, 4) for item in real]
    crops = [c for c in load_landmarks5(root) if c.held_out][: args.landmark_limit]
    maker = SceneMaker(root, labels, crops, held_out=True, seed=12345)
    scenes = [maker.synthetic_eval(i) for i in range(args.synthetic)]
    lfw = lfw_sample(args.lfw_limit)
    print(
        f"real held-out photos {len(real)} ({sum(len(t) for t in real_truth)} faces), "
        f"synthetic scenes {len(scenes)} ({sum(len(s.boxes) for s in scenes)} faces), "
        f"LFW photos {len(lfw)}, landmarks5 crops {len(crops)}"
    )
    results: dict[str, dict[str, float]] = {}
    for name in args.detectors.split(","):
        kwargs: dict = {"device": "cpu"}
        if name == "thunder":
            kwargs.update(weights=args.weights, score_threshold=0.05)
        detector = create_detector(name, **kwargs)
        row: dict[str, float] = {}
        row["ap50_real"] = average_precision([run(detector, im) for im in real_images], real_truth)
        row["ap50_synthetic"] = average_precision(
            [run(detector, s.image) for s in scenes], [s.boxes for s in scenes]
        )
        hits = 0
        for path in lfw:
            img = read_rgb(path)
            boxes, scores = run(detector, img)
            if name == "thunder":
                boxes = boxes[scores >= 0.5]
            hits += lfw_hit(boxes, *img.shape[:2])
        row["lfw_recall"] = hits / max(len(lfw), 1)
        speed_set = [s.image for s in scenes[: args.speed_images]]
        for im in speed_set[:3]:
            detector.detect(im)
        t = time.perf_counter()
        for im in speed_set:
            detector.detect(im)
        row["images_per_s_320"] = len(speed_set) / (time.perf_counter() - t)
        if name == "thunder":
            nme, matched, total = landmark_nme(detector, crops, maker.geometry)
            row["landmark_nme"] = nme
            row["landmark_faces_found"] = matched / max(total, 1)
        results[name] = row
        print(name, json.dumps({k: round(v, 4) for k, v in row.items()}), flush=True)
    keys = ["ap50_real", "ap50_synthetic", "lfw_recall", "images_per_s_320", "landmark_nme"]
    print("\n| detector | " + " | ".join(keys) + " |")
    print("|---" * (len(keys) + 1) + "|")
    for name, row in results.items():
        cells = [f"{row[k]:.4f}" if k in row else "-" for k in keys]
        print(f"| {name} | " + " | ".join(cells) + " |")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"threads": args.threads, "detectors": results}, indent=2))


if __name__ == "__main__":
    main()
