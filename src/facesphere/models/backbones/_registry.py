"""The backbone registry and its helpers (kept apart so family modules can import it)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from facesphere.registry import Registry

BACKBONES: Registry[nn.Module] = Registry("backbone")


def register_backbone(name: str) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator that adds a backbone factory to :data:`BACKBONES` under ``name``."""
    return BACKBONES.register(name)


def create_backbone(name: str, embedding_dim: int = 512, **kwargs: Any) -> nn.Module:
    """Build the backbone ``name``; raises ``KeyError`` listing known names if it is unknown."""
    return BACKBONES.create(name, embedding_dim=embedding_dim, **kwargs)


def list_backbones() -> list[str]:
    """Sorted names of all registered backbones."""
    return BACKBONES.names()
