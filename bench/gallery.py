"""Gallery search speed and accuracy: exact (flat) against HNSW search, and enrollment speed.

On random unit vectors of each dimension and gallery size: single-query latency p50/p99 of
exact inner-product search (`IndexFlatIP`) and of HNSW (`IndexHNSWFlat`, inner product) for a
sweep of efSearch values, recall@1 of HNSW against the exact answer, HNSW build time and the
process's peak memory. Searches run on one thread, as the gallery runs them.

Queries: "enrolled@C" is a new photo of someone enrolled, a vector at cosine exactly C from a
random enrolled vector; "unknown" is a fresh random vector. Only enrolled queries whose match
reaches the verification threshold (about 0.9) can be identified at all, so `enrolled@0.9`
is the case that decides efSearch; `enrolled@0.7` is a harder one, and for unknown queries a
worse top-1 than the exact one only lowers the best score (it cannot become a false accept).

Then, through `facesphere.gallery.Gallery` itself: enrollment throughput (requests of 1 and of
100 faces, each a committed transaction with fsync) and `identify` latency (index search and
the subject lookup in SQLite).

`--crossover` adds exact search alone over a range of sizes; with the table above it placed
`facesphere.gallery.index.HNSW_MIN_FACES`. `--index-cache DIR` keeps built HNSW indexes (the
vectors are regenerated from the seed), so a rerun with other queries skips the build.

    python bench/gallery.py --sizes 10000 100000 1000000 --dims 128 512 --json out/gallery.json
    python bench/gallery.py --sizes --gallery-sizes --crossover --dims 128 512
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from facesphere.gallery import Gallery
from facesphere.gallery.index import HNSW_EF_CONSTRUCTION, HNSW_M


def unit_vectors(rng: np.random.Generator, n: int, dim: int, chunk: int = 100_000) -> np.ndarray:
    """`n` random unit vectors (float32), generated in chunks to bound the peak memory."""
    out = np.empty((n, dim), np.float32)
    for start in range(0, n, chunk):
        block = rng.standard_normal((min(chunk, n - start), dim), dtype=np.float32)
        block /= np.linalg.norm(block, axis=1, keepdims=True)
        out[start : start + len(block)] = block
    return out


def at_cosine(rng: np.random.Generator, rows: np.ndarray, cosine: float) -> np.ndarray:
    """For each unit row, a unit vector at exactly `cosine` from it, in a random direction."""
    noise = unit_vectors(rng, len(rows), rows.shape[1])
    noise -= (noise * rows).sum(1, keepdims=True) * rows
    noise /= np.linalg.norm(noise, axis=1, keepdims=True)
    return (cosine * rows + np.sqrt(1 - cosine**2) * noise).astype(np.float32)


def make_queries(
    rng: np.random.Generator, base: np.ndarray, count: int, cosines: list[float]
) -> dict[str, np.ndarray]:
    """Enrolled-person queries at each cosine, and unknown-person queries."""
    queries = {}
    for cosine in cosines:
        rows = base[rng.integers(0, len(base), count)]
        queries[f"enrolled@{cosine:g}"] = at_cosine(rng, rows, cosine)
    queries["unknown"] = unit_vectors(rng, count, base.shape[1])
    return queries


def latencies(index: faiss.Index, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-1 ids of single-query searches on one thread, and each search's time in ms."""
    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        times = np.empty(len(queries))
        top = np.empty(len(queries), np.int64)
        index.search(queries[:1], k)  # warm-up
        for i in range(len(queries)):
            q = queries[i : i + 1]
            start = time.perf_counter()
            _, ids = index.search(q, k)
            times[i] = (time.perf_counter() - start) * 1000
            top[i] = ids[0, 0]
        return top, times
    finally:
        faiss.omp_set_num_threads(threads)


