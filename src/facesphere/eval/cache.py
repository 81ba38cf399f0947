"""A persistent cache of each image's main-face embedding, keyed by file content and pipeline."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import numpy as np

from facesphere.paths import create_private
from facesphere.pipeline.analyzer import Face


class EmbeddingCache:
    """SQLite table (sha256, pipeline) -> the face found (box, landmarks, source, embedding),
    in an owner-only file (biometric data)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        create_private(self.path)  # owner-only, like the -wal and -shm files SQLite adds
        self._db = sqlite3.connect(self.path, timeout=30)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS faces (sha256 TEXT, pipeline TEXT, face TEXT, "
            "embedding BLOB, PRIMARY KEY (sha256, pipeline))"
        )

    def get(self, sha256: str, pipeline: str) -> Face | None:
        row = self._db.execute(
            "SELECT face, embedding FROM faces WHERE sha256 = ? AND pipeline = ?",
            (sha256, pipeline),
        ).fetchone()
        if row is None:
            return None
        info = json.loads(row[0])
        return Face(
            np.array(info["box"], np.float32),
            info["score"],
            np.array(info["landmarks"], np.float32),
            info["landmark_scheme"],
            info["source"],
            np.frombuffer(row[1], dtype=np.float32).copy(),
        )

    def put(self, sha256: str, pipeline: str, face: Face) -> None:
        assert face.embedding is not None
        self._db.execute(
            "INSERT OR REPLACE INTO faces VALUES (?, ?, ?, ?)",
            (
                sha256,
                pipeline,
                json.dumps(face.to_dict()),
                face.embedding.astype(np.float32).tobytes(),
            ),
        )

    def commit(self) -> None:
        self._db.commit()

    def close(self) -> None:
        self._db.commit()
        self._db.close()
