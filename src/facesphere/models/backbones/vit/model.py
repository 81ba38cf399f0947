"""Vision Transformers for 112x112 faces (ViT-T, ViT-S) with selectable position encoding
and attention kernel.

``pos_embed``: ``none``; ``learned`` (absolute vectors added to the patch tokens);
``sincos2d`` (fixed 2D sinusoidal, added); ``relative_bias`` (learned per-head bias indexed by
the 2D offset, added to the softmax logits); ``rope2d`` (axial 2D rotary embedding of q and k).
``attention``: ``softmax`` or ``linear`` (phi = elu + 1). An additive logit bias has no place
in linear attention, so ``relative_bias`` with ``linear`` is refused.

There is no class token: the final, layer-normed tokens are laid back on the patch grid,
``forward_features`` returns that (N, dim, h, w) map and the usual BN - dropout - FC - BN neck
flattens it, as face ViTs commonly do.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from facesphere.models.backbones._common import DropPath, EmbeddingNeck, FaceBackbone, as_size
from facesphere.models.backbones._registry import register_backbone
from facesphere.models.backbones.vit.attention import linear_attention, softmax_attention
from facesphere.models.backbones.vit.position import RelativePositionBias, sincos_2d
from facesphere.models.backbones.vit.rope import apply_rope, grid_positions, rope_angles_2d

POS_EMBEDS = ("none", "learned", "sincos2d", "relative_bias", "rope2d")
ATTENTIONS = ("softmax", "linear")


def check_vit_options(pos_embed: str, attention: str) -> None:
    """Raise ``ValueError`` for an unknown or incompatible pos_embed / attention pair."""
    if pos_embed not in POS_EMBEDS:
        raise ValueError(f"unknown pos_embed {pos_embed!r}; choose one of {', '.join(POS_EMBEDS)}")
    if attention not in ATTENTIONS:
        raise ValueError(f"unknown attention {attention!r}; choose one of {', '.join(ATTENTIONS)}")
    if pos_embed == "relative_bias" and attention == "linear":
        raise ValueError(
            "pos_embed='relative_bias' adds a bias to softmax logits and cannot be used with "
            "attention='linear' (no logits are formed); use 'rope2d' for a relative encoding"
        )


class SelfAttention(nn.Module):
    """Multi-head self-attention with optional RoPE and relative position bias."""

    def __init__(
        self,
        dim: int,
        heads: int,
        attention: str = "softmax",
        relative_bias_grid: tuple[int, int] | None = None,
    ) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim {dim} is not divisible by heads {heads}")
        self.heads = heads
        self.attention = attention
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.relative_bias = (
            RelativePositionBias(relative_bias_grid, heads) if relative_bias_grid else None
        )

    def forward(self, x: torch.Tensor, angles: torch.Tensor | None = None) -> torch.Tensor:
        batch, length, dim = x.shape
        qkv = self.qkv(x).view(batch, length, 3, self.heads, dim // self.heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        if self.attention == "linear":
            out = linear_attention(q, k, v, angles)
        else:
            if angles is not None:
                q, k = apply_rope(q, angles), apply_rope(k, angles)
            bias = self.relative_bias().unsqueeze(0) if self.relative_bias is not None else None
            out = softmax_attention(q, k, v, bias)
        return self.proj(out.transpose(1, 2).reshape(batch, length, dim))


class TransformerBlock(nn.Module):
    """Pre-norm block: x + attn(LN(x)), then x + MLP(LN(x)), with stochastic depth."""

    def __init__(
        self,
        dim: int,
        heads: int,
        mlp_ratio: float,
        attention: str,
        relative_bias_grid: tuple[int, int] | None,
        drop_path_rate: float,
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = SelfAttention(dim, heads, attention, relative_bias_grid)
        self.norm2 = nn.LayerNorm(dim)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))
        self.drop_path = DropPath(drop_path_rate)

    def forward(self, x: torch.Tensor, angles: torch.Tensor | None = None) -> torch.Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x), angles))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class FaceViT(FaceBackbone):
    """ViT over non-overlapping patches of a face crop, no class token."""

    def __init__(
        self,
        embedding_dim: int = 512,
        input_size: int | tuple[int, int] = (112, 112),
        patch_size: int = 8,
        dim: int = 192,
        depth: int = 12,
        heads: int = 3,
        mlp_ratio: float = 4.0,
        pos_embed: str = "learned",
        attention: str = "softmax",
        dropout: float = 0.0,
        drop_path_rate: float = 0.1,
        rope_base: float = 10000.0,
        global_pool: bool = False,
    ) -> None:
        super().__init__()
        check_vit_options(pos_embed, attention)
        if pos_embed == "rope2d" and (dim // heads) % 4:
            raise ValueError(f"rope2d needs a head dimension divisible by 4, got {dim // heads}")
        if pos_embed == "sincos2d" and dim % 4:
            raise ValueError(f"sincos2d needs dim divisible by 4, got {dim}")
        self.embedding_dim = embedding_dim
        self.input_size = as_size(input_size)
        self.patch_size = patch_size
        self.pos_embed_kind = pos_embed
        self.attention_kind = attention
        self.rope_base = rope_base
        self.dim = dim
        self.heads = heads
        self.grid = (self.input_size[1] // patch_size, self.input_size[0] // patch_size)
        self.patch_embed = nn.Conv2d(3, dim, patch_size, patch_size)
        self.pos_embed: nn.Parameter | None = None
        if pos_embed == "learned":
            self.pos_embed = nn.Parameter(torch.zeros(1, self.grid[0] * self.grid[1], dim))
        bias_grid = self.grid if pos_embed == "relative_bias" else None
        self.blocks = nn.ModuleList(
            TransformerBlock(
                dim, heads, mlp_ratio, attention, bias_grid, drop_path_rate * i / max(depth - 1, 1)
            )
            for i in range(depth)
        )
        self.norm = nn.LayerNorm(dim)
        self.neck = EmbeddingNeck(dim, self.grid, embedding_dim, dropout, global_pool)
        self.apply(self._init_weights)
        if self.pos_embed is not None:
            nn.init.trunc_normal_(self.pos_embed, std=0.02)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Conv2d)):
            nn.init.trunc_normal_(module.weight, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)

    def _check_grid(self, grid: tuple[int, int]) -> None:
        if grid != self.grid and self.pos_embed_kind in ("learned", "relative_bias"):
            raise ValueError(
                f"pos_embed={self.pos_embed_kind!r} was built for a {self.grid} patch grid, "
                f"got {grid}; build the model with input_size matching the input"
            )

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.patch_embed(x)
        grid = (tokens.shape[2], tokens.shape[3])
        self._check_grid(grid)
        tokens = tokens.flatten(2).transpose(1, 2)
        if self.pos_embed is not None:
            tokens = tokens + self.pos_embed
        elif self.pos_embed_kind == "sincos2d":
            tokens = tokens + sincos_2d(*grid, self.dim, tokens.device).to(tokens.dtype)
        angles = None
        if self.pos_embed_kind == "rope2d":
            rows, cols = grid_positions(*grid, device=tokens.device)
            angles = rope_angles_2d(rows, cols, self.dim // self.heads, self.rope_base)
        for block in self.blocks:
            tokens = block(tokens, angles)
        tokens = self.norm(tokens)
        return tokens.transpose(1, 2).reshape(x.shape[0], self.dim, *grid)


@register_backbone("vit_t", forwards_to=FaceViT)
def vit_t(embedding_dim: int = 512, **kwargs: Any) -> FaceViT:
    """ViT-Tiny for faces: patch 8 (14x14 tokens), dim 192, depth 12, 3 heads."""
    options: dict[str, Any] = {"dim": 192, "depth": 12, "heads": 3}
    options.update(kwargs)
    return FaceViT(embedding_dim=embedding_dim, **options)


@register_backbone("vit_s", forwards_to=FaceViT)
def vit_s(embedding_dim: int = 512, **kwargs: Any) -> FaceViT:
    """ViT-Small for faces: patch 8 (14x14 tokens), dim 384, depth 12, 6 heads."""
    options: dict[str, Any] = {"dim": 384, "depth": 12, "heads": 6}
    options.update(kwargs)
    return FaceViT(embedding_dim=embedding_dim, **options)
