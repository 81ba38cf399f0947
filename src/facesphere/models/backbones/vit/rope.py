"""Rotary position embedding (RoPE; Su et al., RoFormer, 2021), 1D and axial 2D.

Pair (2i, 2i+1) of a query or key vector at position m is rotated by the angle
m * theta_i with theta_i = base^(-2i/d). The dot product of a rotated query at m and a rotated
key at n then depends only on m - n, and each rotation keeps the vector's norm.

For image patches (2D) the pairs are split axially: the first half of the pairs is rotated by
the row index and the second half by the column index, each half using the 1D frequencies of
a d/2-dimensional vector so that both axes cover the whole frequency range.
"""

from __future__ import annotations

import torch


def rope_frequencies(
    dim: int, base: float = 10000.0, device: torch.device | None = None
) -> torch.Tensor:
    """The ``dim // 2`` frequencies theta_i = base^(-2i/dim), float32; ``dim`` must be even."""
    if dim % 2:
        raise ValueError(f"RoPE needs an even dimension, got {dim}")
    exponents = torch.arange(0, dim, 2, dtype=torch.float32, device=device) / dim
    return base ** (-exponents)


def rope_angles_1d(positions: torch.Tensor, dim: int, base: float = 10000.0) -> torch.Tensor:
    """Angles m * theta_i for positions (L,): returns (L, dim // 2), float32."""
    theta = rope_frequencies(dim, base, positions.device)
    return positions.to(torch.float32)[:, None] * theta[None, :]


def rope_angles_2d(
    rows: torch.Tensor, cols: torch.Tensor, dim: int, base: float = 10000.0
) -> torch.Tensor:
    """Axial 2D angles for (L,) row and column indices: (L, dim // 2), rows first.

    ``dim`` must be a multiple of 4: ``dim // 4`` pairs encode the row, ``dim // 4`` the column.
    """
    if dim % 4:
        raise ValueError(f"2D RoPE needs a dimension divisible by 4, got {dim}")
    return torch.cat(
        (rope_angles_1d(rows, dim // 2, base), rope_angles_1d(cols, dim // 2, base)), dim=-1
    )


def grid_positions(
    height: int, width: int, device: torch.device | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Row and column index of every cell of an (height, width) grid in row-major order."""
    rows = torch.arange(height, device=device).repeat_interleave(width)
    cols = torch.arange(width, device=device).repeat(height)
    return rows, cols


def apply_rope(x: torch.Tensor, angles: torch.Tensor) -> torch.Tensor:
    """Rotate pairs (2i, 2i+1) of the last axis of x (..., L, d) by angles (L, d // 2)."""
    if x.shape[-1] != 2 * angles.shape[-1]:
        raise ValueError(f"angles for dim {2 * angles.shape[-1]} given for dim {x.shape[-1]}")
    cos = angles.cos().to(x.dtype)
    sin = angles.sin().to(x.dtype)
    pairs = x.unflatten(-1, (-1, 2))
    even, odd = pairs[..., 0], pairs[..., 1]
    rotated = torch.stack((even * cos - odd * sin, even * sin + odd * cos), dim=-1)
    return rotated.flatten(-2)
