"""Base classes shared by the classification heads.

Two families live here:

* :class:`Head` -- any head that turns embeddings into per-class logits and a loss.
* :class:`MarginHead` -- a cosine-based head.  Its work is split in two steps so that the margin
  can be reused outside the head (Partial FC does this):

  1. :meth:`MarginHead.cosine` computes the (N, C) cosine matrix between embeddings and a set of
     class centres (by default the head's own weight, but any gathered subset works);
  2. :meth:`MarginHead.apply_margin` takes an arbitrary (N, C) cosine matrix plus the column of
     each sample's class (or -1 when the class is not among the columns) and returns the scaled
     margin logits.

All margin arithmetic is carried out in at least float32, whatever autocast did to the matmul,
and cosines are clamped to [-1 + eps, 1 - eps] before any acos / sqrt so that gradients stay
finite.
"""

from __future__ import annotations

import numbers

import torch
import torch.nn.functional as F
from torch import Tensor, nn

COS_EPS = 1e-6
"""Cosines are clamped to [-1 + COS_EPS, 1 - COS_EPS] before angle maths."""


def upcast(t: Tensor) -> Tensor:
    """Return ``t`` in float32 when it is a half type; float32/float64 are left alone."""
    if t.dtype in (torch.float16, torch.bfloat16):
        return t.float()
    return t


def clamp_cos(cos: Tensor) -> Tensor:
    """Clamp cosines away from +-1 (in at least float32)."""
    return upcast(cos).clamp(-1.0 + COS_EPS, 1.0 - COS_EPS)


def sin_from_cos(cos: Tensor) -> Tensor:
    """sin(theta) for theta in [0, pi] from an already clamped cosine."""
    return (1.0 - cos * cos).clamp_min(0.0).sqrt()


def check_positive(name: str, value: float) -> float:
    """Raise ValueError unless ``value`` is a finite number > 0."""
    if not isinstance(value, numbers.Real) or isinstance(value, bool) or not value > 0:
        raise ValueError(f"{name} must be a positive number, got {value!r}")
    if value == float("inf"):
        raise ValueError(f"{name} must be finite, got {value!r}")
    return float(value)


def check_non_negative(name: str, value: float) -> float:
    """Raise ValueError unless ``value`` is a finite number >= 0 (margins cannot be negative)."""
    if not isinstance(value, numbers.Real) or isinstance(value, bool) or not value >= 0:
        raise ValueError(f"{name} must be a non-negative number, got {value!r}")
    if value == float("inf"):
        raise ValueError(f"{name} must be finite, got {value!r}")
    return float(value)


def check_int(name: str, value: int, minimum: int) -> int:
    """Raise ValueError unless ``value`` is an integer >= ``minimum``."""
    if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


class Head(nn.Module):
    """A classification head over ``num_classes`` identities.

    Subclasses implement :meth:`logits`; :meth:`forward` returns the cross-entropy on those
    logits plus the mean of :meth:`regularizer` when the method has one.
    """

    cosine_based: bool = False
    """True when the logits depend only on cosines (and optionally feature norms)."""

    def __init__(self, embedding_dim: int, num_classes: int, centers_per_class: int = 1) -> None:
        super().__init__()
        self.embedding_dim = check_int("embedding_dim", embedding_dim, 1)
        self.num_classes = check_int("num_classes", num_classes, 1)
        self.centers_per_class = check_int("centers_per_class", centers_per_class, 1)
        shape: tuple[int, ...] = (self.num_classes, self.embedding_dim)
        if self.centers_per_class > 1:
            shape = (self.num_classes, self.centers_per_class, self.embedding_dim)
        self.weight = nn.Parameter(torch.empty(shape))
        nn.init.normal_(self.weight, std=0.01)

    def logits(self, embeddings: Tensor, labels: Tensor) -> Tensor:
        """Per-class logits (N, C) with the method's treatment of each sample's own class."""
        raise NotImplementedError

    def regularizer(self, embeddings: Tensor) -> Tensor | None:
        """Per-sample extra loss terms (N,), already weighted, or None when there are none."""
        return None

    def forward(self, embeddings: Tensor, labels: Tensor) -> Tensor:
        """Scalar training loss for un-normalised ``embeddings`` (N, D) and ``labels`` (N,)."""
        loss = F.cross_entropy(self.logits(embeddings, labels), labels)
        extra = self.regularizer(embeddings)
        if extra is not None:
            loss = loss + extra.mean()
        return loss

    def extra_repr(self) -> str:
        k = f", centers_per_class={self.centers_per_class}" if self.centers_per_class > 1 else ""
        return f"embedding_dim={self.embedding_dim}, num_classes={self.num_classes}{k}"


