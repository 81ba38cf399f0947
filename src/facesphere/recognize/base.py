"""The interface of face recognizers and the chip handling they share."""

from __future__ import annotations

from typing import Protocol

import numpy as np

from facesphere.cards import ModelCard


class Recognizer(Protocol):
    """Embeds aligned uint8 RGB chips (N, H, W, 3) into L2-normalised vectors
    (N, card.embedding_dim): one chip array per template of `card.templates` (one for a single
    model, made with `card.template` at `card.input_size`; one per member for a fused one)."""

    card: ModelCard

    def embed_chips(self, *chips: np.ndarray) -> np.ndarray: ...


def l2_normalize(vectors: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    """Rows of `vectors` scaled to unit length."""
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
    return vectors / np.maximum(norms, eps)


def check_chips(chips: np.ndarray, card: ModelCard) -> np.ndarray:
    """`chips` as (N, H, W, 3) at the card's input size (one chip may come without N)."""
    chips = np.asarray(chips)
    if chips.ndim == 3:
        chips = chips[None]
    assert card.input_size is not None
    width, height = card.input_size
    if chips.ndim != 4 or chips.shape[1:] != (height, width, 3):
        raise ValueError(
            f"{card.name} expects chips of shape (N, {height}, {width}, 3), got {chips.shape}"
        )
    return chips


def check_chip_arrays(card: ModelCard, chips: tuple[np.ndarray, ...]) -> list[np.ndarray]:
    """One checked chip array per template of `card` (per member of a fused card), all with
    the same number of faces; ValueError otherwise."""
    cards = [m.card for m in card.members] or [card]
    if len(chips) != len(cards):
        raise ValueError(
            f"{card.name} takes {len(cards)} chip arrays ({', '.join(card.templates)}), "
            f"got {len(chips)}"
        )
    checked = [check_chips(c, member) for c, member in zip(chips, cards)]
    if len({len(c) for c in checked}) != 1:
        raise ValueError(f"{card.name}: the chip arrays hold different numbers of faces")
    return checked


def normalize_chips(chips: np.ndarray, card: ModelCard) -> np.ndarray:
    """Network input (N, 3, H, W) float32 of checked chips: (pixel - mean) / std per the card."""
    return np.ascontiguousarray(card.normalization.apply(chips).transpose(0, 3, 1, 2))
