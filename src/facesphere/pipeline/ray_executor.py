"""The `ray` executor: chunks of files analysed by Ray actors, each building its analyzer once.

Ray is an optional extra (`pip install facesphere[ray]`), imported only when a Ray executor
runs. Every node must have facesphere (and its models) installed and see the files at the same
paths (a shared file system); on a local cluster the workers import facesphere from where this
process does.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
from collections.abc import Generator, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

from facesphere.errors import ConfigError, ExecutorError, FacesphereError
from facesphere.pipeline.analyzer import FaceAnalyzer
from facesphere.pipeline.batch import (
    Chunk,
    FileFaces,
    default_workers,
    process_chunk,
    worker_analyzer,
)
from facesphere.pipeline.executors import Executor

LOCAL = "local"


def import_ray() -> ModuleType:
    """The `ray` module, or ConfigError saying how to install it."""
    try:
        import ray
    except ImportError:
        raise ConfigError("the Ray executor needs Ray: pip install 'facesphere[ray]'") from None
    return ray


class _ChunkWorker:
    """A Ray actor holding one analyzer (models load once per actor, not once per chunk)."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.analyzer = worker_analyzer(config)

    def run(self, chunk: Chunk) -> list[FileFaces]:
        return process_chunk(self.analyzer, chunk)


class RayExecutor(Executor):
    """Chunks analysed by a pool of Ray actors of one CPU each, results in chunk order.

    address `local` starts a private cluster on this machine (loopback only, no dashboard) with
    `workers` CPUs (None: one per core) and stops it afterwards; another address joins that
    cluster (`auto`: the one `ray start` runs here) with `workers` actors (None: one per CPU
    of the cluster). A process already connected to Ray keeps its connection. Without Ray
    installed it is refused here, before any work.
    """

    def __init__(self, address: str = LOCAL, workers: int | None = None) -> None:
        import_ray()
        if not address:
            raise ConfigError("give a Ray address, or 'local' to start a cluster here")
        if workers is not None and workers < 1:
            raise ConfigError(f"workers must be at least 1, not {workers}")
        self.address = address
        self.workers = workers

    def map_chunks(
        self, config: dict[str, Any], chunks: list[Chunk], analyzer: FaceAnalyzer | None = None
    ) -> Generator[list[FileFaces], None, None]:
        if not chunks:
            return
        ray = import_ray()
        from ray.util import ActorPool

        started = self._connect(ray)
        actors: list[Any] = []
        try:
            count = self.workers or int(ray.cluster_resources().get("CPU", 1))
            worker = ray.remote(num_cpus=1)(_ChunkWorker)
            actors = [worker.remote(config) for _ in range(max(1, min(count, len(chunks))))]
            pool = ActorPool(actors)
            results = pool.map(lambda actor, chunk: actor.run.remote(chunk), chunks)
            while True:
                try:
                    batch = next(results)
                except StopIteration:
                    return
                except ray.exceptions.RayTaskError as exc:
                    cause = exc.cause
                    if isinstance(cause, FacesphereError):
                        raise cause from None
                    raise ExecutorError(f"a Ray worker failed: {_first_line(cause)}") from None
                except ray.exceptions.RayError as exc:
                    raise ExecutorError(f"a Ray worker failed: {_first_line(exc)}") from None
                yield batch
        finally:
            for actor in actors:
                ray.kill(actor)
            if started:
                ray.shutdown()

    def _connect(self, ray: ModuleType) -> bool:
        """Connect to the cluster unless this process is already; True when it connected."""
        if ray.is_initialized():
            return False
        options: dict[str, Any] = {
            "logging_level": logging.ERROR,
            "log_to_driver": False,
        }
        if self.address == LOCAL:
            options.update(
                address=LOCAL,
                num_cpus=self.workers or default_workers(),
                include_dashboard=False,
                _node_ip_address="127.0.0.1",
            )
        else:
            _check_reachable(self.address)
            options["address"] = self.address
        try:
            with _workers_import_facesphere():
                ray.init(**options)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise ExecutorError(
                f"cannot connect to the Ray cluster at {self.address!r}: {_first_line(exc)}"
            ) from None
        return True


@contextlib.contextmanager
def _workers_import_facesphere() -> Iterator[None]:
    """While a local cluster starts, PYTHONPATH leads with the folder this process imports
    facesphere from: the cluster's processes inherit the environment, so its workers import
    the same code (a runtime_env would do it too, but costs seconds per worker)."""
    import facesphere

    root = str(Path(facesphere.__file__).resolve().parents[1])
    saved = os.environ.get("PYTHONPATH")
    rest = [p for p in (saved or "").split(os.pathsep) if p and p != root]
    os.environ["PYTHONPATH"] = os.pathsep.join([root, *rest])
    try:
        yield
    finally:
        if saved is None:
            del os.environ["PYTHONPATH"]
        else:
            os.environ["PYTHONPATH"] = saved


def _check_reachable(address: str, timeout: float = 5.0) -> None:
    """ExecutorError unless a `HOST:PORT` (or `ray://HOST:PORT`) address accepts a connection
    within `timeout` seconds: Ray itself keeps retrying an unreachable one for minutes."""
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        return  # `auto`, or a form Ray resolves itself
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as exc:
        raise ExecutorError(
            f"cannot reach the Ray cluster at {address!r}: {exc.strerror or exc}"
        ) from None


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
