"""The training configuration: nested dataclasses loaded from YAML and checked key by key.

A config file is a YAML mapping whose keys are the fields of :class:`TrainConfig`; the
sections ``data``, ``augment`` and ``val`` are mappings of their own.  ``--set key=value``
overrides use dotted keys (``data.source=/x``, ``head_kwargs.m=0.4``) and YAML values.
Every unknown key or invalid value raises :class:`ConfigError` naming the key.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_args, get_origin, get_type_hints

import yaml

from facesphere.errors import ConfigError


def _bad(key: str, message: str) -> ConfigError:
    """The error for configuration key `key`."""
    return ConfigError(message, key=key)


DATA_KINDS = ("shards", "folder", "recordio", "center_crop")
OPTIMIZERS = ("sgd", "adamw")
SCHEDULES = ("cosine", "poly", "constant")
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
    source: str = ""
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
    pairs: str = ""
    root: str = ""
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
    init_backbone: str | None = None
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


# -- loading and validation -------------------------------------------------------------------


def _check_type(key: str, value: Any, hint: Any) -> Any:
    """Coerce ``value`` to the annotated type ``hint`` or raise ConfigError naming ``key``."""
    origin = get_origin(hint)
    args = get_args(hint)
    if origin is not None and type(None) in args:  # Optional[X]
        if value is None:
            return None
        inner = [a for a in args if a is not type(None)]
        return _check_type(key, value, inner[0])
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise _bad(key, f"expected true or false, got {value!r}")
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise _bad(key, f"expected an integer, got {value!r}")
    if hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise _bad(key, f"expected a number, got {value!r}")
    if hint is str:
        if isinstance(value, str):
            return value
        raise _bad(key, f"expected a string, got {value!r}")
    if origin is dict:
        if isinstance(value, dict) and all(isinstance(k, str) for k in value):
            return dict(value)
        raise _bad(key, f"expected a mapping, got {value!r}")
    raise _bad(key, f"unsupported value {value!r}")  # pragma: no cover


def _build(cls: type, values: Any, prefix: str) -> Any:
    """Instantiate dataclass ``cls`` from the mapping ``values`` (keys checked)."""
    if not isinstance(values, dict):
        raise _bad(prefix.rstrip(".") or "<root>", f"expected a mapping, got {values!r}")
    hints = get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    kwargs: dict[str, Any] = {}
    for key, value in values.items():
        full = f"{prefix}{key}"
        if key not in names:
            raise _bad(full, f"unknown key; known: {', '.join(sorted(names))}")
        hint = hints[key]
        if dataclasses.is_dataclass(hint):
            kwargs[key] = _build(hint, value or {}, f"{full}.")
        else:
            kwargs[key] = _check_type(full, value, hint)
    return cls(**kwargs)


def _choice(key: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise _bad(key, f"must be one of {', '.join(choices)}, got {value!r}")


def _positive(key: str, value: float | None, allow_zero: bool = False) -> None:
    if value is None:
        return
    if value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise _bad(key, f"must be {bound}, got {value!r}")


def validate(config: TrainConfig) -> TrainConfig:
    """Check value ranges and cross-field rules; returns ``config``."""
    from facesphere.models.backbones import list_backbones
    from facesphere.models.heads import list_heads

    if config.backbone not in list_backbones():
        raise _bad(
            "backbone",
            f"unknown backbone {config.backbone!r}; known: {', '.join(list_backbones())}",
        )
    if config.head not in list_heads():
        raise _bad("head", f"unknown head {config.head!r}; known: {', '.join(list_heads())}")
    _choice("optimizer", config.optimizer, OPTIMIZERS)
    _choice("schedule", config.schedule, SCHEDULES)
    _choice("amp", config.amp, AMP_DTYPES)
    _choice("device", config.device, DEVICES)
    _choice("data.kind", config.data.kind, DATA_KINDS)
    for key in ("embedding_dim", "batch_size", "lr", "log_every", "keep_checkpoints"):
        _positive(key, getattr(config, key))
    for key in ("momentum", "weight_decay", "warmup_steps", "min_lr", "num_workers"):
        _positive(key, getattr(config, key), allow_zero=True)
    _positive("checkpoint_every", config.checkpoint_every, allow_zero=True)
    _positive("grad_clip", config.grad_clip)
    _positive("poly_power", config.poly_power)
    if not 0.0 < config.sample_rate <= 1.0:
        raise _bad("sample_rate", f"must be in (0, 1], got {config.sample_rate!r}")
    if (config.epochs is None) == (config.steps is None):
        raise _bad("steps", "give exactly one of 'epochs' and 'steps'")
    _positive("epochs", config.epochs)
    _positive("steps", config.steps)
    if config.min_lr > config.lr:
        raise _bad("min_lr", f"must not exceed lr ({config.lr})")
    if not config.data.source:
        raise _bad("data.source", "a data source path is required")
    _positive("data.max_identities", config.data.max_identities)
    _positive("data.min_images", config.data.min_images)
    _positive("data.val_identities", config.data.val_identities, allow_zero=True)
    if not 0.0 < config.data.crop_fraction <= 1.0:
        raise _bad("data.crop_fraction", "must be in (0, 1]")
    for key in ("color_jitter", "random_crop", "blur", "low_res", "grayscale"):
        value = getattr(config.augment, key)
        if not 0.0 <= value <= 1.0:
            raise _bad(f"augment.{key}", f"is a probability in [0, 1], got {value!r}")
    if not 0.0 < config.augment.crop_scale <= 1.0:
        raise _bad("augment.crop_scale", "must be in (0, 1]")
    _positive("augment.color_strength", config.augment.color_strength, allow_zero=True)
    _positive("val.every", config.val.every, allow_zero=True)
    _positive("val.pairs_per_fold", config.val.pairs_per_fold)
    _positive("val.batch_size", config.val.batch_size)
    if config.val.folds < 2:
        raise _bad("val.folds", "needs at least 2 folds")
    if (
        config.val.every
        and not config.val.pairs
        and config.data.val_identities < 2 * (config.val.folds)
    ):
        raise _bad(
            "data.val_identities",
            f"validation without val.pairs needs at least {2 * config.val.folds} held-out "
            "identities (2 per fold)",
        )
    return config


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"a.b=value"`` -> (["a", "b"], YAML-parsed value)."""
    if "=" not in text:
        raise _bad(text, "overrides look like key=value")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key:
        raise _bad(text, "empty key in override")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as exc:
        raise _bad(key, f"cannot parse value {raw!r}: {exc}") from None
    return key.split("."), value


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Set dotted keys of the raw mapping from ``key=value`` strings."""
    for text in overrides:
        path, value = parse_override(text)
        node = raw
        for part in path[:-1]:
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise _bad(".".join(path), f"{part!r} is not a section")
            node = child
        node[path[-1]] = value
    return raw


def config_from_dict(raw: dict[str, Any], overrides: list[str] | None = None) -> TrainConfig:
    """Build and validate a config from a mapping plus ``key=value`` overrides."""
    raw = apply_overrides(dict(raw), list(overrides or []))
    return validate(_build(TrainConfig, raw, ""))


def load_config(path: str | Path, overrides: list[str] | None = None) -> TrainConfig:
    """Read a YAML config file, apply overrides and validate."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except OSError as exc:
        raise _bad("--config", f"cannot read {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise _bad("--config", f"{path} is not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise _bad("<root>", f"{path} must hold a mapping")
    return config_from_dict(raw, overrides)
