"""The files recognition training writes, readable by export and inference without the trainer.

Two formats, both ``torch.save`` dictionaries with a ``format`` key:

* ``facesphere-backbone`` (``model.pt``, ``best.pt``): the backbone's weights, how to rebuild it
  (registered name, embedding size, options) and its model card;
* ``facesphere-checkpoint`` (``checkpoints/step-N/rank-R.pt``): a resumable training state whose
  ``model`` entry is the backbone's weights and whose ``config`` entry is the training config.

Every such file is written with :func:`save_atomic` (the detector's too).
"""

from __future__ import annotations

import os
import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from facesphere.align.templates import TEMPLATES
from facesphere.cards import TRAINING_NORMALIZATION, ModelCard
from facesphere.errors import ModelError
from facesphere.models.backbones import create_backbone

CHECKPOINT_FORMAT = "facesphere-checkpoint"
MODEL_FORMAT = "facesphere-backbone"


def backbone_template(backbone: nn.Module) -> str:
    """The alignment template a backbone's crops use (``standard112`` unless it says)."""
    return str(getattr(backbone, "template", "standard112"))


def trained_card(
    name: str,
    embedding_dim: int,
    template: str,
    step: int | None,
    data: str = "unknown",
) -> ModelCard:
    """The card of a backbone trained by facesphere (no calibrated thresholds yet)."""
    return ModelCard(
        name=name,
        version=f"step-{step}" if step is not None else "1",
        task="recognition",
        embedding_dim=int(embedding_dim),
        template=template,
        input_size=TEMPLATES[template].size,
        normalization=TRAINING_NORMALIZATION,
        weights_source=f"trained with facesphere train ({step} steps)",
        licence="chosen by whoever trained it",
        data_licence=f"the terms of its training data ({data})",
    )


def save_atomic(blob: dict[str, Any], path: Path) -> None:
    """``torch.save`` to ``path`` through a temporary file, so a reader never sees half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(blob, tmp)
    os.replace(tmp, path)


def save_backbone(
    path: Path,
    backbone: nn.Module,
    card: ModelCard,
    backbone_name: str,
    backbone_kwargs: dict[str, Any],
    step: int,
    extra: dict[str, Any] | None = None,
) -> None:
    """Write a self-describing backbone file (what export and `init_backbone` read)."""
    blob = {
        "format": MODEL_FORMAT,
        "backbone": backbone_name,
        "embedding_dim": card.embedding_dim,
        "backbone_kwargs": backbone_kwargs,
        "state_dict": {k: v.detach().cpu() for k, v in backbone.state_dict().items()},
        "card": card.to_dict(),
        "step": step,
        **(extra or {}),
    }
    save_atomic(blob, path)


def load_backbone_state(path: str | Path) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Backbone weights + metadata (``backbone``, ``embedding_dim``, ``backbone_kwargs``,
    ``card``: a ModelCard) from a backbone file, a checkpoint folder or a rank file."""
    path = Path(path)
    if path.is_dir():
        path = path / "rank-0.pt"
    if not path.is_file():
        raise ModelError(f"no facesphere checkpoint or backbone file at {path}")
    try:
        blob = torch.load(path, map_location="cpu", weights_only=False)
    except (RuntimeError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile) as exc:
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ModelError(f"{path} is not a readable checkpoint: {message}") from None
    if not isinstance(blob, dict) or blob.get("format") not in (CHECKPOINT_FORMAT, MODEL_FORMAT):
        raise ModelError(f"{path} is not a facesphere checkpoint or backbone file")
    if blob["format"] == MODEL_FORMAT:
        meta = dict(blob, card=ModelCard.from_dict(blob["card"]))
        return blob["state_dict"], meta
    cfg = blob["config"]
    template = blob.get("template", "standard112")
    meta = {
        "backbone": cfg["backbone"],
        "embedding_dim": cfg["embedding_dim"],
        "backbone_kwargs": cfg.get("backbone_kwargs", {}),
        "card": trained_card(
            cfg["backbone"],
            cfg["embedding_dim"],
            template,
            blob.get("step"),
            str(cfg.get("data", {}).get("source", "unknown")),
        ),
        "step": blob.get("step"),
    }
    return blob["model"], meta


def load_backbone(path: str | Path) -> tuple[nn.Module, ModelCard]:
    """The eval-mode backbone of a checkpoint or backbone file, and its card."""
    state, meta = load_backbone_state(path)
    backbone = create_backbone(
        meta["backbone"], embedding_dim=meta["embedding_dim"], **meta.get("backbone_kwargs", {})
    )
    backbone.load_state_dict(state)
    return backbone.eval(), meta["card"]