class MarginHead(Head):
    """A cosine-based head: ``logit_j = scale * f(cos theta_j)``.

    Subclasses override :meth:`target_margin` (the adjusted cosine of the own class) and, when the
    method needs it, :meth:`adjust_non_target`, :meth:`logit_scale` and :meth:`update_state`.
    """

    cosine_based = True

    def __init__(
        self,
        embedding_dim: int,
        num_classes: int,
        s: float = 64.0,
        centers_per_class: int = 1,
    ) -> None:
        super().__init__(embedding_dim, num_classes, centers_per_class)
        self.s = check_positive("s", s)

    # -- step 1: cosines -------------------------------------------------------------------
    def cosine(self, embeddings: Tensor, weight: Tensor | None = None) -> Tensor:
        """Cosine matrix (N, C) between ``embeddings`` and class centres ``weight``.

        ``weight`` defaults to the head's own centres; it may be any (C', D) (or (C', K, D) for
        sub-centre heads) subset.  With several centres per class the largest cosine is kept.
        The matmul runs in whatever precision autocast chooses; the result is upcast.
        """
        w = self.weight if weight is None else weight
        x = F.normalize(upcast(embeddings), dim=1)
        w = F.normalize(upcast(w), dim=-1)
        cos = upcast(F.linear(x, w.reshape(-1, w.shape[-1])))
        if self.centers_per_class > 1:
            cos = cos.view(cos.shape[0], -1, self.centers_per_class).amax(dim=2)
        return cos

    # -- step 2: margin --------------------------------------------------------------------
    def apply_margin(
        self,
        cos: Tensor,
        target: Tensor,
        *,
        target_cos: Tensor | None = None,
        norms: Tensor | None = None,
    ) -> Tensor:
        """Turn a cosine matrix into scaled margin logits.

        Args:
            cos: (N, C) cosines, any float dtype (computed in >= float32 here).
            target: (N,) column of each sample's own class in ``cos``, or -1 when that class is
                not among the columns (its logit lives on another shard).
            target_cos: (N,) cosine of every sample to its own class; needed only when some
                targets are -1 (methods that look at the target from non-target columns, such
                as CurricularFace, and running statistics use it).  No gradient flows through it.
            norms: (N,) feature norms of the un-normalised embeddings, used by norm-aware heads.

        Returns:
            (N, C) logits in float32 (float64 when the inputs are float64).
        """
        cos = clamp_cos(cos)
        target = target.long()
        present = target >= 0
        column = target.clamp_min(0).unsqueeze(1)
        own = cos.gather(1, column).squeeze(1)
        if target_cos is None:
            if not bool(present.all()):
                raise ValueError("target_cos is required when some targets are absent (-1)")
            target_cos = own.detach()
        else:
            target_cos = clamp_cos(target_cos.detach())
        if norms is not None:
            norms = upcast(norms)
        self.update_state(target_cos, norms)
        new_own = self.target_margin(own, norms)
        out = self.adjust_non_target(cos, target_cos, norms)
        kept = out.gather(1, column).squeeze(1)
        out = out.scatter(1, column, torch.where(present, new_own, kept).unsqueeze(1))
        return out * self.logit_scale(norms)

    def logits(self, embeddings: Tensor, labels: Tensor) -> Tensor:
        """Margin logits (N, C) of the whole head for un-normalised ``embeddings``."""
        norms = upcast(embeddings).norm(dim=1)
        cos = clamp_cos(self.cosine(embeddings))
        # Every label is a column here; passing target_cos skips the (device-syncing) check.
        own = cos.detach().gather(1, labels.long().unsqueeze(1)).squeeze(1)
        return self.apply_margin(cos, labels, target_cos=own, norms=norms)

    # -- hooks -----------------------------------------------------------------------------
    def target_margin(self, cos_target: Tensor, norms: Tensor | None) -> Tensor:
        """Adjusted (unscaled) cosine of each sample's own class; identity means no margin."""
        return cos_target

    def adjust_non_target(self, cos: Tensor, target_cos: Tensor, norms: Tensor | None) -> Tensor:
        """Adjusted cosines of the other classes (the target column is overwritten later)."""
        return cos

    def logit_scale(self, norms: Tensor | None) -> Tensor | float:
        """Multiplier applied to every adjusted cosine (default: the fixed scale ``s``)."""
        return self.s

    def update_state(self, target_cos: Tensor, norms: Tensor | None) -> None:
        """Update running statistics from one batch (called once per forward, before use)."""

    @staticmethod
    def require_norms(norms: Tensor | None, name: str) -> Tensor:
        """Return ``norms`` or raise a clear error for heads that need feature norms."""
        if norms is None:
            raise ValueError(f"{name} needs the feature norms of the un-normalised embeddings")
        return norms
