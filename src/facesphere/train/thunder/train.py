"""Training loop for the ThunderNet face detector.

A run folder holds ``config.yaml``, ``metrics.csv`` (one row per ``log_every`` steps),
``checkpoints/last.pt`` (model, optimizer, scheduler, RNG states, step) and, at the end,
``model.pt`` (weights + architecture only, the file the ``thunder`` detector loads).
Samples depend only on (seed, index), so a resumed run sees the same data as an unbroken one.
"""

from __future__ import annotations

import csv
import math
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from tqdm import tqdm

from facesphere.detect.thunder.model import (
    CHECKPOINT_FORMAT,
    MODEL_FORMAT,
    ProposalSettings,
    ThunderFace,
    ThunderSpec,
)
from facesphere.train.thunder.config import DetectorTrainConfig
from facesphere.train.thunder.data import SceneMaker, load_landmarks5, to_tensor_batch
from facesphere.train.thunder.labels import ImageLabel, load_labels
from facesphere.train.thunder.loss import LossSettings, detection_loss

LOSS_NAMES = ("total", "rpn_cls", "rpn_box", "rcnn_cls", "rcnn_box", "landmark")
METRIC_COLUMNS = ["step", *LOSS_NAMES, "lr", "images_per_s", "elapsed_s"]


@dataclass
class DetectorTrainResult:
    """Where a run wrote its files and its last smoothed loss."""

    output: Path
    model_path: Path
    steps: int
    last_loss: float


def spec_from_config(config: DetectorTrainConfig) -> ThunderSpec:
    return ThunderSpec(
        config.backbone, config.input_size, tuple(config.anchor_scales), tuple(config.anchor_ratios)
    )


def lr_factor(config: DetectorTrainConfig, step: int) -> float:
    """Linear warmup to 1, then cosine down to min_lr / lr."""
    if step < config.warmup_steps:
        return (step + 1) / config.warmup_steps
    span = max(config.steps - config.warmup_steps, 1)
    t = min((step - config.warmup_steps) / span, 1.0)
    floor = config.min_lr / config.lr
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * t))


def _optimizer(config: DetectorTrainConfig, model: ThunderFace) -> torch.optim.Optimizer:
    decay = [p for n, p in model.named_parameters() if p.ndim > 1]
    rest = [p for n, p in model.named_parameters() if p.ndim <= 1]
    groups = [
        {"params": decay, "weight_decay": config.weight_decay},
        {"params": rest, "weight_decay": 0.0},
    ]
    if config.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum, nesterov=True)
    return torch.optim.AdamW(groups, lr=config.lr)


def _rng_state() -> dict[str, Any]:
    return {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }


def _set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])


def save_model(model: ThunderFace, path: Path, half: bool = False) -> None:
    """Weights and architecture for inference (``half`` stores float16: half the size)."""
    state = {
        k: (v.half() if half and v.is_floating_point() else v)
        for k, v in model.state_dict().items()
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"format": MODEL_FORMAT, "spec": asdict(model.spec), "state_dict": state}, path)


def _scene_maker(
    config: DetectorTrainConfig, labels: list[ImageLabel] | None, root: Path
) -> SceneMaker:
    if labels is None:
        labels = load_labels(Path(config.labels))
    crops = load_landmarks5(root) if (root / "landmarks5").is_dir() else []
    return SceneMaker(
        root,
        labels,
        crops,
        held_out=False,
        size=config.input_size,
        seed=config.seed,
        real_fraction=config.real_fraction,
        landmark_fraction=config.landmark_fraction,
    )


