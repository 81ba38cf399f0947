"""Training of thunder's second landmark stage (:mod:`facesphere.detect.thunder.refine`).

Samples are the landmarks5 crops outside the held-out split (``crc32(name) % 10 != 0``), edge
padded by ``PAD`` px as `bench/detect.py` reads them, each with the box the trained detector
(``detector``: a weights file, else the bundled one) finds around its eyes, so the stage
learns from the boxes it will be given. Crops where the detector finds no such face are left
out. Every sample is augmented: mirror, rotation about the box centre, a low-resolution copy,
crop position and size jitter, brightness/contrast, greyscale, blur. The loss is L1 on the
points in crop-side units, AdamW with a warm-up and cosine decay.

The run folder holds ``config.yaml``, ``metrics.csv`` (one row per epoch) and ``model.pt``:
a ``facesphere-thunder`` file with the detector's weights and the new stage; ``export``
writes a float16 copy (the bundled file).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from tqdm import tqdm

from facesphere.detect.thunder.detector import ThunderDetector, resolve_weights
from facesphere.detect.thunder.model import load_model, save_model
from facesphere.detect.thunder.refine import (
    LandmarkRefiner,
    RefinerSpec,
    crop_squares,
    crops_to_tensor,
    face_crops,
)
from facesphere.errors import DataError
from facesphere.pretrained.cards import THUNDER
from facesphere.train.engine import (
    CsvLog,
    LRSchedule,
    build_optimizer,
    decay_groups,
    require_finite,
    start_run,
)
from facesphere.train.thunder.config import LandmarkTrainConfig
from facesphere.train.thunder.data import FLIP_ORDER, load_landmarks5
from facesphere.train.thunder.labels import read_rgb

PAD = 40  # px of repeated edge around each 80x80 crop: room for the detector's box
MAX_ROTATION = 15.0  # degrees
METRIC_COLUMNS = ["step", "epoch", "loss", "lr", "samples_per_s", "elapsed_s"]


@dataclass
class FaceSample:
    """One training face: its padded image, the detector's box and the five true points."""

    image: np.ndarray
    box: np.ndarray
    points: np.ndarray


@dataclass
class LandmarkTrainResult:
    """Where a run wrote its model, how many faces it learnt from, its last epoch's loss."""

    output: Path
    model_path: Path
    faces: int
    last_loss: float


def detector_samples(
    detector: ThunderDetector, root: Path, limit: int | None, progress: bool
) -> list[FaceSample]:
    """The training faces: landmarks5 crops outside the held-out split with the detector's box
    around their eyes (at most `limit` crops are read)."""
    crops = [c for c in load_landmarks5(root) if not c.held_out][:limit]
    samples = []
    for crop in tqdm(crops, desc="detector boxes", disable=not progress):
        pad = ((PAD, PAD), (PAD, PAD), (0, 0))
        image = np.pad(read_rgb(root / crop.path), pad, mode="edge")
        points = crop.points + PAD
        mid = points[:2].mean(axis=0)
        for found in detector.detect(image):
            x1, y1, x2, y2 = found.box
            if x1 < mid[0] < x2 and y1 < mid[1] < y2:
                samples.append(FaceSample(image, found.box.astype(np.float32), points))
                break
    if not samples:
        raise DataError(f"the detector found none of the {len(crops)} landmarks5 faces")
    return samples


