"""The unit of batch work: a chunk of image files analysed by one `FaceAnalyzer`, and what
comes back for each file (`FileFaces`). Executors (`pipeline.executors`) run chunks."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from facesphere.errors import ImageError
from facesphere.pipeline.analyzer import Face, FaceAnalyzer, main_face

# Images per chunk: their faces are embedded together, in batches of the recognizer's size.
CHUNK_SIZE = 8


@dataclass
class FileFaces:
    """The faces found in one file (with embeddings) and the image's size, or the reason the
    file could not be read."""

    path: str
    faces: list[Face] = field(default_factory=list)
    error: str | None = None
    width: int = 0
    height: int = 0


@dataclass(frozen=True)
class Chunk:
    """Files analysed together: `fallback` as in `FaceAnalyzer.analyze`, `keep` as in
    `analyze_files` (all faces, or only the largest or central one)."""

    paths: tuple[str, ...]
    fallback: str = "none"
    keep: str = "all"


def chunked(paths: list[str], fallback: str, keep: str, size: int = CHUNK_SIZE) -> list[Chunk]:
    """`paths` cut into chunks of `size` files, in order."""
    return [
        Chunk(tuple(paths[start : start + size]), fallback, keep)
        for start in range(0, len(paths), size)
    ]


def worker_analyzer(config: dict[str, Any], threads: int = 1) -> FaceAnalyzer:
    """The analyzer of a worker process or actor: `config`'s, on `threads` torch threads
    (one per worker, so that workers do not oversubscribe their cores)."""
    import torch

    torch.set_num_threads(threads)
    return FaceAnalyzer(**config)


def process_chunk(analyzer: FaceAnalyzer, chunk: Chunk) -> list[FileFaces]:
    """Analyze a chunk of files with one batched embedding pass; an unreadable file is reported
    and the rest of the chunk still processed."""
    readable, results = [], {}
    for path in chunk.paths:
        try:
            readable.append((path, analyzer.load(path)))
        except ImageError as exc:
            results[path] = FileFaces(path, error=str(exc.reason))
    if readable:
        found = analyzer.analyze_many([pixels for _, pixels in readable], chunk.fallback)
        for (path, pixels), faces in zip(readable, found):
            height, width = pixels.shape[:2]
            if chunk.keep != "all":
                main = main_face(faces, width, height, chunk.keep)
                faces = [] if main is None else [main]
            results[path] = FileFaces(path, faces, width=width, height=height)
    return [results[path] for path in chunk.paths]


def default_workers() -> int:
    """One worker per available core."""
    return max(
        1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    )