def train_detector(
    config: DetectorTrainConfig,
    labels: list[ImageLabel] | None = None,
    stop_at: int | None = None,
) -> DetectorTrainResult:
    """Train (or resume) per `config`; `labels` overrides the label file (for tests);
    `stop_at` ends early after that step (the schedule still spans `config.steps`)."""
    from facesphere.io.data import data_dir

    if config.threads:
        torch.set_num_threads(config.threads)
    root = Path(config.data_root) if config.data_root else data_dir()
    output = Path(config.output)
    (output / "checkpoints").mkdir(parents=True, exist_ok=True)
    (output / "config.yaml").write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))
    torch.manual_seed(config.seed)
    np.random.seed(config.seed)
    random.seed(config.seed)
    model = ThunderFace(spec_from_config(config))
    optimizer = _optimizer(config, model)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(config, s))
    start = 0
    resume = config.resume
    if resume == "auto":
        last = output / "checkpoints" / "last.pt"
        resume = str(last) if last.is_file() else None
    if resume:
        blob = torch.load(resume, map_location="cpu", weights_only=False)
        if blob.get("format") != CHECKPOINT_FORMAT:
            raise ValueError(f"{resume} is not a detector training checkpoint")
        model.load_state_dict(blob["state_dict"])
        optimizer.load_state_dict(blob["optimizer"])
        scheduler.load_state_dict(blob["scheduler"])
        _set_rng_state(blob["rng"])
        start = int(blob["step"])
    maker = _scene_maker(config, labels, root)
    loss_settings = LossSettings(landmark_weight=config.landmark_weight)
    proposal_settings = ProposalSettings(pre_nms=600, post_nms=100)
    generator = torch.Generator().manual_seed(config.seed)
    metrics_path = output / "metrics.csv"
    new_file = not metrics_path.exists() or start == 0
    metrics = metrics_path.open("w" if start == 0 else "a", newline="")
    writer = csv.DictWriter(metrics, METRIC_COLUMNS)
    if new_file:
        writer.writeheader()

    def save(step: int) -> None:
        blob = {
            "format": CHECKPOINT_FORMAT,
            "step": step,
            "spec": asdict(model.spec),
            "state_dict": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "rng": _rng_state(),
            "config": config.to_dict(),
        }
        tmp = output / "checkpoints" / "last.pt.tmp"
        torch.save(blob, tmp)
        tmp.replace(output / "checkpoints" / "last.pt")

    end = min(config.steps, stop_at) if stop_at is not None else config.steps
    model.train()
    t0 = time.time()
    window: dict[str, list[float]] = {name: [] for name in LOSS_NAMES}
    smoothed = float("nan")
    bar = tqdm(
        range(start, end),
        initial=start,
        total=end,
        disable=not config.progress,
        desc="train-detector",
    )
    for step in bar:
        generator.manual_seed(config.seed * 1_000_003 + step)
        scenes = [maker.sample(step * config.batch_size + i) for i in range(config.batch_size)]
        images = to_tensor_batch(scenes)
        boxes = [torch.from_numpy(s.boxes) for s in scenes]
        points = [torch.from_numpy(s.landmarks) for s in scenes]
        losses = detection_loss(
            model, images, boxes, points, loss_settings, proposal_settings, generator
        )
        optimizer.zero_grad(set_to_none=True)
        losses["total"].backward()
        if config.grad_clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        optimizer.step()
        scheduler.step()
        for name in LOSS_NAMES:
            window[name].append(float(losses[name].detach()))
        if (step + 1) % config.log_every == 0 or step + 1 == end:
            elapsed = time.time() - t0
            row = {name: round(float(np.mean(v)), 5) for name, v in window.items() if v}
            smoothed = row.get("total", smoothed)
            done = step + 1 - start
            row.update(
                step=step + 1,
                lr=optimizer.param_groups[0]["lr"],
                images_per_s=round(done * config.batch_size / max(elapsed, 1e-9), 3),
                elapsed_s=round(elapsed, 1),
            )
            writer.writerow(row)
            metrics.flush()
            bar.set_postfix(loss=f"{smoothed:.3f}")
            window = {name: [] for name in LOSS_NAMES}
        if config.checkpoint_every and (step + 1) % config.checkpoint_every == 0:
            save(step + 1)
    bar.close()
    metrics.close()
    save(end)
    model.eval()
    model_path = output / "model.pt"
    save_model(model, model_path)
    if config.export:
        save_model(model, Path(config.export), half=True)
    return DetectorTrainResult(output, model_path, end, smoothed)
