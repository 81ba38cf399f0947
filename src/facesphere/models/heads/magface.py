"""MagFace (Meng et al., CVPR 2021): feature norm as quality, margin growing with the norm."""

from __future__ import annotations

import math

from torch import Tensor

from facesphere.models.heads.registry import register_head

from .additive import arc_margin
from .base import MarginHead, check_non_negative, check_positive, upcast


@register_head("magface")
class MagFaceHead(MarginHead):
    """MagFace.

    With ``a = clamp(||x||, l_a, u_a)`` the ArcFace margin is linear in the norm,
    ``m(a) = l_m + (u_m - l_m) (a - l_a) / (u_a - l_a)``, and the loss adds
    ``lambda_g g(a)`` with ``g(a) = 1 / a + a / u_a^2`` which pulls norms into [l_a, u_a].
    Gradients flow through both ``m(a)`` and ``g(a)``; the norm then ranks image quality
    (:meth:`quality`).  The theta + m > pi fallback is ArcFace's, with the per-sample margin.
    """

    def __init__(
        self,
        embedding_dim: int,
        num_classes: int,
        s: float = 64.0,
        l_a: float = 10.0,
        u_a: float = 110.0,
        l_m: float = 0.45,
        u_m: float = 0.8,
        lambda_g: float = 35.0,
    ) -> None:
        super().__init__(embedding_dim, num_classes, s=s)
        self.l_a = check_positive("l_a", l_a)
        self.u_a = check_positive("u_a", u_a)
        if self.u_a <= self.l_a:
            raise ValueError(f"u_a must be greater than l_a, got l_a={l_a!r}, u_a={u_a!r}")
        self.l_m = check_non_negative("l_m", l_m)
        self.u_m = check_non_negative("u_m", u_m)
        if self.u_m < self.l_m:
            raise ValueError(f"u_m must be >= l_m, got l_m={l_m!r}, u_m={u_m!r}")
        if self.u_m >= math.pi:
            raise ValueError(f"u_m is an angle and must be < pi, got {u_m!r}")
        self.lambda_g = check_non_negative("lambda_g", lambda_g)

    def clamped_norm(self, norms: Tensor) -> Tensor:
        """Norms clamped to [l_a, u_a]."""
        return upcast(norms).clamp(self.l_a, self.u_a)

    def margin(self, norms: Tensor) -> Tensor:
        """Per-sample angular margin m(a)."""
        a = self.clamped_norm(norms)
        return self.l_m + (self.u_m - self.l_m) * (a - self.l_a) / (self.u_a - self.l_a)

    def target_margin(self, cos_target: Tensor, norms: Tensor | None) -> Tensor:
        return arc_margin(cos_target, self.margin(self.require_norms(norms, "magface")))

    def regularizer(self, embeddings: Tensor) -> Tensor:
        """``lambda_g * g(a)`` per sample."""
        a = self.clamped_norm(upcast(embeddings).norm(dim=1))
        return self.lambda_g * (1.0 / a + a / (self.u_a**2))

    def quality(self, embeddings: Tensor) -> Tensor:
        """Quality score per sample: the feature norm (no gradient)."""
        return upcast(embeddings.detach()).norm(dim=1)

    def extra_repr(self) -> str:
        return (
            f"{super().extra_repr()}, s={self.s}, l_a={self.l_a}, u_a={self.u_a}, "
            f"l_m={self.l_m}, u_m={self.u_m}, lambda_g={self.lambda_g}"
        )
