"""AdaFace (Kim et al., CVPR 2022): a margin that adapts to image quality via the feature norm."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from facesphere.models.heads.registry import register_head

from .base import COS_EPS, MarginHead, check_non_negative, check_positive


@register_head("adaface")
class AdaFaceHead(MarginHead):
    """AdaFace.

    The feature norm ``a`` (a proxy for image quality) is standardised with running batch
    statistics and clipped: ``h = clip(h_scale * (a - mu) / (sigma + eps), -1, 1)``.  The target
    logit is ``s (cos(theta_y + g_angle) - g_add)`` with ``g_angle = -m h`` and
    ``g_add = m h + m``: high-quality samples (h -> 1) get an additive cosine margin (CosFace-like),
    low-quality ones (h -> -1) an angular one that leaves room for hard-to-fit images.

    ``mu`` and ``sigma`` (unbiased batch std) are running averages with momentum ``t_alpha``,
    updated before use on training forwards and frozen in eval mode.  As in the paper the norms
    enter without gradient (only the direction of the embedding is trained through the margin).
    ``theta_y + g_angle`` is clipped to [eps, pi - eps].
    """

    running_mean: Tensor
    running_std: Tensor

    def __init__(
        self,
        embedding_dim: int,
        num_classes: int,
        s: float = 64.0,
        m: float = 0.4,
        h: float = 0.333,
        t_alpha: float = 0.01,
        eps: float = 1e-3,
    ) -> None:
        super().__init__(embedding_dim, num_classes, s=s)
        self.m = check_non_negative("m", m)
        self.h = check_positive("h", h)
        self.t_alpha = check_positive("t_alpha", t_alpha)
        if self.t_alpha > 1.0:
            raise ValueError(f"t_alpha must be in (0, 1], got {t_alpha!r}")
        self.eps = check_positive("eps", eps)
        self.register_buffer("running_mean", torch.tensor(20.0))
        self.register_buffer("running_std", torch.tensor(100.0))

    def update_state(self, target_cos: Tensor, norms: Tensor | None) -> None:
        if not self.training:
            return
        norms = self.require_norms(norms, "adaface").detach().clamp_min(1e-3)
        a = self.t_alpha
        self.running_mean.mul_(1.0 - a).add_(a * norms.mean().to(self.running_mean.dtype))
        if norms.numel() > 1:
            self.running_std.mul_(1.0 - a).add_(a * norms.std().to(self.running_std.dtype))

    def quality_scaler(self, norms: Tensor) -> Tensor:
        """The clipped standardised norm h in [-1, 1] (no gradient)."""
        norms = norms.detach().clamp_min(1e-3)
        mean = self.running_mean.to(norms.dtype)
        std = self.running_std.to(norms.dtype)
        return (self.h * (norms - mean) / (std + self.eps)).clamp(-1.0, 1.0)

    def target_margin(self, cos_target: Tensor, norms: Tensor | None) -> Tensor:
        h = self.quality_scaler(self.require_norms(norms, "adaface"))
        g_angle = -self.m * h
        g_add = self.m * h + self.m
        theta = torch.acos(cos_target) + g_angle
        theta = theta.clamp(COS_EPS, math.pi - COS_EPS)
        return torch.cos(theta) - g_add

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, s={self.s}, m={self.m}, h={self.h}"
