"""Training face embedding models: config, data readers, augmentation, trainer and export.

Heavy pieces are imported lazily: ``from facesphere.train import train, load_config``.
"""

from __future__ import annotations

from typing import Any

__all__ = ["ConfigError", "TrainConfig", "config_from_dict", "load_config", "train"]


def __getattr__(name: str) -> Any:
    if name in ("ConfigError", "TrainConfig", "config_from_dict", "load_config"):
        from facesphere.train import config

        return getattr(config, name)
    if name == "train":
        from facesphere.train.trainer import train

        return train
    raise AttributeError(name)
