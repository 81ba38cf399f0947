"""Plain softmax (DeepFace / DeepID baseline) and NormFace (scaled cosine softmax)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from facesphere.models.heads.registry import register_head

from .base import Head, MarginHead, upcast


@register_head("softmax")
class SoftmaxHead(Head):
    """Fully connected layer with bias: ``logit_j = W_j . x + b_j`` (no normalisation)."""

    def __init__(self, embedding_dim: int, num_classes: int, bias: bool = True) -> None:
        super().__init__(embedding_dim, num_classes)
        self.bias = nn.Parameter(torch.zeros(self.num_classes)) if bias else None

    def logits(self, embeddings: Tensor, labels: Tensor | None = None) -> Tensor:
        """Raw logits (N, C); ``labels`` are unused (there is no margin)."""
        return upcast(F.linear(embeddings, self.weight, self.bias))


@register_head("normface")
class NormFaceHead(MarginHead):
    """NormFace: ``logit_j = s cos(theta_j)`` with normalised features and centres."""

    def __init__(self, embedding_dim: int, num_classes: int, s: float = 30.0) -> None:
        super().__init__(embedding_dim, num_classes, s=s)
