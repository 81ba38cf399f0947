"""Executors: the one interface that maps chunk analysis over many files, and its two
implementations, a local process pool (`local`, the default) and a Ray cluster (`ray`, the
optional `facesphere[ray]` extra, in `pipeline.ray_executor`).

`create_executor(name, **options)` builds one by name (`list_executors()`); every executor
yields each chunk's results in the order of the chunks, so outputs do not depend on which ran.
"""

from __future__ import annotations

import multiprocessing
from abc import ABC, abstractmethod
from collections.abc import Generator
from concurrent.futures import ProcessPoolExecutor
from typing import Any

from facesphere.pipeline.analyzer import FaceAnalyzer
from facesphere.pipeline.batch import (
    Chunk,
    FileFaces,
    default_workers,
    process_chunk,
    worker_analyzer,
)
from facesphere.registry import Registry


class Executor(ABC):
    """Runs `process_chunk` over chunks of files with analyzers built from one config."""

    @abstractmethod
    def map_chunks(
        self, config: dict[str, Any], chunks: list[Chunk], analyzer: FaceAnalyzer | None = None
    ) -> Generator[list[FileFaces], None, None]:
        """Each chunk's results, chunk by chunk in order. config: FaceAnalyzer keyword
        arguments for the workers; analyzer: one already built from it, which an executor
        working in this process may reuse."""


EXECUTORS: Registry[Executor] = Registry("executor")
register_executor = EXECUTORS.register
list_executors = EXECUTORS.names


def create_executor(name: str, **options: Any) -> Executor:
    """Build the executor registered as `name` (`local`, `ray`) with its options; unknown
    names or options raise ConfigError."""
    return EXECUTORS.create(name, **options)


_worker: FaceAnalyzer | None = None


def _init_worker(config: dict[str, Any]) -> None:
    global _worker
    _worker = worker_analyzer(config)


def _run_in_worker(chunk: Chunk) -> list[FileFaces]:
    assert _worker is not None
    return process_chunk(_worker, chunk)


class LocalPool(Executor):
    """A pool of `workers` processes on this machine (None: one per core), each with its own
    analyzer on one thread; with one worker, or one chunk, the work stays in this process."""

    def __init__(self, workers: int | None = None) -> None:
        self.workers = default_workers() if workers is None else max(1, workers)

    def map_chunks(
        self, config: dict[str, Any], chunks: list[Chunk], analyzer: FaceAnalyzer | None = None
    ) -> Generator[list[FileFaces], None, None]:
        if not chunks:
            return
        if self.workers == 1 or len(chunks) == 1:
            local = analyzer or FaceAnalyzer(**config)
            for chunk in chunks:
                yield process_chunk(local, chunk)
            return
        with ProcessPoolExecutor(
            max_workers=min(self.workers, len(chunks)),
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_init_worker,
            initargs=(config,),
        ) as pool:
            yield from pool.map(_run_in_worker, chunks)


@register_executor("local")
def local_pool(workers: int | None = None) -> Executor:
    """Worker processes on this machine (None: one per core)."""
    return LocalPool(workers)


@register_executor("ray")
def ray_cluster(address: str = "local", workers: int | None = None) -> Executor:
    """Ray actors on a cluster: `local` starts one on this machine with `workers` CPUs (None:
    one per core); any other address (`auto`, `HOST:PORT`, `ray://HOST:PORT`) joins an existing
    cluster, with `workers` actors (None: one per CPU of the cluster)."""
    from facesphere.pipeline.ray_executor import RayExecutor

    return RayExecutor(address, workers)
