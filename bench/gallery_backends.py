"""Gallery back ends side by side: SQLite + FAISS against PostgreSQL + pgvector.

Search: on random unit vectors (one subject per face) of each size and dimension, the same
queries through `Gallery.identify(top_k=1)` on both back ends: latency p50/p95 per query
(index search and the subject lookup, one query at a time), recall@1 against exact search
(numpy), and the index build time (`Gallery.rebuild_index()` after a bulk load: FAISS flat
under `HNSW_MIN_FACES`, else HNSW; pgvector HNSW, cosine). Queries are new photos of enrolled
people: vectors at cosine 0.9 from a random enrolled one (the case the verification threshold
of about 0.9 decides, as in bench/gallery.py).

Enrollment: 1, 2 and 4 writer processes enrolling one-face requests (each a committed
transaction) into one fresh gallery at once; faces per second over all writers.

The vectors are loaded in bulk (straight into the back end's tables: SQLite rows, PostgreSQL
COPY), not through `enroll`, so that a million faces load in minutes; the PostgreSQL server is
pgserver's, started in a temporary folder unless `--postgres-url` names one.

    python bench/gallery_backends.py --json out/gallery_backends.json
    python bench/gallery_backends.py --sizes 1000000 --dims 128 --writers --json out/1m.json
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import sqlite3
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
from gallery import at_cosine, unit_vectors  # bench/gallery.py, the SQLite benchmark

from facesphere.gallery import Gallery

MODEL = ("bench", "1")
COSINE = 0.9


def exact_top1(base: np.ndarray, queries: np.ndarray) -> np.ndarray:
    """The index of each query's most similar base vector."""
    best = np.full(len(queries), -np.inf)
    index = np.zeros(len(queries), np.int64)
    for start in range(0, len(base), 100_000):
        scores = queries @ base[start : start + 100_000].T
        top = scores.argmax(1)
        better = scores[np.arange(len(queries)), top] > best
        best[better] = scores[np.arange(len(queries)), top][better]
        index[better] = top[better] + start
    return index


def pg_url(base: str, name: str) -> str:
    return f"{base}{'&' if '?' in base else '?'}gallery={name}"


def load_sqlite(gallery: Gallery, base: np.ndarray) -> None:
    """Subjects `s<i>` with one face each, written straight into the gallery's file."""
    conn = sqlite3.connect(gallery.backend.path, isolation_level=None)
    conn.execute("BEGIN")
    conn.executemany(
        "INSERT INTO subjects (id, name, metadata, created_at) VALUES (?, ?, '{}', '')",
        ((i + 1, f"s{i}") for i in range(len(base))),
    )
    conn.executemany(
        "INSERT INTO faces (id, subject_id, embedding, model, model_version, created_at)"
        " VALUES (?, ?, ?, ?, ?, '')",
        ((i + 1, i + 1, row.tobytes(), *MODEL) for i, row in enumerate(base)),
    )
    conn.execute("COMMIT")
    conn.close()


def load_postgres(gallery: Gallery, url: str, base: np.ndarray) -> None:
    """The same rows by COPY, with the HNSW index dropped (`rebuild_index` makes it)."""
    import psycopg

    names = gallery.backend.table_names
    with psycopg.connect(url, autocommit=True) as conn, conn.transaction():
        conn.execute(f"DROP INDEX {names['hnsw']}")
        with conn.cursor().copy(
            f"COPY {names['subjects']} (id, name, metadata, created_at) FROM STDIN"
        ) as copy:
            for i in range(len(base)):
                copy.write_row((i + 1, f"s{i}", "{}", ""))
        with conn.cursor().copy(
            f"COPY {names['faces']} (id, subject_id, embedding, model, model_version,"
            " created_at) FROM STDIN"
        ) as copy:
            for i, row in enumerate(base):
                text = "[" + ",".join(map(repr, row.astype(np.float64).tolist())) + "]"
                copy.write_row((i + 1, i + 1, text, *MODEL, ""))


