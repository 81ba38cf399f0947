"""Run the face pipeline over many image files with an executor (a local process pool by
default, or a Ray cluster), resuming from a journal when one is given."""

from __future__ import annotations

from collections.abc import Generator, Iterator
from typing import Any

from tqdm import tqdm

from facesphere.pipeline.analyzer import FaceAnalyzer
from facesphere.pipeline.batch import FileFaces, chunked
from facesphere.pipeline.executors import Executor, LocalPool
from facesphere.pipeline.journal import Journal


def analyze_files(
    paths: list[str],
    config: dict[str, Any],
    executor: Executor | None = None,
    fallback: str = "none",
    keep: str = "all",
    progress: bool = True,
    description: str = "faces",
    analyzer: FaceAnalyzer | None = None,
    journal: Journal | None = None,
) -> Iterator[FileFaces]:
    """Detect and embed faces in each file, yielding results in input order.

    config: FaceAnalyzer keyword arguments for the workers; executor: what runs them (None: a
    local pool of one process per core; one working in this process reuses `analyzer` when
    given). keep: `all` faces, or only the `largest` or the most `central` one of each image
    (see `main_face`). journal: files it holds are not analysed again, and each new result is
    recorded in it as it comes.
    """
    executor = LocalPool() if executor is None else executor
    paths = [str(p) for p in paths]
    done = {}
    if journal is not None:
        done = {p: r for p in paths if (r := journal.get(p)) is not None}
    todo = [p for p in paths if p not in done]
    bar = tqdm(total=len(paths), desc=description, unit="img", disable=not progress, leave=False)
    bar.update(len(done))
    batches = executor.map_chunks(config, chunked(todo, fallback, keep), analyzer)
    fresh = _recorded(batches, journal, bar)
    try:
        for path in paths:
            yield done[path] if path in done else next(fresh)
    finally:
        fresh.close()
        batches.close()
        bar.close()


def _recorded(
    batches: Iterator[list[FileFaces]], journal: Journal | None, bar: tqdm
) -> Generator[FileFaces, None, None]:
    """The results of `batches` one by one, each batch journaled and counted as it comes."""
    for results in batches:
        if journal is not None:
            journal.record(results)
        bar.update(len(results))
        yield from results
