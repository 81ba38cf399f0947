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


def create_backbone(name: str, embedding_dim: int | None = None, **kwargs: Any) -> nn.Module:
    """Build the backbone ``name`` (embedding size: the model's default, 512 for most, unless
    given); raises ``KeyError`` listing known names if it is unknown."""
    if embedding_dim is not None:
        kwargs["embedding_dim"] = embedding_dim
    return BACKBONES.create(name, **kwargs)


def list_backbones() -> list[str]:
    """Sorted names of all registered backbones."""
    return BACKBONES.names()