def search(gallery: Gallery, queries: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """Latency p50/p95 (ms) of one-query identifications and recall@1 against `truth`."""
    gallery.identify(queries[0], top_k=1, threshold=0.0)  # warm: index loaded, plans cached
    times, hits = [], 0
    for query, expected in zip(queries, truth):
        start = time.perf_counter()
        result = gallery.identify(query, top_k=1, threshold=0.0)[0]
        times.append(time.perf_counter() - start)
        hits += result.identity == f"s{expected}"
    ms = np.array(times) * 1000
    return {
        "p50_ms": float(np.percentile(ms, 50)),
        "p95_ms": float(np.percentile(ms, 95)),
        "recall_at_1": hits / len(queries),
    }


def bench_search(size: int, dim: int, args: argparse.Namespace, url: str) -> dict[str, Any]:
    rng = np.random.default_rng(args.seed)
    base = unit_vectors(rng, size, dim)
    queries = at_cosine(rng, base[rng.integers(0, size, args.queries)], COSINE)
    truth = exact_top1(base, queries)
    row: dict[str, Any] = {"size": size, "dim": dim, "queries": args.queries}
    targets = {
        "sqlite": Path(args.workdir) / f"search-{size}-{dim}.db",
        "postgres": pg_url(url, f"search_{size}_{dim}_{uuid.uuid4().hex[:6]}"),
    }
    for name, target in targets.items():
        gallery = Gallery.create(target, *MODEL, dim)
        start = time.perf_counter()
        if name == "sqlite":
            load_sqlite(gallery, base)
        else:
            load_postgres(gallery, url, base)
        row[f"{name}_load_s"] = time.perf_counter() - start
        start = time.perf_counter()
        gallery.rebuild_index()
        row[f"{name}_build_s"] = time.perf_counter() - start
        row[f"{name}_index"] = gallery.sync_index()["kind"]
        for key, value in search(gallery, queries, truth).items():
            row[f"{name}_{key}"] = value
        gallery.delete()
        done = {k: v for k, v in row.items() if k.startswith(name)}
        print(f"  {name} {size}x{dim}: {json.dumps(done)}", flush=True)
    return row


def _writer(target: str, dim: int, writer: int, requests: int, barrier: Any, out: Any) -> None:
    rng = np.random.default_rng(writer)
    vectors = unit_vectors(rng, requests, dim)
    with Gallery(target) as gallery:
        barrier.wait()
        start = time.perf_counter()
        for i, vector in enumerate(vectors):
            gallery.enroll(f"w{writer}-{i}", vector[None])
        out.put(time.perf_counter() - start)


def bench_writers(writers: int, dim: int, args: argparse.Namespace, url: str) -> dict[str, Any]:
    row: dict[str, Any] = {"writers": writers, "dim": dim, "requests": args.requests}
    targets = {
        "sqlite": str(Path(args.workdir) / f"writers-{writers}.db"),
        "postgres": pg_url(url, f"writers_{writers}_{uuid.uuid4().hex[:6]}"),
    }
    context = multiprocessing.get_context("spawn")
    for name, target in targets.items():
        Gallery.create(target, *MODEL, dim).close()
        barrier, out = context.Barrier(writers + 1), context.Queue()
        procs = [
            context.Process(target=_writer, args=(target, dim, w, args.requests, barrier, out))
            for w in range(writers)
        ]
        for proc in procs:
            proc.start()
        barrier.wait()
        start = time.perf_counter()
        for proc in procs:
            proc.join()
        wall = time.perf_counter() - start
        if any(proc.exitcode for proc in procs):
            sys.exit(f"a {name} writer failed")
        with Gallery(target) as gallery:
            assert len(gallery) == writers * args.requests
            gallery.delete()
        row[f"{name}_faces_per_s"] = writers * args.requests / wall
    return row


def print_tables(results: dict[str, Any]) -> None:
    print("\nsearch (Gallery.identify, top-1, one query at a time; ratio = PostgreSQL / SQLite)")
    print(
        f"{'faces':>8} {'dim':>4} | {'sqlite idx':>10} {'build s':>8} {'p50 ms':>7} {'p95 ms':>7}"
        f" {'R@1':>6} | {'pg build s':>10} {'p50 ms':>7} {'p95 ms':>7} {'R@1':>6} |"
        f" {'build x':>7} {'p50 x':>6} {'p95 x':>6}"
    )
    for r in results["search"]:
        print(
            f"{r['size']:>8} {r['dim']:>4} | {r['sqlite_index']:>10} {r['sqlite_build_s']:>8.2f}"
            f" {r['sqlite_p50_ms']:>7.2f} {r['sqlite_p95_ms']:>7.2f}"
            f" {r['sqlite_recall_at_1']:>6.3f}"
            f" | {r['postgres_build_s']:>10.2f} {r['postgres_p50_ms']:>7.2f}"
            f" {r['postgres_p95_ms']:>7.2f} {r['postgres_recall_at_1']:>6.3f} |"
            f" {r['postgres_build_s'] / r['sqlite_build_s']:>7.2f}"
            f" {r['postgres_p50_ms'] / r['sqlite_p50_ms']:>6.2f}"
            f" {r['postgres_p95_ms'] / r['sqlite_p95_ms']:>6.2f}"
        )
    if results["writers"]:
        print("\nenrollment (one-face requests, each a transaction; faces/s over all writers)")
        print(f"{'writers':>7} {'dim':>4} | {'sqlite':>8} | {'postgres':>8} | {'ratio':>6}")
        for r in results["writers"]:
            print(
                f"{r['writers']:>7} {r['dim']:>4} | {r['sqlite_faces_per_s']:>8.1f} |"
                f" {r['postgres_faces_per_s']:>8.1f} |"
                f" {r['postgres_faces_per_s'] / r['sqlite_faces_per_s']:>6.2f}"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="*", default=[10_000, 100_000])
    parser.add_argument("--dims", type=int, nargs="+", default=[128, 512])
    parser.add_argument("--queries", type=int, default=300, help="queries per gallery")
    parser.add_argument(
        "--writers", type=int, nargs="*", default=[1, 2, 4], help="writer process counts"
    )
    parser.add_argument("--requests", type=int, default=200, help="requests per writer")
    parser.add_argument("--writer-dim", type=int, default=128)
    parser.add_argument("--postgres-url", default=None, help="a database (default: pgserver)")
    parser.add_argument("--workdir", type=Path, default=None, help="where the SQLite files go")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="fs-backends-") as tmp:
        args.workdir = args.workdir or Path(tmp)
        server = None
        url = args.postgres_url
        if url is None:
            import pgserver

            server = pgserver.get_server(Path(tmp) / "pg", cleanup_mode="stop")
            url = server.get_uri()
        config = {k: v for k, v in vars(args).items() if k not in ("json", "workdir")}
        results: dict[str, Any] = {"config": {**config, "postgres_url": None}, "search": []}
        print(json.dumps(results["config"]), flush=True)
        try:
            for dim in args.dims:
                for size in args.sizes:
                    results["search"].append(bench_search(size, dim, args, url))
            results["writers"] = [
                bench_writers(w, args.writer_dim, args, url) for w in args.writers
            ]
        finally:
            if server is not None:
                server.cleanup()
    print_tables(results)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
