"""Attention kernels as pure functions: softmax attention and linear attention with RoPE.

Tensors are laid out (batch, heads, tokens, head_dim).

Linear attention (Katharopoulos et al., 2020) replaces exp(q.k) by phi(q).phi(k) with
phi(x) = elu(x) + 1 > 0, so that sum_n phi(k_n) v_n^T can be formed once, O(n) in the number
of tokens. With RoPE (RoFormer, eq. 19) the rotation is applied to phi(q) and phi(k) in the
numerator only, while the denominator phi(q_m) . sum_n phi(k_n) stays un-rotated so it is
always positive:

    out_m = sum_n (R_m phi(q_m)) . (R_n phi(k_n)) v_n / sum_n phi(q_m) . phi(k_n)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from facesphere.models.backbones.vit.rope import apply_rope


def softmax_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    bias: torch.Tensor | None = None,
) -> torch.Tensor:
    """softmax(q k^T / sqrt(d) + bias) v; ``bias`` broadcasts to (B, H, L, L)."""
    if bias is not None:
        bias = bias.to(q.dtype)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=bias)


def elu_feature_map(x: torch.Tensor) -> torch.Tensor:
    """The positive feature map phi(x) = elu(x) + 1.

    Written as x + 1 for x > 0 and exp(x) otherwise (the same function), which stays strictly
    positive in floating point where elu(x) + 1 would round to 0 for x below about -17.
    """
    return torch.where(x > 0, x + 1.0, torch.exp(torch.clamp(x, max=0.0)))


def linear_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    angles: torch.Tensor | None = None,
    eps: float = 1e-6,
) -> torch.Tensor:
    """Linear attention with phi = elu + 1, optionally with RoPE ``angles`` (L, d // 2).

    Cost is O(L d^2) instead of O(L^2 d). Sums are accumulated in float32.
    """
    dtype = q.dtype
    phi_q = elu_feature_map(q.float())
    phi_k = elu_feature_map(k.float())
    denominator = torch.einsum("bhld,bhd->bhl", phi_q, phi_k.sum(dim=-2))
    if angles is not None:
        phi_q = apply_rope(phi_q, angles)
        phi_k = apply_rope(phi_k, angles)
    kv = torch.einsum("bhnd,bhne->bhde", phi_k, v.float())
    numerator = torch.einsum("bhld,bhde->bhle", phi_q, kv)
    return (numerator / (denominator.unsqueeze(-1) + eps)).to(dtype)
