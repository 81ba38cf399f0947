"""RoPE, linear attention and position-encoding helpers of the face ViT."""

from __future__ import annotations

import math

import pytest
import torch

from facesphere.models.backbones.vit.attention import (
    elu_feature_map,
    linear_attention,
    softmax_attention,
)
from facesphere.models.backbones.vit.position import relative_position_index, sincos_2d
from facesphere.models.backbones.vit.rope import (
    apply_rope,
    grid_positions,
    rope_angles_1d,
    rope_angles_2d,
)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def _unit(shape: tuple[int, ...]) -> torch.Tensor:
    x = torch.randn(shape)
    return x / x.norm(dim=-1, keepdim=True)


def _rotation_matrix(angles: torch.Tensor) -> torch.Tensor:
    """Explicit block-diagonal rotation (d, d) for one position's pair angles (d // 2,)."""
    d = 2 * angles.shape[0]
    r = torch.zeros(d, d, dtype=torch.float64)
    for i, a in enumerate(angles.double().tolist()):
        c, s = math.cos(a), math.sin(a)
        r[2 * i, 2 * i], r[2 * i, 2 * i + 1] = c, -s
        r[2 * i + 1, 2 * i], r[2 * i + 1, 2 * i + 1] = s, c
    return r


def test_rope_1d_matches_complex_formula() -> None:
    # <R(m) q, R(n) k> = Re sum_i q_i conj(k_i) exp(i (m - n) theta_i), theta_i = 1e4^(-2i/d).
    d, length = 16, 9
    q, k = _unit((length, d)), _unit((length, d))
    pos = torch.arange(length) * 3 + 2
    angles = rope_angles_1d(pos, d)
    scores = apply_rope(q, angles) @ apply_rope(k, angles).T
    theta = torch.tensor([10000.0 ** (-2 * i / d) for i in range(d // 2)], dtype=torch.float64)
    qc = torch.complex(q[:, 0::2].double(), q[:, 1::2].double())
    kc = torch.complex(k[:, 0::2].double(), k[:, 1::2].double())
    delta = (pos[:, None] - pos[None, :]).double()
    phase = torch.exp(1j * delta[..., None] * theta)
    expected = (qc[:, None, :] * kc.conj()[None, :, :] * phase).sum(-1).real
    torch.testing.assert_close(scores.double(), expected, atol=1e-5, rtol=0)
    # Not the identity: a non-zero offset changes the score.
    assert not torch.allclose(scores, q @ k.T, atol=1e-3)


@pytest.mark.parametrize("offset", [1, 5, 23])
def test_rope_1d_scores_invariant_to_common_shift(offset: int) -> None:
    d, length = 32, 12
    q, k = _unit((2, length, d)), _unit((2, length, d))
    pos = torch.randperm(20)[:length]
    a0, a1 = rope_angles_1d(pos, d), rope_angles_1d(pos + offset, d)
    s0 = apply_rope(q, a0) @ apply_rope(k, a0).transpose(-1, -2)
    s1 = apply_rope(q, a1) @ apply_rope(k, a1).transpose(-1, -2)
    torch.testing.assert_close(s0, s1, atol=1e-5, rtol=0)


@pytest.mark.parametrize("shift", [(1, 0), (0, 3), (4, 7)])
def test_rope_2d_scores_invariant_to_common_shift(shift: tuple[int, int]) -> None:
    d = 32
    rows, cols = grid_positions(5, 6)
    q, k = _unit((3, rows.numel(), d)), _unit((3, rows.numel(), d))
    a0 = rope_angles_2d(rows, cols, d)
    a1 = rope_angles_2d(rows + shift[0], cols + shift[1], d)
    s0 = apply_rope(q, a0) @ apply_rope(k, a0).transpose(-1, -2)
    s1 = apply_rope(q, a1) @ apply_rope(k, a1).transpose(-1, -2)
    torch.testing.assert_close(s0, s1, atol=1e-5, rtol=0)


def test_rope_2d_axial_split() -> None:
    # First d/4 pairs follow the row with the 1D frequencies of a d/2 vector, the rest the column.
    d = 16
    rows = torch.tensor([0, 2, 5])
    cols = torch.tensor([1, 4, 3])
    angles = rope_angles_2d(rows, cols, d)
    theta = torch.tensor([10000.0 ** (-2 * i / (d // 2)) for i in range(d // 4)])
    expected = torch.cat((rows[:, None] * theta, cols[:, None] * theta), dim=1)
    torch.testing.assert_close(angles, expected.float())
    # Moving only along a row changes only the column half of the rotation.
    same_row = rope_angles_2d(rows, cols + 1, d)
    torch.testing.assert_close(same_row[:, : d // 4], angles[:, : d // 4])
    assert not torch.allclose(same_row[:, d // 4 :], angles[:, d // 4 :])


def test_rope_preserves_norm() -> None:
    x = torch.randn(4, 2, 30, 64) * 3
    rows, cols = grid_positions(5, 6)
    y = apply_rope(x, rope_angles_2d(rows, cols, 64))
    torch.testing.assert_close(y.norm(dim=-1), x.norm(dim=-1), atol=1e-5, rtol=1e-6)
    assert not torch.allclose(y, x)


def test_rope_rejects_bad_dimensions() -> None:
    with pytest.raises(ValueError):
        rope_angles_1d(torch.arange(4), 7)
    with pytest.raises(ValueError):
        rope_angles_2d(torch.arange(4), torch.arange(4), 6)
    with pytest.raises(ValueError):
        apply_rope(torch.randn(4, 8), rope_angles_1d(torch.arange(4), 16))


def _quadratic_linear_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, angles: torch.Tensor | None
) -> torch.Tensor:
    """O(L^2) reference: rotated numerator, un-rotated denominator, one query at a time."""
    phi_q = (torch.nn.functional.elu(q.double()) + 1)[0, 0]
    phi_k = (torch.nn.functional.elu(k.double()) + 1)[0, 0]
    values = v.double()[0, 0]
    length = phi_q.shape[0]
    out = torch.zeros(length, values.shape[-1], dtype=torch.float64)
    for m in range(length):
        rq = phi_q[m] if angles is None else _rotation_matrix(angles[m]) @ phi_q[m]
        numerator = torch.zeros(values.shape[-1], dtype=torch.float64)
        denominator = torch.zeros((), dtype=torch.float64)
        for n in range(length):
            rk = phi_k[n] if angles is None else _rotation_matrix(angles[n]) @ phi_k[n]
            numerator += (rq @ rk) * values[n]
            denominator += phi_q[m] @ phi_k[n]
        out[m] = numerator / denominator
    return out


@pytest.mark.parametrize("use_rope", [False, True])
def test_linear_attention_matches_quadratic_formula(use_rope: bool) -> None:
    d = 8
    rows, cols = grid_positions(3, 4)
    length = rows.numel()
    q, k, v = (torch.randn(1, 1, length, d) for _ in range(3))
    angles = rope_angles_2d(rows, cols, d) if use_rope else None
    fast = linear_attention(q, k, v, angles)
    expected = _quadratic_linear_attention(q, k, v, angles)
    torch.testing.assert_close(fast[0, 0].double(), expected, atol=1e-5, rtol=1e-5)


def test_linear_attention_with_rope_differs_from_without() -> None:
    q, k, v = (torch.randn(2, 3, 16, 8) for _ in range(3))
    angles = rope_angles_1d(torch.arange(16), 8)
    assert not torch.allclose(linear_attention(q, k, v, angles), linear_attention(q, k, v))


def test_elu_feature_map_is_positive() -> None:
    x = torch.linspace(-30, 30, 101)
    assert bool((elu_feature_map(x) > 0).all())


def test_softmax_attention_with_bias_matches_definition() -> None:
    q, k, v = (torch.randn(2, 3, 10, 16) for _ in range(3))
    bias = torch.randn(3, 10, 10)
    logits = q @ k.transpose(-1, -2) / math.sqrt(16) + bias
    expected = torch.softmax(logits, dim=-1) @ v
    torch.testing.assert_close(softmax_attention(q, k, v, bias), expected, atol=1e-5, rtol=1e-5)


def test_relative_position_index_encodes_offsets() -> None:
    h, w = 3, 4
    index = relative_position_index(h, w)
    rows, cols = grid_positions(h, w)
    offsets = [
        (int(rows[i] - rows[j]), int(cols[i] - cols[j])) for i in range(12) for j in range(12)
    ]
    flat = index.flatten().tolist()
    by_offset: dict[tuple[int, int], set[int]] = {}
    for off, idx in zip(offsets, flat, strict=True):
        by_offset.setdefault(off, set()).add(idx)
    # Same offset -> same entry, different offsets -> different entries, all inside the table.
    assert all(len(ids) == 1 for ids in by_offset.values())
    assert len({next(iter(ids)) for ids in by_offset.values()}) == len(by_offset)
    assert min(flat) >= 0 and max(flat) < (2 * h - 1) * (2 * w - 1)


def test_sincos_2d_halves_follow_row_and_column() -> None:
    h, w, d = 3, 5, 16
    table = sincos_2d(h, w, d).view(h, w, d)
    # Row half constant along a row, column half constant down a column.
    torch.testing.assert_close(table[:, :, : d // 2], table[:, :1, : d // 2].expand(h, w, d // 2))
    torch.testing.assert_close(table[:, :, d // 2 :], table[:1, :, d // 2 :].expand(h, w, d // 2))
    # p[k, 0] = sin(k), p[k, 1] = cos(k) for the first (unit) frequency.
    torch.testing.assert_close(table[:, 0, 0], torch.sin(torch.arange(h, dtype=torch.float32)))
    torch.testing.assert_close(
        table[0, :, d // 2 + 1], torch.cos(torch.arange(w, dtype=torch.float32))
    )