def peak_rss_gib() -> float:
    """Peak resident memory of this process so far, GiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def hnsw_index(base: np.ndarray, args: argparse.Namespace, name: str) -> tuple[Any, float]:
    """An HNSW index of `base`, built (seconds reported) or loaded from the cache (0 s)."""
    cached = None if args.index_cache is None else args.index_cache / f"{name}.faiss"
    if cached is not None and cached.is_file():
        return faiss.read_index(str(cached)), 0.0
    index = faiss.IndexHNSWFlat(base.shape[1], args.m, faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efConstruction = args.ef_construction
    start = time.perf_counter()
    index.add(base)
    seconds = time.perf_counter() - start
    if cached is not None:
        cached.parent.mkdir(parents=True, exist_ok=True)
        faiss.write_index(index, str(cached))
    return index, seconds


def bench_index(size: int, dim: int, args: argparse.Namespace) -> dict[str, Any]:
    """Flat and HNSW latency/recall for one gallery size and dimension."""
    rng = np.random.default_rng([args.seed, size, dim])
    base = unit_vectors(rng, size, dim)
    queries = make_queries(rng, base, args.queries, args.query_cosines)
    flat = faiss.IndexFlatIP(dim)
    flat.add(base)
    row: dict[str, Any] = {"size": size, "dim": dim, "queries": args.queries}
    truth = {}
    flat_rows = {}
    for kind, q in queries.items():
        truth[kind], times = latencies(flat, q, args.k)
        flat_rows[kind] = {
            "recall1": 1.0,
            "p50_ms": float(np.percentile(times, 50)),
            "p99_ms": float(np.percentile(times, 99)),
        }
    row["flat"] = flat_rows
    del flat
    name = f"hnsw_s{args.seed}_n{size}_d{dim}_m{args.m}_efc{args.ef_construction}"
    hnsw, row["hnsw_build_s"] = hnsw_index(base, args, name)
    row["hnsw_build_threads"] = faiss.omp_get_max_threads()
    del base
    sweep = []
    for ef in args.ef:
        hnsw.hnsw.efSearch = ef
        point: dict[str, Any] = {"ef_search": ef}
        for kind, q in queries.items():
            top, times = latencies(hnsw, q, args.k)
            point[kind] = {
                "recall1": float((top == truth[kind]).mean()),
                "p50_ms": float(np.percentile(times, 50)),
                "p99_ms": float(np.percentile(times, 99)),
            }
        sweep.append(point)
    row["hnsw"] = sweep
    row["chosen_ef"] = {}
    for kind in queries:
        good = [p["ef_search"] for p in sweep if p[kind]["recall1"] >= args.target_recall]
        row["chosen_ef"][kind] = good[0] if good else None
    row["peak_rss_gib"] = peak_rss_gib()
    return row


def bench_gallery(size: int, dim: int, args: argparse.Namespace) -> dict[str, Any]:
    """Enrollment throughput and identify latency through `Gallery`."""
    rng = np.random.default_rng([args.seed, size, dim, 1])
    vectors = unit_vectors(rng, size, dim)
    queries = at_cosine(rng, vectors[rng.integers(0, size, args.queries)], args.query_cosines[0])
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        path = Path(tmp) / "bench.db"
        row: dict[str, Any] = {"size": size, "dim": dim}
        with Gallery.create(path, model="bench", dim=dim) as gallery:
            singles = min(args.single_requests, size)
            start = time.perf_counter()
            for i in range(singles):
                gallery.enroll(f"s{i}", vectors[i])
            row["enroll_1_faces_per_s"] = singles / (time.perf_counter() - start)
            start = time.perf_counter()
            for first in range(singles, size, 100):
                gallery.enroll(f"s{first}", vectors[first : first + 100])
            row["enroll_100_faces_per_s"] = (size - singles) / max(
                time.perf_counter() - start, 1e-9
            )
            start = time.perf_counter()
            info = gallery.sync_index()
            row["index_build_s"] = time.perf_counter() - start
            row["index_kind"] = info["kind"]
            gallery.identify(queries[0])
            times = np.empty(len(queries))
            for i, q in enumerate(queries):
                t = time.perf_counter()
                gallery.identify(q, top_k=5)
                times[i] = (time.perf_counter() - t) * 1000
            row["identify_p50_ms"] = float(np.percentile(times, 50))
            row["identify_p99_ms"] = float(np.percentile(times, 99))
        row["db_mib"] = path.stat().st_size / 2**20
    return row


def crossover(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Exact-search p50 over sizes, to place the flat -> HNSW switch."""
    rows = []
    for dim in args.dims:
        for size in args.crossover_sizes:
            rng = np.random.default_rng([args.seed, size, dim, 2])
            base = unit_vectors(rng, size, dim)
            flat = faiss.IndexFlatIP(dim)
            flat.add(base)
            queries = at_cosine(rng, base[: args.queries], args.query_cosines[0])
            _, times = latencies(flat, queries, args.k)
            row = {
                "dim": dim,
                "size": size,
                "flat_p50_ms": float(np.percentile(times, 50)),
                "flat_p99_ms": float(np.percentile(times, 99)),
            }
            rows.append(row)
            print(
                f"crossover dim {dim:4d} size {size:8d}: flat p50 {row['flat_p50_ms']:.3f} ms"
                f" p99 {row['flat_p99_ms']:.3f} ms",
                flush=True,
            )
    return rows


