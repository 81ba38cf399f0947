"""The head registry: `register_head`, `create_head`, `list_heads`."""

from __future__ import annotations

from typing import Any

from facesphere.models.heads.base import Head
from facesphere.registry import Registry

HEADS: Registry[Head] = Registry("head", package="facesphere.models.heads")
register_head = HEADS.register
list_heads = HEADS.names


def create_head(name: str, embedding_dim: int, num_classes: int, **options: Any) -> Head:
    """Build the head registered as `name` for `num_classes` classes of `embedding_dim`-d
    embeddings; an unknown name or option raises ConfigError listing the known ones."""
    return HEADS.create(name, embedding_dim=embedding_dim, num_classes=num_classes, **options)
