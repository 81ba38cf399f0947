"""Fused recognizers: several recognizers as one, e.g. `dlib-resnet+sface`.

The fused embedding concatenates the members' unit embeddings, member i scaled by the square
root of its weight w_i (the weights sum to 1), so it is a unit vector too and the cosine of two
fused embeddings is the weighted mean of the members' cosines. Each member keeps its own
alignment template: `embed_chips` takes one chip array per member, in the order of
`card.templates`. The weights are chosen on development data (bench/calibrate.py) and kept in
the card.
"""

from __future__ import annotations

import numpy as np

from facesphere.cards import ModelCard
from facesphere.errors import ModelError
from facesphere.pretrained.cards import DLIB_RESNET_SFACE
from facesphere.recognize.base import Recognizer, check_chip_arrays
from facesphere.recognize.registry import RECOGNIZERS, register_recognizer


def fuse_embeddings(card: ModelCard, embeddings: list[np.ndarray]) -> np.ndarray:
    """The fused embeddings (N, sum of dims) of the members' unit embeddings, in card order."""
    if len(embeddings) != len(card.members):
        raise ModelError(f"{card.name} fuses {len(card.members)} embeddings, got {len(embeddings)}")
    parts = [
        np.sqrt(member.weight) * np.asarray(vectors, np.float32)
        for member, vectors in zip(card.members, embeddings)
    ]
    return np.concatenate(parts, axis=1).astype(np.float32)


def split_fused(card: ModelCard, fused: np.ndarray) -> list[np.ndarray]:
    """The members' unit embeddings inside fused embeddings (the inverse of fuse_embeddings)."""
    parts, start = [], 0
    for member in card.members:
        width = int(member.card.embedding_dim or 0)
        parts.append(np.asarray(fused)[:, start : start + width] / np.sqrt(member.weight))
        start += width
    return parts


class FusedRecognizer:
    """The members of a fused card, built with the options each takes."""

    def __init__(self, card: ModelCard, members: list[Recognizer]) -> None:
        if [m.card.name for m in members] != [m.card.name for m in card.members]:
            raise ModelError(f"{card.name}: members do not match its card")
        self.card = card
        self.members = members

    def embed_chips(self, *chips: np.ndarray) -> np.ndarray:
        """Fused unit embeddings (N, D) of one chip array per member (card.templates order)."""
        checked = check_chip_arrays(self.card, chips)
        parts = [member.embed_chips(c) for member, c in zip(self.members, checked)]
        return fuse_embeddings(self.card, parts)


@register_recognizer("dlib-resnet+sface", card=DLIB_RESNET_SFACE)
def dlib_resnet_sface(
    engine: str = "torch", device: str = "cpu", batch_size: int = 32
) -> FusedRecognizer:
    """dlib's ResNet (on `engine`) and SFace fused with the weights of their card."""
    members = [
        RECOGNIZERS.create("dlib-resnet", engine=engine, device=device, batch_size=batch_size),
        RECOGNIZERS.create("sface", device=device, batch_size=batch_size),
    ]
    return FusedRecognizer(DLIB_RESNET_SFACE, members)
