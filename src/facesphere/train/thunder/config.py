"""The detector training configuration: a dataclass loaded from YAML, checked key by key.

``--set key=value`` overrides take YAML values (``lr=0.01``, ``anchor_ratios=[1.0]``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_args, get_origin, get_type_hints

import yaml

from facesphere.errors import ConfigError
from facesphere.models.backbones import list_backbones

OPTIMIZERS = ("sgd", "adamw")


def _bad(key: str, message: str) -> ConfigError:
    """The error for configuration key `key`."""
    return ConfigError(message, key=key)


@dataclass
class DetectorTrainConfig:
    """Everything one detector training run needs."""

    backbone: str = "snet49"
    input_size: int = 320
    anchor_scales: list[float] = field(default_factory=lambda: [16.0, 32.0, 64.0, 128.0, 256.0])
    anchor_ratios: list[float] = field(default_factory=lambda: [1.0, 1.25])
    labels: str = "out/thunder/pseudo_labels.json"
    data_root: str = ""
    real_fraction: float = 0.4
    landmark_fraction: float = 0.35
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
    log_every: int = 10
    progress: bool = True
    export: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _coerce(key: str, value: Any, hint: Any) -> Any:
    origin, args = get_origin(hint), get_args(hint)
    if origin is not None and type(None) in args:
        if value is None:
            return None
        return _coerce(key, value, next(a for a in args if a is not type(None)))
    if origin is list:
        if not isinstance(value, list) or not value:
            raise _bad(key, f"expected a non-empty list, got {value!r}")
        return [_coerce(f"{key}[{i}]", v, args[0]) for i, v in enumerate(value)]
    if hint is bool:
        if isinstance(value, bool):
            return value
    elif hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif hint is str and isinstance(value, str):
        return value
    name = getattr(hint, "__name__", str(hint))
    raise _bad(key, f"expected {name}, got {value!r}")


def validate(config: DetectorTrainConfig) -> DetectorTrainConfig:
    """Check ranges and choices; returns `config`."""
    if config.backbone not in list_backbones():
        raise _bad("backbone", f"unknown backbone {config.backbone!r}")
    if config.optimizer not in OPTIMIZERS:
        raise _bad("optimizer", f"must be one of {', '.join(OPTIMIZERS)}")
    if config.input_size < 64 or config.input_size % 32:
        raise _bad("input_size", "must be a multiple of 32, at least 64")
    for key in ("batch_size", "steps", "lr", "log_every", "landmark_weight"):
        if getattr(config, key) <= 0:
            raise _bad(key, "must be > 0")
    for key in (
        "warmup_steps",
        "min_lr",
        "weight_decay",
        "momentum",
        "threads",
        "checkpoint_every",
    ):
        if getattr(config, key) < 0:
            raise _bad(key, "must be >= 0")
    for key in ("real_fraction", "landmark_fraction"):
        if not 0.0 <= getattr(config, key) <= 1.0:
            raise _bad(key, "is a fraction in [0, 1]")
    if any(s <= 0 for s in config.anchor_scales + config.anchor_ratios):
        raise _bad("anchor_scales", "anchor scales and ratios must be > 0")
    if config.min_lr > config.lr:
        raise _bad("min_lr", "must not exceed lr")
    return config


def config_from_dict(
    raw: dict[str, Any], overrides: list[str] | None = None
) -> DetectorTrainConfig:
    """Build and validate a config from a mapping plus ``key=value`` overrides."""
    raw = dict(raw)
    for text in overrides or []:
        if "=" not in text:
            raise _bad(text, "overrides look like key=value")
        key, value = text.split("=", 1)
        try:
            raw[key.strip()] = yaml.safe_load(value) if value.strip() else ""
        except yaml.YAMLError as exc:
            raise _bad(key, f"cannot parse {value!r}: {exc}") from None
    hints = get_type_hints(DetectorTrainConfig)
    kwargs = {}
    for key, value in raw.items():
        if key not in hints:
            raise _bad(key, f"unknown key; known: {', '.join(sorted(hints))}")
        kwargs[key] = _coerce(key, value, hints[key])
    return validate(DetectorTrainConfig(**kwargs))


def load_config(path: str | Path, overrides: list[str] | None = None) -> DetectorTrainConfig:
    """Read a YAML config, apply overrides, validate."""
    try:
        raw = yaml.safe_load(Path(path).read_text()) or {}
    except OSError as exc:
        raise _bad("--config", f"cannot read {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise _bad("--config", f"{path} is not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise _bad("<root>", f"{path} must hold a mapping")
    return config_from_dict(raw, overrides)
