"""The recognition training configuration: nested dataclasses loaded from YAML, key by key.

A config file is a YAML mapping whose keys are the fields of :class:`TrainConfig`; the
sections ``data``, ``augment`` and ``val`` are mappings of their own.  ``--set key=value``
overrides use dotted keys (``data.source=/x``, ``head_kwargs.m=0.4``) and YAML values.
Every unknown key or invalid value raises :class:`ConfigError` naming the key (loading is
:mod:`facesphere.train.engine`'s). The paths ``data.source``, ``val.pairs``, ``val.root`` and
``init_backbone`` may be written ``data:NAME``: NAME in the shared data folder
(``$FACESPHERE_DATA``).
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from facesphere.errors import ConfigError
from facesphere.train.engine import (
    OPTIMIZERS,
    SCHEDULES,
    apply_overrides,
    build_config,
    check_choice,
    check_fraction,
    check_positive,
    data_path,
    read_yaml,
)

__all__ = ["ConfigError", "TrainConfig", "config_from_dict", "load_config", "validate"]

DATA_KINDS = ("shards", "folder", "recordio", "center_crop")
AMP_DTYPES = ("none", "bf16", "fp16")
DEVICES = ("auto", "cpu", "cuda")


@dataclass
class DataConfig:
    """Where the training images come from.

    kind: ``shards`` (output of ``facesphere prepare``), ``folder`` (identity folders of
    already-aligned crops), ``recordio`` (insightface ``.rec`` + ``.idx``) or ``center_crop``
    (identity folders of face-centred photos such as LFW/celeba299, centre-cropped to 112x112
    without any alignment: a rough, fast stand-in for development only).
    """

    kind: str = "shards"
    source: str = data_path()
    max_identities: int | None = None
    min_images: int = 1
    val_identities: int = 0
    crop_fraction: float = 0.5


@dataclass
class AugmentConfig:
    """Per-sample augmentation; probabilities in [0, 1]."""

    flip: bool = True
    color_jitter: float = 0.0
    color_strength: float = 0.2
    random_crop: float = 0.0
    crop_scale: float = 0.8
    blur: float = 0.0
    low_res: float = 0.0
    grayscale: float = 0.0


@dataclass
class ValConfig:
    """Verification during training: held-out identities (data.val_identities) or a pairs file.

    pairs: a ``path_a path_b 0|1 [fold]`` list (paths relative to ``root``) of images that are
    read like the training data; when empty, pairs are drawn from the held-out identities.
    """

    every: int = 0
    pairs: str = data_path()
    root: str = data_path()
    pairs_per_fold: int = 20
    folds: int = 10
    batch_size: int = 64


@dataclass
class TrainConfig:
    """Everything one training run needs."""

    backbone: str = "mobilefacenet"
    backbone_kwargs: dict[str, Any] = field(default_factory=dict)
    embedding_dim: int = 512
    head: str = "arcface"
    head_kwargs: dict[str, Any] = field(default_factory=dict)
    sample_rate: float = 1.0
    batch_size: int = 128
    optimizer: str = "sgd"
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    warmup_steps: int = 0
    schedule: str = "cosine"
    poly_power: float = 2.0
    min_lr: float = 0.0
    epochs: int | None = None
    steps: int | None = None
    amp: str = "none"
    grad_clip: float | None = None
    seed: int = 0
    deterministic: bool = False
    device: str = "auto"
    output: str | None = None
    runs_dir: str = "runs"
    name: str | None = None
    resume: str | None = None
    init_backbone: str | None = data_path(None)
    num_workers: int = 0
    log_every: int = 10
    checkpoint_every: int = 0
    keep_checkpoints: int = 2
    freeze_bn: bool = False
    channels_last: bool = False
    compile: bool = False
    progress: bool = True
    tensorboard: bool = True
    data: DataConfig = field(default_factory=DataConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    val: ValConfig = field(default_factory=ValConfig)

    # -- derived -----------------------------------------------------------------------------

    def run_name(self, when: float | None = None) -> str:
        """``name`` if given, else ``backbone-head-bsN-YYYYmmdd-HHMM``."""
        if self.name:
            return self.name
        stamp = time.strftime("%Y%m%d-%H%M", time.localtime(when))
        return f"{self.backbone}-{self.head}-bs{self.batch_size}-{stamp}"

    def output_dir(self) -> Path:
        """The run folder: ``output`` or ``runs_dir/run_name()``."""
        return Path(self.output) if self.output else Path(self.runs_dir) / self.run_name()

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# -- validation ---------------------------------------------------------------------------------


def validate(config: TrainConfig) -> TrainConfig:
    """Check value ranges and cross-field rules; returns ``config``."""
    from facesphere.models.backbones import list_backbones
    from facesphere.models.heads import list_heads

    check_choice("backbone", config.backbone, list_backbones())
    check_choice("head", config.head, list_heads())
    check_choice("optimizer", config.optimizer, OPTIMIZERS)
    check_choice("schedule", config.schedule, SCHEDULES)
    check_choice("amp", config.amp, AMP_DTYPES)
    check_choice("device", config.device, DEVICES)
    check_choice("data.kind", config.data.kind, DATA_KINDS)
    for key in ("embedding_dim", "batch_size", "lr", "log_every", "keep_checkpoints"):
        check_positive(key, getattr(config, key))
    for key in ("momentum", "weight_decay", "warmup_steps", "min_lr", "num_workers"):
        check_positive(key, getattr(config, key), allow_zero=True)
    check_positive("checkpoint_every", config.checkpoint_every, allow_zero=True)
    check_positive("grad_clip", config.grad_clip)
    check_positive("poly_power", config.poly_power)
    check_fraction("sample_rate", config.sample_rate, allow_zero=False)
    if (config.epochs is None) == (config.steps is None):
        raise ConfigError("give exactly one of 'epochs' and 'steps'", key="steps")
    check_positive("epochs", config.epochs)
    check_positive("steps", config.steps)
    if config.min_lr > config.lr:
        raise ConfigError(f"must not exceed lr ({config.lr})", key="min_lr")
    if not config.data.source:
        raise ConfigError("a data source path is required", key="data.source")
    check_positive("data.max_identities", config.data.max_identities)
    check_positive("data.min_images", config.data.min_images)
    check_positive("data.val_identities", config.data.val_identities, allow_zero=True)
    check_fraction("data.crop_fraction", config.data.crop_fraction, allow_zero=False)
    for key in ("color_jitter", "random_crop", "blur", "low_res", "grayscale"):
        check_fraction(f"augment.{key}", getattr(config.augment, key))
    check_fraction("augment.crop_scale", config.augment.crop_scale, allow_zero=False)
    check_positive("augment.color_strength", config.augment.color_strength, allow_zero=True)
    check_positive("val.every", config.val.every, allow_zero=True)
    check_positive("val.pairs_per_fold", config.val.pairs_per_fold)
    check_positive("val.batch_size", config.val.batch_size)
    if config.val.folds < 2:
        raise ConfigError("needs at least 2 folds", key="val.folds")
    needed = 2 * config.val.folds
    if config.val.every and not config.val.pairs and config.data.val_identities < needed:
        raise ConfigError(
            f"validation without val.pairs needs at least {needed} held-out "
            "identities (2 per fold)",
            key="data.val_identities",
        )
    return config


def config_from_dict(raw: dict[str, Any], overrides: list[str] | None = None) -> TrainConfig:
    """Build and validate a config from a mapping plus ``key=value`` overrides."""
    return validate(build_config(TrainConfig, apply_overrides(raw, overrides or [])))


def load_config(path: str | Path, overrides: list[str] | None = None) -> TrainConfig:
    """Read a YAML config file, apply overrides and validate."""
    return config_from_dict(read_yaml(path), overrides)
