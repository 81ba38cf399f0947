"""Classification heads for training face embeddings (softmax and margin-softmax family).

Importing this package registers every head in :data:`HEADS`; build one with
``create_head(name, embedding_dim, num_classes, **kwargs)``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from facesphere.registry import Registry

from .base import Head, MarginHead

HEADS: Registry[Head] = Registry("head")


def register_head(name: str) -> Callable[[Callable[..., Head]], Callable[..., Head]]:
    """Decorator registering a head factory (usually the class) under ``name``."""
    return HEADS.register(name)


def create_head(name: str, embedding_dim: int, num_classes: int, **kwargs: Any) -> Head:
    """Build the head registered as ``name``; unknown names raise KeyError."""
    return HEADS.create(name, embedding_dim=embedding_dim, num_classes=num_classes, **kwargs)


def list_heads() -> list[str]:
    """Sorted names of all registered heads."""
    return HEADS.names()


# The modules below register themselves through `register_head`, so they are imported last.
from .adaface import AdaFaceHead  # noqa: E402
from .additive import ArcFaceHead, CombinedMarginHead, CosFaceHead, SubCenterArcFaceHead  # noqa: E402
from .curricular import CurricularFaceHead  # noqa: E402
from .lsoftmax import LSoftmaxHead, SphereFaceHead  # noqa: E402
from .magface import MagFaceHead  # noqa: E402
from .softmax import NormFaceHead, SoftmaxHead  # noqa: E402

__all__ = [
    "HEADS",
    "AdaFaceHead",
    "ArcFaceHead",
    "CombinedMarginHead",
    "CosFaceHead",
    "CurricularFaceHead",
    "Head",
    "LSoftmaxHead",
    "MagFaceHead",
    "MarginHead",
    "NormFaceHead",
    "SoftmaxHead",
    "SphereFaceHead",
    "SubCenterArcFaceHead",
    "create_head",
    "list_heads",
    "register_head",
]
