"""The detector training configuration: a dataclass loaded from YAML, checked key by key.

``--set key=value`` overrides take YAML values (``lr=0.01``, ``anchor_ratios=[1.0]``); loading
is :mod:`facesphere.train.engine`'s. ``data_root`` (the folder holding celeba299, orl and
landmarks5) and ``labels`` may be written ``data:NAME``: NAME in the shared data folder
(``$FACESPHERE_DATA``); the default ``data:`` is that folder itself.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from facesphere.detect.thunder.refine import check_refiner_shape
from facesphere.errors import ConfigError
from facesphere.models.backbones import list_backbones
from facesphere.train import engine


@dataclass
class DetectorTrainConfig:
    """Everything one detector training run needs."""

    backbone: str = "snet49"
    input_size: int = 320
    anchor_scales: list[float] = field(default_factory=lambda: [16.0, 32.0, 64.0, 128.0, 256.0])
    anchor_ratios: list[float] = field(default_factory=lambda: [1.0, 1.25])
    labels: str = engine.data_path("out/thunder/labels.json")
    data_root: str = engine.data_path("data:")
    real_fraction: float = 0.4
    landmark_fraction: float = 0.35
    wider_fraction: float = 0.0
    init_weights: str | None = None
    batch_size: int = 8
    steps: int = 1000
    optimizer: str = "adamw"
    lr: float = 2e-3
    momentum: float = 0.9
    weight_decay: float = 1e-4
    warmup_steps: int = 50
    min_lr: float = 0.0
    grad_clip: float | None = 10.0
    landmark_weight: float = 1.0
    seed: int = 0
    threads: int = 0
    output: str = "runs/thunder"
    resume: str | None = None
    checkpoint_every: int = 100
    keep_checkpoints: int = 2
    log_every: int = 10
    progress: bool = True
    export: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class LandmarkTrainConfig:
    """One training run of thunder's second landmark stage (`train.thunder.landmarks`)."""

    detector: str | None = None
    data_root: str = engine.data_path("data:")
    size: int = 48
    widths: list[int] = field(default_factory=lambda: [24, 48, 64, 96, 128])
    epochs: int = 80
    batch_size: int = 64
    lr: float = 2e-3
    weight_decay: float = 1e-4
    warmup_fraction: float = 0.05
    limit: int | None = None
    seed: int = 0
    threads: int = 0
    output: str = "runs/thunder_landmarks"
    progress: bool = True
    export: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def validate_landmarks(config: LandmarkTrainConfig) -> LandmarkTrainConfig:
    """Check ranges; returns `config`."""
    for key in ("size", "epochs", "batch_size", "lr"):
        engine.check_positive(key, getattr(config, key))
    for key in ("weight_decay", "threads"):
        engine.check_positive(key, getattr(config, key), allow_zero=True)
    engine.check_fraction("warmup_fraction", config.warmup_fraction)
    engine.check_positive("limit", config.limit)
    check_refiner_shape(config.size, config.widths)
    if not config.data_root:
        raise ConfigError("a data folder is required ('data:' is the shared one)", key="data_root")
    return config


def load_landmark_config(
    path: str | Path, overrides: list[str] | None = None
) -> LandmarkTrainConfig:
    """Read a landmark-stage YAML config, apply ``key=value`` overrides, validate."""
    raw = engine.apply_overrides(engine.read_yaml(path), overrides or [])
    return validate_landmarks(engine.build_config(LandmarkTrainConfig, raw))


def validate(config: DetectorTrainConfig) -> DetectorTrainConfig:
    """Check ranges and choices; returns `config`."""
    engine.check_choice("backbone", config.backbone, list_backbones())
    engine.check_choice("optimizer", config.optimizer, engine.OPTIMIZERS)
    if config.input_size < 64 or config.input_size % 32:
        raise ConfigError("must be a multiple of 32, at least 64", key="input_size")
    for key in ("batch_size", "steps", "lr", "log_every", "landmark_weight", "keep_checkpoints"):
        engine.check_positive(key, getattr(config, key))
    for key in ("warmup_steps", "min_lr", "weight_decay", "momentum", "threads"):
        engine.check_positive(key, getattr(config, key), allow_zero=True)
    engine.check_positive("checkpoint_every", config.checkpoint_every, allow_zero=True)
    engine.check_positive("grad_clip", config.grad_clip)
    for key in ("real_fraction", "landmark_fraction", "wider_fraction"):
        engine.check_fraction(key, getattr(config, key))
    if config.real_fraction + config.wider_fraction > 1:
        raise ConfigError("real_fraction + wider_fraction must not exceed 1", key="wider_fraction")
    for key in ("anchor_scales", "anchor_ratios"):
        if any(value <= 0 for value in getattr(config, key)):
            raise ConfigError("every value must be > 0", key=key)
    if config.min_lr > config.lr:
        raise ConfigError(f"must not exceed lr ({config.lr})", key="min_lr")
    if not config.data_root:
        raise ConfigError("a data folder is required ('data:' is the shared one)", key="data_root")
    return config


def config_from_dict(
    raw: dict[str, Any], overrides: list[str] | None = None
) -> DetectorTrainConfig:
    """Build and validate a config from a mapping plus ``key=value`` overrides."""
    return validate(
        engine.build_config(DetectorTrainConfig, engine.apply_overrides(raw, overrides or []))
    )


def load_config(path: str | Path, overrides: list[str] | None = None) -> DetectorTrainConfig:
    """Read a YAML config, apply overrides, validate."""
    return config_from_dict(engine.read_yaml(path), overrides)
