"""CurricularFace (Huang et al., CVPR 2020): ArcFace target plus re-weighted hard negatives."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from facesphere.models.heads.registry import register_head

from .additive import arc_margin
from .base import MarginHead, check_non_negative, check_positive, sin_from_cos


@register_head("curricularface")
class CurricularFaceHead(MarginHead):
    """CurricularFace.

    * target: ArcFace's ``cos(theta_y + m)`` (with the same theta + m > pi fallback);
    * a non-target class j is a *hard negative* when ``cos theta_j > cos(theta_y + m)``, where
      cos(theta_y + m) is the raw margin cosine ``cos theta_y cos m - sin theta_y sin m`` as in the
      paper; its cosine becomes ``cos theta_j (t + cos theta_j)``;
    * ``t`` is a running mean of the target cosine, ``t <- momentum * mean + (1 - momentum) * t``,
      updated (without gradient) before use on every training forward and frozen in eval mode.
      Early in training t ~ 0 shrinks hard negatives (easy curriculum); later t grows and
      hard negatives are emphasised.
    """

    t: Tensor

    def __init__(
        self,
        embedding_dim: int,
        num_classes: int,
        s: float = 64.0,
        m: float = 0.5,
        momentum: float = 0.01,
    ) -> None:
        super().__init__(embedding_dim, num_classes, s=s)
        self.m = check_non_negative("m", m)
        if self.m >= math.pi:
            raise ValueError(f"m is an angle and must be < pi, got {m!r}")
        self.momentum = check_positive("momentum", momentum)
        if self.momentum > 1.0:
            raise ValueError(f"momentum must be in (0, 1], got {momentum!r}")
        self.register_buffer("t", torch.zeros(()))

    def update_state(self, target_cos: Tensor, norms: Tensor | None) -> None:
        if self.training:
            mean = target_cos.detach().mean().to(self.t.dtype)
            self.t.mul_(1.0 - self.momentum).add_(self.momentum * mean)

    def target_margin(self, cos_target: Tensor, norms: Tensor | None) -> Tensor:
        return arc_margin(cos_target, self.m)

    def adjust_non_target(self, cos: Tensor, target_cos: Tensor, norms: Tensor | None) -> Tensor:
        with torch.no_grad():
            bound = target_cos * math.cos(self.m) - sin_from_cos(target_cos) * math.sin(self.m)
            hard = cos > bound.unsqueeze(1)
        t = self.t.to(cos.dtype)
        return torch.where(hard, cos * (t + cos), cos)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, s={self.s}, m={self.m}, momentum={self.momentum}"
