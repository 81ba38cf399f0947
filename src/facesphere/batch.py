"""Run the face pipeline over many image files with a pool of worker processes."""

from __future__ import annotations

import hashlib
import multiprocessing
import os
from collections.abc import Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from facesphere.analyzer import Face, FaceAnalyzer
from facesphere.io.image import ImageError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".pgm", ".ppm", ".pnm"}


@dataclass
class FileFaces:
    """The faces found in one file (with embeddings), or the reason it could not be read."""

    path: str
    faces: list[Face] = field(default_factory=list)
    error: str | None = None
    sha256: str | None = None


def iter_image_files(paths: Iterable[str | os.PathLike]) -> list[Path]:
    """Expand files and folders (walked recursively, sorted) into image file paths."""
    found: list[Path] = []
    for entry in paths:
        path = Path(entry)
        if path.is_dir():
            found.extend(
                sorted(
                    p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
                )
            )
        else:
            found.append(path)
    return found


def file_sha256(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file's content."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


_worker_analyzer: FaceAnalyzer | None = None


def _init_worker(config: dict[str, Any], threads: int) -> None:
    global _worker_analyzer
    try:
        import torch

        torch.set_num_threads(threads)
    except ImportError:  # pragma: no cover
        pass
    _worker_analyzer = FaceAnalyzer(**config)


def _process(analyzer: FaceAnalyzer, path: str, fallback: str, largest_only: bool) -> FileFaces:
    try:
        faces = analyzer.analyze(path, fallback=fallback)
    except ImageError as exc:
        return FileFaces(path, error=str(exc.reason))
    if largest_only:
        faces = faces[:1]
    return FileFaces(path, faces)


def _process_in_worker(job: tuple[str, str, bool]) -> FileFaces:
    assert _worker_analyzer is not None
    return _process(_worker_analyzer, *job)


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
    largest_only: bool = False,
    progress: bool = True,
    description: str = "faces",
    analyzer: FaceAnalyzer | None = None,
) -> Iterator[FileFaces]:
    """Detect and embed faces in each file, yielding results in input order.

    config: FaceAnalyzer keyword arguments for the worker processes. workers=1 runs in this
    process (reusing `analyzer` when given).
    """
    workers = default_workers() if workers is None else max(1, workers)
    jobs = [(str(p), fallback, largest_only) for p in paths]
    bar = tqdm(total=len(jobs), desc=description, unit="img", disable=not progress, leave=False)
    try:
        if workers == 1 or len(jobs) <= 1:
            local = analyzer or FaceAnalyzer(**config)
            for job in jobs:
                yield _process(local, *job)
                bar.update()
            return
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(
            max_workers=min(workers, len(jobs)),
            mp_context=context,
            initializer=_init_worker,
            initargs=(config, 1),
        ) as pool:
            for result in pool.map(_process_in_worker, jobs, chunksize=4):
                yield result
                bar.update()
    finally:
        bar.close()
