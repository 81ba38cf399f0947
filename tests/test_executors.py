"""Batch analysis: the executor seam (local pool, Ray), the progress journal and resuming."""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from collections.abc import Generator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from facesphere.errors import ConfigError, ExecutorError
from facesphere.pipeline.analyzer import Face, FaceAnalyzer
from facesphere.pipeline.batch import Chunk, FileFaces, chunked
from facesphere.pipeline.executors import Executor, LocalPool, create_executor, list_executors
from facesphere.pipeline.journal import Journal, progress_path
from facesphere.pipeline.runner import analyze_files

PIPELINE = {"analyzer": {"detector": "yunet"}, "keep": "all"}


def fake_face(seed: int) -> Face:
    rng = np.random.default_rng(seed)
    vector = rng.normal(size=8).astype(np.float32)
    return Face(
        rng.uniform(0, 100, 4),
        float(rng.uniform()),
        rng.uniform(0, 100, (5, 2)),
        "standard5",
        embedding=vector / np.linalg.norm(vector),
        extra_landmarks={"dlib5": rng.uniform(0, 100, (5, 2))},
    )


class FakeExecutor(Executor):
    """Two made-up faces per file, no models; counts the files it was given, and stops (like
    a killed run) after `stop_after` chunks."""

    def __init__(self, stop_after: int | None = None) -> None:
        self.seen: list[str] = []
        self.stop_after = stop_after

    def map_chunks(
        self, config: dict[str, Any], chunks: list[Chunk], analyzer: FaceAnalyzer | None = None
    ) -> Generator[list[FileFaces], None, None]:
        for number, chunk in enumerate(chunks):
            if number == self.stop_after:
                raise KeyboardInterrupt
            self.seen.extend(chunk.paths)
            yield [
                FileFaces(p, [fake_face(hash(p) % 1000), fake_face(1)], width=250, height=250)
                for p in chunk.paths
            ]


@pytest.fixture()
def files(tmp_path: Path) -> list[str]:
    paths = []
    for i in range(20):
        path = tmp_path / f"{i:02d}.jpg"
        path.write_bytes(b"x" * (i + 1))
        paths.append(str(path))
    return paths


def same(a: FileFaces, b: FileFaces) -> None:
    assert (a.path, a.error, a.width, a.height, len(a.faces)) == (
        b.path,
        b.error,
        b.width,
        b.height,
        len(b.faces),
    )
    for x, y in zip(a.faces, b.faces):
        np.testing.assert_array_equal(x.box, y.box)
        np.testing.assert_array_equal(x.landmarks, y.landmarks)
        np.testing.assert_array_equal(x.embedding, y.embedding)
        np.testing.assert_array_equal(x.extra_landmarks["dlib5"], y.extra_landmarks["dlib5"])
        assert (x.score, x.landmark_scheme, x.source) == (y.score, y.landmark_scheme, y.source)


def test_an_interrupted_run_resumes_without_redoing_anything(files, tmp_path: Path) -> None:
    clean = list(analyze_files(files, {}, FakeExecutor(), progress=False))
    journal = Journal(progress_path(tmp_path / "out.npz"), PIPELINE)
    killed = FakeExecutor(stop_after=2)
    with pytest.raises(KeyboardInterrupt):
        list(analyze_files(files, {}, killed, progress=False, journal=journal))
    assert killed.seen == files[:16]  # two chunks of 8 were done and journaled
    again = Journal(journal.path, PIPELINE)
    assert sum(f in again for f in files) == 16
    rest = FakeExecutor()
    resumed = list(analyze_files(files, {}, rest, progress=False, journal=again))
    assert rest.seen == files[16:]  # nothing twice
    assert [r.path for r in resumed] == files
    for one, two in zip(clean, resumed):
        same(one, two)


