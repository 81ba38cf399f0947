"""The backbone registry and its helpers (kept apart so family modules can import it)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from facesphere.registry import Registry

BACKBONES: Registry[nn.Module] = Registry("backbone", package="facesphere.models.backbones")


def register_backbone(
    name: str, forwards_to: type | None = None
) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator that adds a backbone factory to :data:`BACKBONES` under ``name``; a factory
    passing ``**kwargs`` on to its model class names that class in `forwards_to`."""
    return BACKBONES.register(name, forwards_to=forwards_to)


def create_backbone(name: str, embedding_dim: int | None = None, **kwargs: Any) -> nn.Module:
    """Build the backbone ``name`` (embedding size: the model's default, 512 for most, unless
    given); an unknown name or option raises ConfigError listing the known ones."""
    if embedding_dim is not None:
        kwargs["embedding_dim"] = embedding_dim
    return BACKBONES.create(name, **kwargs)


def list_backbones() -> list[str]:
    """Sorted names of all registered backbones."""
    return BACKBONES.names()
