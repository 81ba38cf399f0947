"""Additive margins on normalised cosines: CosFace, ArcFace, combined margin, sub-centre ArcFace."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from facesphere.models.heads.registry import register_head

from .base import MarginHead, check_int, check_non_negative, check_positive, sin_from_cos


def _check_angle_margin(name: str, m: float) -> float:
    m = check_non_negative(name, m)
    if m >= math.pi:
        raise ValueError(f"{name} is an angle and must be < pi, got {m!r}")
    return m


def arc_margin(cos: Tensor, m: Tensor | float, easy_margin: bool = False) -> Tensor:
    """cos(theta + m) for clamped cosines, with a treatment of theta + m > pi.

    Default (insightface's choice): where cos(theta) <= cos(pi - m), i.e. theta + m >= pi, the
    target becomes ``cos(theta) - m sin(m)``.  cos(theta + m) would start to *increase* again past
    pi, rewarding worse angles; the linear fallback keeps the target logit decreasing in theta
    and still below cos(theta).  ``easy_margin`` instead applies the margin only where
    cos(theta) > 0 and leaves the other targets unchanged.  ``m`` may be a float or a per-sample
    tensor broadcastable to ``cos``.
    """
    if isinstance(m, Tensor):
        m_t = m.to(cos.dtype)
    else:
        m_t = torch.tensor(m, dtype=cos.dtype, device=cos.device)
    cos_m, sin_m = torch.cos(m_t), torch.sin(m_t)
    shifted = cos * cos_m - sin_from_cos(cos) * sin_m
    if easy_margin:
        return torch.where(cos > 0, shifted, cos)
    threshold = torch.cos(math.pi - m_t)
    return torch.where(cos > threshold, shifted, cos - m_t * sin_m)


@register_head("cosface")
class CosFaceHead(MarginHead):
    """CosFace / AM-Softmax: target logit ``s (cos(theta_y) - m)``."""

    def __init__(
        self, embedding_dim: int, num_classes: int, s: float = 64.0, m: float = 0.35
    ) -> None:
        super().__init__(embedding_dim, num_classes, s=s)
        self.m = check_non_negative("m", m)

    def target_margin(self, cos_target: Tensor, norms: Tensor | None) -> Tensor:
        return cos_target - self.m

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, s={self.s}, m={self.m}"


@register_head("arcface")
class ArcFaceHead(MarginHead):
    """ArcFace: target logit ``s cos(theta_y + m)`` (see :func:`arc_margin` for theta + m > pi)."""

    def __init__(
        self,
        embedding_dim: int,
        num_classes: int,
        s: float = 64.0,
        m: float = 0.5,
        easy_margin: bool = False,
        centers_per_class: int = 1,
    ) -> None:
        super().__init__(embedding_dim, num_classes, s=s, centers_per_class=centers_per_class)
        self.m = _check_angle_margin("m", m)
        self.easy_margin = bool(easy_margin)

    def target_margin(self, cos_target: Tensor, norms: Tensor | None) -> Tensor:
        return arc_margin(cos_target, self.m, self.easy_margin)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, s={self.s}, m={self.m}, easy_margin={self.easy_margin}"


@register_head("subcenter_arcface")
class SubCenterArcFaceHead(ArcFaceHead):
    """Sub-centre ArcFace: ``k`` centres per class, the closest one (max cosine) gets the margin.

    The weight has shape (num_classes, k, embedding_dim).
    """

    def __init__(
        self,
        embedding_dim: int,
        num_classes: int,
        k: int = 3,
        s: float = 64.0,
        m: float = 0.5,
        easy_margin: bool = False,
    ) -> None:
        k = check_int("k", k, 1)
        super().__init__(
            embedding_dim, num_classes, s=s, m=m, easy_margin=easy_margin, centers_per_class=k
        )


@register_head("combined")
class CombinedMarginHead(MarginHead):
    """Combined margin (insightface): target logit ``s (cos(m1 theta_y + m2) - m3)``.

    Past theta* = (pi - m2) / m1, where m1 theta + m2 would exceed pi, the target continues as
    ``cos(theta) - cos(theta*) - 1 - m3``: continuous at theta* (value -1 - m3) and decreasing,
    so worse angles never earn a larger logit.  With m1 = 1, m3 = 0 this differs from ArcFace's
    fallback only beyond theta* (ArcFace keeps insightface's ``cos(theta) - m sin(m)``).
    """

    def __init__(
        self,
        embedding_dim: int,
        num_classes: int,
        s: float = 64.0,
        m1: float = 1.0,
        m2: float = 0.3,
        m3: float = 0.2,
    ) -> None:
        super().__init__(embedding_dim, num_classes, s=s)
        self.m1 = check_positive("m1", m1)
        if self.m1 < 1.0:
            raise ValueError(f"m1 is a multiplicative angular margin and must be >= 1, got {m1!r}")
        self.m2 = _check_angle_margin("m2", m2)
        self.m3 = check_non_negative("m3", m3)
        self.theta_limit = (math.pi - self.m2) / self.m1

    def target_margin(self, cos_target: Tensor, norms: Tensor | None) -> Tensor:
        theta = torch.acos(cos_target)
        margin = torch.cos(self.m1 * theta + self.m2) - self.m3
        if self.theta_limit >= math.pi:
            return margin
        beyond = cos_target - math.cos(self.theta_limit) - 1.0 - self.m3
        return torch.where(theta <= self.theta_limit, margin, beyond)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, s={self.s}, m1={self.m1}, m2={self.m2}, m3={self.m3}"
