"""Training loop for the ThunderNet face detector, on :mod:`facesphere.train.engine`.

A run folder holds ``config.yaml``, ``metrics.csv`` (one row per ``log_every`` steps),
``checkpoints/step-NNNNNNNN/rank-0.pt`` (model, optimizer, scheduler, RNG states, step; the
``facesphere-thunder-checkpoint`` format) and, at the end, ``model.pt`` (weights +
architecture only, the file the ``thunder`` detector loads; both formats are
:mod:`facesphere.detect.thunder.model`'s). Samples depend only on (seed, index), so a resumed
run sees the same data as an unbroken one.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from facesphere.detect.thunder.model import (
    CHECKPOINT_FORMAT,
    ProposalSettings,
    ThunderFace,
    ThunderSpec,
    load_model,
    save_model,
)
from facesphere.errors import ConfigError
from facesphere.train.engine import (
    CheckpointStore,
    CsvLog,
    LRSchedule,
    build_optimizer,
    decay_groups,
    load_checkpoint,
    require_finite,
    rng_state,
    set_rng_state,
    start_run,
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
    """The architecture a config describes."""
    return ThunderSpec(
        config.backbone, config.input_size, tuple(config.anchor_scales), tuple(config.anchor_ratios)
    )


def start_from(model: ThunderFace, path: Path) -> None:
    """Load the weights of a trained model of the same architecture into `model` (fine-tuning
    starts there); ConfigError when the architectures differ."""
    trained = load_model(path)
    if trained.spec != model.spec:
        raise ConfigError(
            f"init_weights {path} has architecture {trained.spec}, the config {model.spec}",
            key="init_weights",
        )
    model.load_state_dict(trained.state_dict())


def lr_schedule(config: DetectorTrainConfig) -> LRSchedule:
    """Linear warmup to 1, then cosine down to min_lr / lr at ``steps``."""
    return LRSchedule(
        total=config.steps,
        warmup=config.warmup_steps,
        shape="cosine",
        floor=config.min_lr / config.lr,
    )


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
        wider_fraction=config.wider_fraction,
    )


def train_detector(
    config: DetectorTrainConfig,
    labels: list[ImageLabel] | None = None,
    stop_at: int | None = None,
) -> DetectorTrainResult:
    """Train (or resume) per `config`; `labels` overrides the label file (for tests);
    `stop_at` ends early after that step (the schedule still spans `config.steps`)."""
    root = Path(config.data_root)
    output = start_run(config, config.output, config.threads, config.seed)
    model = ThunderFace(spec_from_config(config))
    if config.init_weights:
        start_from(model, Path(config.init_weights))
    optimizer = build_optimizer(
        config.optimizer,
        decay_groups(model, config.weight_decay),
        config.lr,
        config.weight_decay,
        config.momentum,
        nesterov=True,
    )
    scheduler = lr_schedule(config).scheduler(optimizer)
    store = CheckpointStore(output, config.keep_checkpoints)
    start = 0
    resume = store.resume_path(config.resume)
    if resume is not None:
        blob = load_checkpoint(resume, CHECKPOINT_FORMAT)
        model.load_state_dict(blob["state_dict"])
        optimizer.load_state_dict(blob["optimizer"])
        scheduler.load_state_dict(blob["scheduler"])
        set_rng_state(blob["rng"])
        start = int(blob["step"])
    maker = _scene_maker(config, labels, root)
    loss_settings = LossSettings(landmark_weight=config.landmark_weight)
    proposal_settings = ProposalSettings(pre_nms=600, post_nms=100)
    generator = torch.Generator().manual_seed(config.seed)
    metrics = CsvLog(output / "metrics.csv", METRIC_COLUMNS, start)

    def save(step: int) -> None:
        blob = {
            "format": CHECKPOINT_FORMAT,
            "step": step,
            "spec": asdict(model.spec),
            "state_dict": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "rng": rng_state(),
            "config": config.to_dict(),
        }
        store.save(step, blob)

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
        ignore = [torch.from_numpy(s.ignore) for s in scenes]
        losses = detection_loss(
            model, images, boxes, points, loss_settings, proposal_settings, generator, ignore
        )
        require_finite(float(losses["total"].detach()), step + 1)
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
            metrics.append(row)
            bar.set_postfix(loss=f"{smoothed:.3f}")
            window = {name: [] for name in LOSS_NAMES}
        if config.checkpoint_every and (step + 1) % config.checkpoint_every == 0:
            save(step + 1)
    bar.close()
    save(end)
    model.eval()
    model_path = output / "model.pt"
    save_model(model, model_path)
    if config.export:
        save_model(model, Path(config.export), half=True)
    return DetectorTrainResult(output, model_path, end, smoothed)
