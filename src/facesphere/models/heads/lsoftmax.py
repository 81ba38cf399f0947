"""Multiplicative angular margins: L-Softmax (Liu et al. 2016) and SphereFace / A-Softmax (2017).

Both replace the target cosine by

    psi(theta) = (-1)^k cos(m theta) - 2k,   theta in [k pi / m, (k + 1) pi / m],  k = 0 .. m-1,

which is monotonically decreasing on [0, pi] and equals cos(theta) for m = 1.  Training from
scratch with the full margin rarely converges, so the target logit is mixed with the plain one,

    target = (lambda * plain + margin) / (1 + lambda),

where lambda decays each training step: lambda = max(lambda_min, base (1 + gamma it)^-power).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from facesphere.models.heads.registry import register_head

from .base import Head, MarginHead, check_int, check_non_negative, clamp_cos, upcast


def chebyshev_cos_multiple(cos: Tensor, m: int) -> Tensor:
    """cos(m theta) as the Chebyshev polynomial T_m(cos theta) (smooth in cos, no acos)."""
    previous, current = torch.ones_like(cos), cos
    if m == 0:
        return previous
    for _ in range(m - 1):
        previous, current = current, 2.0 * cos * current - previous
    return current


def psi(cos: Tensor, m: int) -> Tensor:
    """L-Softmax's psi(theta) from cos(theta) (clamped inside); the segment k carries no grad."""
    cos = clamp_cos(cos)
    with torch.no_grad():
        k = torch.floor(torch.acos(cos) * (m / math.pi)).clamp(0, m - 1)
        sign = 1.0 - 2.0 * torch.remainder(k, 2.0)
    return sign * chebyshev_cos_multiple(cos, m) - 2.0 * k


def annealed_lambda(
    iteration: int, base: float, gamma: float, power: float, minimum: float
) -> float:
    """lambda = max(minimum, base * (1 + gamma * iteration) ** -power)."""
    return max(minimum, base * (1.0 + gamma * iteration) ** (-power))


class _LambdaAnnealing(nn.Module):
    """Holds the step counter and schedule shared by L-Softmax and SphereFace."""

    iteration: Tensor

    def _init_annealing(
        self, m: int, lambda_base: float, gamma: float, power: float, lambda_min: float
    ) -> None:
        self.m = check_int("m", m, 1)
        self.lambda_base = check_non_negative("lambda_base", lambda_base)
        self.gamma = check_non_negative("gamma", gamma)
        self.power = check_non_negative("power", power)
        self.lambda_min = check_non_negative("lambda_min", lambda_min)
        self.register_buffer("iteration", torch.zeros((), dtype=torch.long))

    def current_lambda(self) -> float:
        """The mixing weight for the current step counter."""
        return annealed_lambda(
            int(self.iteration), self.lambda_base, self.gamma, self.power, self.lambda_min
        )

    def _advance(self) -> None:
        # The counter moves first, so the first training step uses lambda(1) (as in Caffe).
        if self.training:
            self.iteration += 1


@register_head("lsoftmax")
class LSoftmaxHead(Head, _LambdaAnnealing):
    """L-Softmax: target logit ``||W_y|| ||x|| psi(theta_y)``, others ``W_j . x`` (no bias)."""

    def __init__(
        self,
        embedding_dim: int,
        num_classes: int,
        m: int = 2,
        lambda_base: float = 1000.0,
        gamma: float = 0.12,
        power: float = 1.0,
        lambda_min: float = 0.0,
    ) -> None:
        super().__init__(embedding_dim, num_classes)
        self._init_annealing(m, lambda_base, gamma, power, lambda_min)

    def logits(self, embeddings: Tensor, labels: Tensor) -> Tensor:
        self._advance()
        lam = self.current_lambda()
        labels = labels.long()
        plain = upcast(F.linear(embeddings, self.weight))
        x = upcast(embeddings)
        w_own = upcast(self.weight)[labels]
        cos = (F.normalize(x, dim=1) * F.normalize(w_own, dim=1)).sum(dim=1)
        magnitude = x.norm(dim=1) * w_own.norm(dim=1)
        own_plain = plain.gather(1, labels.unsqueeze(1)).squeeze(1)
        target = (lam * own_plain + magnitude * psi(cos, self.m)) / (1.0 + lam)
        return plain.scatter(1, labels.unsqueeze(1), target.unsqueeze(1))

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, m={self.m}"


@register_head("sphereface")
class SphereFaceHead(MarginHead, _LambdaAnnealing):
    """SphereFace (A-Softmax): L-Softmax with ``||W|| = 1``; logits ``||x|| cos(theta_j)``.

    The feature norm is the logit scale, so ``s`` is not used.
    """

    def __init__(
        self,
        embedding_dim: int,
        num_classes: int,
        m: int = 4,
        lambda_base: float = 1000.0,
        gamma: float = 0.12,
        power: float = 1.0,
        lambda_min: float = 5.0,
    ) -> None:
        super().__init__(embedding_dim, num_classes, s=1.0)
        self._init_annealing(m, lambda_base, gamma, power, lambda_min)

    def update_state(self, target_cos: Tensor, norms: Tensor | None) -> None:
        self._advance()

    def target_margin(self, cos_target: Tensor, norms: Tensor | None) -> Tensor:
        lam = self.current_lambda()
        return (lam * cos_target + psi(cos_target, self.m)) / (1.0 + lam)

    def logit_scale(self, norms: Tensor | None) -> Tensor:
        return self.require_norms(norms, "sphereface").unsqueeze(1)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, m={self.m}"