def augmented_crop(
    sample: FaceSample, size: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """One augmented (size, size, 3) uint8 crop and its (5, 2) points in crop-side units."""
    image, box, points = sample.image, sample.box.copy(), sample.points.copy()
    h, w = image.shape[:2]
    if rng.random() < 0.5:  # mirror (pixel centres at integers, as cv2 samples them)
        image = image[:, ::-1]
        box = np.array([w - box[2], box[1], w - box[0], box[3]], np.float32)
        points = points[FLIP_ORDER]
        points[:, 0] = w - 1 - points[:, 0]
    centre = (float((box[0] + box[2]) / 2), float((box[1] + box[3]) / 2))
    turn = cv2.getRotationMatrix2D(centre, rng.uniform(-MAX_ROTATION, MAX_ROTATION), 1.0)
    image = cv2.warpAffine(
        np.ascontiguousarray(image), turn, (w, h), borderMode=cv2.BORDER_REPLICATE
    )
    points = points @ turn[:, :2].T + turn[:, 2]
    if rng.random() < 0.3:  # a low-resolution face
        f = rng.uniform(0.3, 0.9)
        small = cv2.resize(image, (max(int(w * f), 1), max(int(h * f), 1)), cv2.INTER_AREA)
        image = cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)
    x0, y0, side = crop_squares(box[None])[0]
    cx = x0 + side / 2 + rng.uniform(-0.06, 0.06) * side
    cy = y0 + side / 2 + rng.uniform(-0.06, 0.06) * side
    side *= rng.uniform(0.9, 1.1)
    square = np.array([cx - side / 2, cy - side / 2, side], np.float32)
    crop = face_crops(image, square[None], size)[0].astype(np.float32)
    crop = (crop - 128) * rng.uniform(0.7, 1.3) + 128 + rng.uniform(-25, 25)
    if rng.random() < 0.15:
        crop[:] = crop.mean(axis=2, keepdims=True)
    if rng.random() < 0.1:
        crop = cv2.GaussianBlur(crop, (3, 3), rng.uniform(0.5, 1.2))
    crop = np.clip(crop, 0, 255).astype(np.uint8)
    return crop, ((points - square[:2]) / square[2]).astype(np.float32)


def train_landmarks(config: LandmarkTrainConfig) -> LandmarkTrainResult:
    """Train the second landmark stage per `config` on the detector it names."""
    root = Path(config.data_root)
    output = start_run(config, config.output, config.threads, config.seed)
    detector = ThunderDetector(weights=config.detector, refine_landmarks=False)
    samples = detector_samples(detector, root, config.limit, config.progress)
    refiner = LandmarkRefiner(RefinerSpec(config.size, tuple(config.widths)))
    steps_per_epoch = max(len(samples) // config.batch_size, 1)
    total = config.epochs * steps_per_epoch
    optimizer = build_optimizer(
        "adamw", decay_groups(refiner, config.weight_decay), config.lr, config.weight_decay
    )
    schedule = LRSchedule(total=total, warmup=max(int(config.warmup_fraction * total), 1))
    scheduler = schedule.scheduler(optimizer)
    metrics = CsvLog(output / "metrics.csv", METRIC_COLUMNS)
    rng = np.random.default_rng(config.seed)
    refiner.train()
    t0 = time.time()
    step = 0
    loss_value = float("nan")
    bar = tqdm(range(config.epochs), disable=not config.progress, desc="train-landmarks")
    for epoch in bar:
        order = rng.permutation(len(samples))
        losses = []
        for b in range(steps_per_epoch):
            batch = order[b * config.batch_size : (b + 1) * config.batch_size]
            crops, targets = zip(
                *(augmented_crop(samples[i], config.size, rng) for i in batch), strict=True
            )
            x = crops_to_tensor(np.stack(crops), THUNDER.normalization)
            loss = (refiner(x) - torch.from_numpy(np.stack(targets))).abs().mean()
            step += 1
            require_finite(float(loss.detach()), step)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            losses.append(float(loss.detach()))
        loss_value = float(np.mean(losses))
        elapsed = time.time() - t0
        metrics.append(
            {
                "step": step,
                "epoch": epoch + 1,
                "loss": round(loss_value, 6),
                "lr": optimizer.param_groups[0]["lr"],
                "samples_per_s": round(step * config.batch_size / max(elapsed, 1e-9), 1),
                "elapsed_s": round(elapsed, 1),
            }
        )
        bar.set_postfix(loss=f"{loss_value:.4f}")
    bar.close()
    refiner.eval()
    model_path = output / "model.pt"
    # the detector's own weights, unfolded (the detector above folded its batch norms)
    model = load_model(resolve_weights(config.detector))
    save_model(model, model_path, refiner=refiner)
    if config.export:
        save_model(model, Path(config.export), half=True, refiner=refiner)
    return LandmarkTrainResult(output, model_path, len(samples), loss_value)