def test_journal_drops_a_cut_line_and_redoes_changed_files(files, tmp_path: Path) -> None:
    path = tmp_path / "run.progress"
    journal = Journal(path, PIPELINE)
    results = [
        FileFaces(files[0], [fake_face(0)], width=9, height=7),
        FileFaces(files[1], error="bad"),
    ]
    journal.record(results)
    with open(path, "ab") as handle:
        handle.write(b'{"path": "cut sh')  # a kill in the middle of a line
    reopened = Journal(path, PIPELINE)
    same(reopened.get(files[0]), results[0])
    same(reopened.get(files[1]), results[1])
    assert files[2] not in reopened
    reopened.record([FileFaces(files[2])])  # appended where the cut line began
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [next(iter(line)) for line in lines] == ["format", "path", "path", "path"]
    os.utime(files[0], ns=(0, 0))  # changed since: analysed again
    assert files[0] not in Journal(path, PIPELINE) and files[2] in Journal(path, PIPELINE)
    with pytest.raises(ConfigError, match="other options"):
        Journal(path, {**PIPELINE, "keep": "largest"})
    reopened.remove()
    assert not path.exists()


def test_executors_are_registered_and_ray_is_optional(monkeypatch: pytest.MonkeyPatch) -> None:
    assert list_executors() == ["local", "ray"]
    assert create_executor("local", workers=3).workers == 3
    with pytest.raises(ConfigError, match="unknown executor"):
        create_executor("dask")
    with pytest.raises(ConfigError, match="no option"):
        create_executor("local", address="auto")
    with pytest.raises(ConfigError, match="Ray address"):
        create_executor("ray", address="")
    monkeypatch.setitem(sys.modules, "ray", None)  # as if it were not installed
    with pytest.raises(ConfigError, match=r"pip install 'facesphere\[ray\]'"):
        create_executor("ray")


def test_an_unreachable_ray_cluster_fails_at_once() -> None:
    from facesphere.pipeline.ray_executor import RayExecutor

    with socket.socket() as probe:  # a port nothing listens on once the probe is closed
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    started = time.monotonic()
    with pytest.raises(ExecutorError, match="cannot reach the Ray cluster"):
        list(RayExecutor(f"127.0.0.1:{port}").map_chunks({}, chunked(["a.jpg"], "none", "all")))
    assert time.monotonic() - started < 10 and ExecutorError.exit_code == 1


def test_ray_gives_the_local_pool_results(
    shared_data: Path, blank: Path, corrupt: Path, tmp_path: Path
) -> None:
    """A real local Ray cluster of two workers against the pool in this process: the same
    files in the same order, the same bad-file reports, the same embeddings."""
    from facesphere.pipeline.ray_executor import RayExecutor

    lfw = shared_data / "lfw" / "images"
    photos = [str(lfw / n / f"{n}_0001.jpg") for n in ("Colin_Powell", "Serena_Williams")]
    paths = [photos[0], str(corrupt), photos[1], str(blank), str(tmp_path / "missing.jpg")]
    analyzer = FaceAnalyzer()
    chunks = chunked(paths, "none", "all", size=2)  # three chunks over two actors
    local = [
        r for batch in LocalPool(1).map_chunks(analyzer.config, chunks, analyzer) for r in batch
    ]
    remote = [
        r for batch in RayExecutor("local", 2).map_chunks(analyzer.config, chunks) for r in batch
    ]
    assert [r.path for r in remote] == paths
    assert [r.error for r in remote] == [r.error for r in local]
    assert remote[1].error and "file not found" in remote[4].error and remote[3].faces == []
    for one, two in zip(local, remote):
        assert len(one.faces) == len(two.faces)
        assert (one.width, one.height) == (two.width, two.height)
        for x, y in zip(one.faces, two.faces):
            np.testing.assert_allclose(x.box, y.box, atol=1e-4)
            np.testing.assert_allclose(x.embedding, y.embedding, atol=1e-4)
    assert len(local[0].faces) >= 1 and len(local[2].faces) >= 1
