"""Run the face pipeline over many image files with a pool of worker processes."""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from tqdm import tqdm

from facesphere.errors import ImageError
from facesphere.pipeline.analyzer import Face, FaceAnalyzer, main_face

# Images per task: their faces are embedded together, in batches of the recognizer's size.
CHUNK_SIZE = 8


@dataclass
class FileFaces:
    """The faces found in one file (with embeddings), or the reason it could not be read."""

    path: str
    faces: list[Face] = field(default_factory=list)
    error: str | None = None
    sha256: str | None = None


_worker_analyzer: FaceAnalyzer | None = None


def _init_worker(config: dict[str, Any], threads: int) -> None:
    global _worker_analyzer
    try:
        import torch

        torch.set_num_threads(threads)
    except ImportError:  # pragma: no cover
        pass
    _worker_analyzer = FaceAnalyzer(**config)


def _process_chunk(
    analyzer: FaceAnalyzer, paths: list[str], fallback: str, keep: str
) -> list[FileFaces]:
    """Analyze a chunk of files with one batched embedding pass; an unreadable file is reported
    and the rest of the chunk still processed."""
    readable, results = [], {}
    for path in paths:
        try:
            readable.append((path, analyzer.load(path)))
        except ImageError as exc:
            results[path] = FileFaces(path, error=str(exc.reason))
    if readable:
        found = analyzer.analyze_many([pixels for _, pixels in readable], fallback)
        for (path, pixels), faces in zip(readable, found):
            if keep != "all":
                main = main_face(faces, pixels.shape[1], pixels.shape[0], keep)
                faces = [] if main is None else [main]
            results[path] = FileFaces(path, faces)
    return [results[path] for path in paths]


def _process_in_worker(job: tuple[list[str], str, bool]) -> list[FileFaces]:
    assert _worker_analyzer is not None
    return _process_chunk(_worker_analyzer, *job)


def default_workers() -> int:
    """One worker per available core."""
    return max(
        1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    )


def analyze_files(
    paths: list[str],
    config: dict[str, Any],
    workers: int | None = None,
    fallback: str = "none",
    keep: str = "all",
    progress: bool = True,
    description: str = "faces",
    analyzer: FaceAnalyzer | None = None,
) -> Iterator[FileFaces]:
    """Detect and embed faces in each file, yielding results in input order.

    config: FaceAnalyzer keyword arguments for the worker processes. workers=1 runs in this
    process (reusing `analyzer` when given). keep: `all` faces, or only the `largest` or the
    most `central` one of each image (see `main_face`).
    """
    workers = default_workers() if workers is None else max(1, workers)
    chunks = [
        ([str(p) for p in paths[start : start + CHUNK_SIZE]], fallback, keep)
        for start in range(0, len(paths), CHUNK_SIZE)
    ]
    bar = tqdm(total=len(paths), desc=description, unit="img", disable=not progress, leave=False)
    try:
        if workers == 1 or len(chunks) <= 1:
            local = analyzer or FaceAnalyzer(**config)
            for chunk in chunks:
                results = _process_chunk(local, *chunk)
                bar.update(len(results))
                yield from results
            return
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(
            max_workers=min(workers, len(chunks)),
            mp_context=context,
            initializer=_init_worker,
            initargs=(config, 1),
        ) as pool:
            for results in pool.map(_process_in_worker, chunks):
                bar.update(len(results))
                yield from results
    finally:
        bar.close()
