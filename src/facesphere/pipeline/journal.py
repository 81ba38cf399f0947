"""The progress journal of a batch run: each file's analysis, appended as it is done, so that
a run that was interrupted resumes where it stopped instead of starting over.

A JSON-lines file: a header naming the pipeline (the analyzer's config and the chunk options),
then one line per file with its size, modification time, and its faces (coordinates as exact
decimal floats, embeddings as base64 float32) or error. A file that changed since it was
journaled is analysed again; a line cut short by a kill is dropped. Opening a journal of
another pipeline is a ConfigError: the results would mix.
"""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from facesphere.errors import ConfigError
from facesphere.pipeline.analyzer import Face
from facesphere.pipeline.batch import FileFaces

FORMAT = "facesphere-journal"
VERSION = 1


def progress_path(output: str | os.PathLike) -> Path:
    """Where the journal of a run writing `output` lives: beside it, `output`.progress."""
    output = Path(output)
    return output.with_name(output.name + ".progress")


def _stamp(path: str) -> list[int] | None:
    """(size, mtime_ns) of a file, None when it cannot be stat()ed."""
    try:
        info = os.stat(path)
    except OSError:
        return None
    return [info.st_size, info.st_mtime_ns]


def _array(values: np.ndarray) -> list[float]:
    return [float(v) for v in np.asarray(values, np.float64).ravel()]


def _face_to_json(face: Face) -> dict[str, Any]:
    embedding = None
    if face.embedding is not None:
        embedding = base64.b64encode(np.asarray(face.embedding, "<f4").tobytes()).decode()
    return {
        "box": _array(face.box),
        "score": float(face.score),
        "landmarks": np.asarray(face.landmarks, np.float64).tolist(),
        "scheme": face.landmark_scheme,
        "source": face.source,
        "embedding": embedding,
        "extra": {k: np.asarray(v, np.float64).tolist() for k, v in face.extra_landmarks.items()},
    }


def _face_from_json(data: dict[str, Any]) -> Face:
    embedding = data["embedding"]
    return Face(
        np.array(data["box"]),
        data["score"],
        np.array(data["landmarks"]),
        data["scheme"],
        data["source"],
        None if embedding is None else np.frombuffer(base64.b64decode(embedding), "<f4").copy(),
        {k: np.array(v) for k, v in data["extra"].items()},
    )


class Journal:
    """The journal at `path` for the pipeline `pipeline` (a JSON-able description): `get` what
    is done, `record` what gets done; created on the first record, deleted by `remove`."""

    def __init__(self, path: str | os.PathLike, pipeline: dict[str, Any]) -> None:
        self.path = Path(path)
        self.pipeline = json.loads(json.dumps(pipeline))
        self._done: dict[str, tuple[list[int] | None, dict[str, Any]]] = {}
        self._good_bytes = 0
        if self.path.exists():
            self._read()

    def _read(self) -> None:
        with open(self.path, "rb") as handle:
            lines = handle.read().split(b"\n")
        offset = 0
        for number, raw in enumerate(lines[:-1]):  # the part after the last newline is cut short
            try:
                entry = json.loads(raw)
            except ValueError:
                break  # a damaged line: keep what came before it
            if number == 0:
                if entry.get("format") != FORMAT or entry.get("version") != VERSION:
                    raise ConfigError(f"{self.path} is not a facesphere journal; delete it")
                if entry.get("pipeline") != self.pipeline:
                    raise ConfigError(
                        f"{self.path} is the journal of a run with other options; run with the "
                        "same ones to resume it, or delete it to start over"
                    )
            else:
                self._done[entry["path"]] = (entry["stamp"], entry)
            offset += len(raw) + 1
        self._good_bytes = offset

    def __contains__(self, path: object) -> bool:
        """Whether `path` is done (and unchanged since)."""
        found = self._done.get(str(path))
        return found is not None and found[0] is not None and found[0] == _stamp(str(path))

    def get(self, path: str) -> FileFaces | None:
        """The journaled result of `path`, None when it is not done (or changed since)."""
        if path not in self:
            return None
        entry = self._done[path][1]
        return FileFaces(
            path,
            [_face_from_json(f) for f in entry["faces"]],
            entry["error"],
            entry["width"],
            entry["height"],
        )

    def record(self, results: list[FileFaces]) -> None:
        """Append `results` (written through to the file, so a kill loses none of them)."""
        lines = []
        if self._good_bytes == 0:
            header = {"format": FORMAT, "version": VERSION, "pipeline": self.pipeline}
            lines.append(json.dumps(header))
        for result in results:
            entry = {
                "path": result.path,
                "stamp": _stamp(result.path),
                "error": result.error,
                "width": result.width,
                "height": result.height,
                "faces": [_face_to_json(f) for f in result.faces],
            }
            self._done[result.path] = (entry["stamp"], entry)
            lines.append(json.dumps(entry))
        data = "".join(line + "\n" for line in lines).encode()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "r+b" if self.path.exists() else "wb") as handle:
            handle.seek(self._good_bytes)
            handle.write(data)
            handle.truncate()
        self._good_bytes += len(data)

    def remove(self) -> None:
        """Delete the journal (its run is complete)."""
        self.path.unlink(missing_ok=True)
        self._done.clear()
        self._good_bytes = 0
