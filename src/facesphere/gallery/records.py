"""What a gallery hands back: subjects, enrolled faces, matches and identifications."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class Subject:
    """An enrolled person: name, free-form metadata, how many faces it has and the id of its
    first (lowest-id) face, None without faces (what shows the subject, e.g. its thumbnail)."""

    id: int
    name: str
    metadata: dict[str, Any]
    created_at: str
    face_count: int
    first_face_id: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready description."""
        return {
            "name": self.name,
            "metadata": self.metadata,
            "created_at": self.created_at,
            "faces": self.face_count,
            "first_face_id": self.first_face_id,
        }


@dataclass
class FaceRecord:
    """One enrolled face; `embedding` is filled only when asked for."""

    id: int
    subject: str
    model: str
    model_version: str
    sha256: str | None
    box: list[float] | None
    score: float | None
    created_at: str
    embedding: np.ndarray | None = field(default=None, repr=False)

    def to_dict(self, with_embedding: bool = False) -> dict[str, Any]:
        """JSON-ready description (embedding as a list when `with_embedding`)."""
        data: dict[str, Any] = {
            "id": self.id,
            "subject": self.subject,
            "model": self.model,
            "model_version": self.model_version,
            "sha256": self.sha256,
            "box": self.box,
            "score": self.score,
            "created_at": self.created_at,
        }
        if with_embedding and self.embedding is not None:
            data["embedding"] = [float(v) for v in self.embedding]
        return data


@dataclass
class Match:
    """A subject's score for a query: the best cosine similarity over its faces."""

    subject: str
    score: float
    face_id: int

    def to_dict(self) -> dict[str, Any]:
        return {"subject": self.subject, "score": round(self.score, 6)}


@dataclass
class Identification:
    """Who a query face is: `identity` is the best subject if its score reaches the threshold,
    else None (unknown); `matches` are the top subjects, best first."""

    identity: str | None
    score: float | None
    threshold: float
    matches: list[Match]

    def to_dict(self) -> dict[str, Any]:
        return {
            "identity": self.identity,
            "score": None if self.score is None else round(self.score, 6),
            "matches": [m.to_dict() for m in self.matches],
        }