def print_table(rows: list[dict[str, Any]]) -> None:
    """The index results as a text table."""
    print(
        f"{'dim':>4} {'size':>8} {'search':>9} {'queries':>13} {'recall@1':>8} "
        f"{'p50 ms':>8} {'p99 ms':>8}"
    )
    for row in rows:
        lead = f"{row['dim']:>4} {row['size']:>8}"
        for kind, r in row["flat"].items():
            print(
                f"{lead} {'flat':>9} {kind:>13} {r['recall1']:>8.3f} {r['p50_ms']:>8.3f}"
                f" {r['p99_ms']:>8.3f}"
            )
        for p in row["hnsw"]:
            for kind in row["flat"]:
                r = p[kind]
                mark = "*" if row["chosen_ef"][kind] == p["ef_search"] else " "
                print(
                    f"{lead} {'hnsw' + str(p['ef_search']):>9} {kind:>13} {r['recall1']:>7.3f}"
                    f"{mark} {r['p50_ms']:>8.3f} {r['p99_ms']:>8.3f}"
                )
        built = "loaded from cache" if row["hnsw_build_s"] == 0 else f"{row['hnsw_build_s']:.0f} s"
        print(
            f"{lead} hnsw build {built} ({row['hnsw_build_threads']} threads); smallest efSearch"
            f" with recall@1 >= target: {row['chosen_ef']}; peak RSS {row['peak_rss_gib']:.2f}"
            " GiB"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="*", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--dims", type=int, nargs="+", default=[128, 512])
    parser.add_argument("--queries", type=int, default=500, help="queries of each kind")
    parser.add_argument(
        "--query-cosines",
        type=float,
        nargs="+",
        default=[0.9, 0.7],
        help="cosine of enrolled-person queries to their match (the first one decides)",
    )
    parser.add_argument("--k", type=int, default=20, help="neighbours asked per search")
    parser.add_argument("--m", type=int, default=HNSW_M, help="HNSW graph degree")
    parser.add_argument("--ef-construction", type=int, default=HNSW_EF_CONSTRUCTION)
    parser.add_argument("--ef", type=int, nargs="+", default=[32, 64, 128, 256, 512])
    parser.add_argument("--target-recall", type=float, default=0.99)
    parser.add_argument(
        "--gallery-sizes",
        type=int,
        nargs="*",
        default=[10_000, 100_000],
        help="sizes for the Gallery enroll/identify part (none: skip it)",
    )
    parser.add_argument("--single-requests", type=int, default=500)
    parser.add_argument("--crossover", action="store_true", help="add the flat size sweep")
    parser.add_argument(
        "--crossover-sizes",
        type=int,
        nargs="+",
        default=[5_000, 10_000, 20_000, 50_000, 100_000, 200_000],
    )
    parser.add_argument("--index-cache", type=Path, default=None, help="keep HNSW builds here")
    parser.add_argument("--workdir", type=Path, default=None, help="where the bench DBs go")
    parser.add_argument("--threads", type=int, default=None, help="faiss threads (builds)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    args = parser.parse_args()
    if args.threads:
        faiss.omp_set_num_threads(args.threads)
    results: dict[str, Any] = {
        "config": {
            "faiss": faiss.__version__,
            "faiss_threads": faiss.omp_get_max_threads(),
            "cpus": os.cpu_count(),
            "load_average": os.getloadavg(),
            "m": args.m,
            "ef_construction": args.ef_construction,
            "k": args.k,
            "query_cosines": args.query_cosines,
            "python": sys.version.split()[0],
        }
    }
    print(json.dumps(results["config"]), flush=True)
    if args.crossover:
        results["crossover"] = crossover(args)
    rows = []
    for dim in args.dims:
        for size in args.sizes:
            print(f"index bench: dim {dim}, size {size} ...", flush=True)
            rows.append(bench_index(size, dim, args))
            print_table(rows[-1:])
    results["index"] = rows
    if rows:
        print("\n== search: flat vs HNSW (single queries; * = smallest ef reaching the target) ==")
        print_table(rows)
    results["gallery"] = []
    for dim in args.dims:
        for size in args.gallery_sizes:
            print(f"gallery bench: dim {dim}, size {size} ...", flush=True)
            results["gallery"].append(bench_gallery(size, dim, args))
    if results["gallery"]:
        print("\n== Gallery: enroll throughput and identify latency ==")
        for r in results["gallery"]:
            print(
                f"dim {r['dim']:4d} size {r['size']:7d}: enroll {r['enroll_1_faces_per_s']:.0f}"
                f" faces/s (1/request), {r['enroll_100_faces_per_s']:.0f} faces/s "
                f"(100/request); index ({r['index_kind']}) built in {r['index_build_s']:.1f}"
                f" s; identify p50 {r['identify_p50_ms']:.3f} ms p99 "
                f"{r['identify_p99_ms']:.3f} ms; db {r['db_mib']:.0f} MiB"
            )
    results["load_average_end"] = os.getloadavg()
    results["peak_rss_gib"] = peak_rss_gib()
    print(f"peak RSS {results['peak_rss_gib']:.2f} GiB")
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
