"""Absolute and relative 2D position encodings for patch tokens."""

from __future__ import annotations

import torch
from torch import nn

from facesphere.models.backbones.vit.rope import grid_positions


def sincos_1d(positions: torch.Tensor, dim: int, base: float = 10000.0) -> torch.Tensor:
    """Sinusoidal encoding (L, dim): p[k, 2i] = sin(k w_i), p[k, 2i+1] = cos(k w_i)."""
    if dim % 2:
        raise ValueError(f"sinusoidal encoding needs an even dimension, got {dim}")
    omega = base ** (-torch.arange(0, dim, 2, dtype=torch.float32, device=positions.device) / dim)
    angles = positions.to(torch.float32)[:, None] * omega[None, :]
    return torch.stack((angles.sin(), angles.cos()), dim=-1).flatten(-2)


def sincos_2d(
    height: int, width: int, dim: int, device: torch.device | None = None
) -> torch.Tensor:
    """Fixed 2D encoding (height * width, dim): row in the first half, column in the second."""
    if dim % 4:
        raise ValueError(f"2D sinusoidal encoding needs a dimension divisible by 4, got {dim}")
    rows, cols = grid_positions(height, width, device)
    return torch.cat((sincos_1d(rows, dim // 2), sincos_1d(cols, dim // 2)), dim=-1)


def relative_position_index(height: int, width: int) -> torch.Tensor:
    """(L, L) index into a (2h-1)(2w-1) table of the 2D offset between token i and token j."""
    rows, cols = grid_positions(height, width)
    d_row = rows[:, None] - rows[None, :] + (height - 1)
    d_col = cols[:, None] - cols[None, :] + (width - 1)
    return d_row * (2 * width - 1) + d_col


class RelativePositionBias(nn.Module):
    """Learned per-head bias for every 2D relative offset, added to attention logits."""

    def __init__(self, grid: tuple[int, int], heads: int) -> None:
        super().__init__()
        self.grid = grid
        h, w = grid
        self.table = nn.Parameter(torch.zeros((2 * h - 1) * (2 * w - 1), heads))
        nn.init.trunc_normal_(self.table, std=0.02)
        self.register_buffer("index", relative_position_index(h, w), persistent=False)

    def forward(self) -> torch.Tensor:
        """The bias (heads, L, L)."""
        length = self.index.shape[0]
        bias = self.table[self.index.reshape(-1)].view(length, length, -1)
        return bias.permute(2, 0, 1)
