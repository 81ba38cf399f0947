"""Batch indexing speed: the local process pool against Ray, on the same cores, and a projection
of the Ray run onto a cluster.

Embeds every face of the LFW photos (all 13,233 by default, the first `--limit` in path order
otherwise) plus one broken file, with the CLI's default pipeline (`facesphere embed`'s), once
with each executor of `--workers` workers: the local pool (`pipeline.executors.LocalPool`)
and a local Ray cluster of as many CPUs (`pipeline.ray_executor.RayExecutor`). Reports each
run's wall time, photos/s and time to the first result (start-up: the pool or cluster and
the models of each worker), checks that both give the same files in the same order, the same
bad-file list and the same embeddings (within float tolerance), and the Ray/local overhead.
The machine's load average before and after each run is reported beside it: on shared cores,
other work slows one run more than the other.

The projection is not a measurement: from the Ray run it takes the start-up time S, the
worker CPU time per photo c ((wall - S) x workers / photos) and the driver's CPU time per
photo after the first chunk d (collecting results, the serial part), and models n CPUs as
T(n) = S + N (c / n + d) for N photos (Amdahl's law with the measured serial part), assuming
nodes like this one, the photos on a shared file system fast enough to feed them, and no
other load.

    python bench/batch_index.py --limit 400 --json out/bench/batch_index.json
    python bench/batch_index.py --json out/bench/batch_index.json   # all 13,233 photos
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from facesphere.io.data import data_dir
from facesphere.io.files import iter_image_files
from facesphere.pipeline.analyzer import FaceAnalyzer
from facesphere.pipeline.batch import CHUNK_SIZE, FileFaces, default_workers
from facesphere.pipeline.executors import Executor, LocalPool
from facesphere.pipeline.ray_executor import RayExecutor
from facesphere.pipeline.runner import analyze_files

PROJECTED_CPUS = [8, 32, 128, 512]


def photo_list(limit: int | None, folder: Path) -> list[str]:
    """The first `limit` LFW photos in path order, and a broken file written into `folder`."""
    photos = [str(p) for p in iter_image_files([data_dir() / "lfw" / "images"])][:limit]
    broken = folder / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0 not a jpeg")
    return [*photos, str(broken)]


def timed_run(name: str, executor: Executor, paths: list[str], config: dict) -> dict[str, Any]:
    """Analyse `paths` with `executor`; wall time, time to the first result, driver CPU time."""
    load_before = os.getloadavg()[0]
    start = time.perf_counter()
    first, cpu = 0.0, 0.0
    results: list[FileFaces] = []
    for result in analyze_files(paths, config, executor, description=name):
        if not results:
            first, cpu = time.perf_counter() - start, time.process_time()
        results.append(result)
    wall = time.perf_counter() - start
    return {
        "executor": name,
        "photos": len(paths),
        "faces": sum(len(r.faces) for r in results),
        "bad_files": [f"{r.path}: {r.error}" for r in results if r.error],
        "wall_s": round(wall, 2),
        "photos_per_s": round(len(paths) / wall, 2),
        "first_result_s": round(first, 2),
        "driver_cpu_s": round(time.process_time() - cpu, 2),  # after the first result
        # the machine's 1-minute load average: other work on the cores skews the comparison
        "load_before": round(load_before, 2),
        "load_after": round(os.getloadavg()[0], 2),
        "results": results,
    }


def compare(one: list[FileFaces], two: list[FileFaces]) -> dict[str, Any]:
    """Whether two runs found the same: files in order, errors, faces, embeddings and boxes."""
    same_files = [r.path for r in one] == [r.path for r in two]
    same_errors = [r.error for r in one] == [r.error for r in two]
    same_counts = [len(r.faces) for r in one] == [len(r.faces) for r in two]
    embedding, box = 0.0, 0.0
    if same_counts:
        for a, b in zip(one, two):
            for x, y in zip(a.faces, b.faces):
                embedding = max(embedding, float(np.abs(x.embedding - y.embedding).max()))
                box = max(box, float(np.abs(np.asarray(x.box) - np.asarray(y.box)).max()))
    return {
        "same_files_in_order": same_files,
        "same_bad_files": same_errors,
        "same_face_counts": same_counts,
        "max_embedding_diff": embedding,
        "max_box_diff": box,
        "equal": same_files and same_errors and same_counts and embedding <= 1e-5,
    }


def project(ray_run: dict[str, Any], workers: int, photos: int) -> dict[str, Any]:
    """T(n) = S + N (c / n + d) for n CPUs (see the module docstring), speed-ups against
    T(workers), and the serial fraction (S + N d) / T(workers)."""
    start = ray_run["first_result_s"]
    worker_cost = (ray_run["wall_s"] - start) * workers / ray_run["photos"]
    driver_cost = ray_run["driver_cpu_s"] / max(ray_run["photos"] - CHUNK_SIZE, 1)

    def wall(cpus: int) -> float:
        return start + photos * (worker_cost / cpus + driver_cost)

    rows = [
        {
            "cpus": cpus,
            "wall_s": round(wall(cpus), 1),
            "photos_per_s": round(photos / wall(cpus), 1),
            "speedup": round(wall(workers) / wall(cpus), 2),
        }
        for cpus in sorted({workers, *PROJECTED_CPUS})
    ]
    return {
        "model": "T(n) = S + N (c / n + d)",
        "photos": photos,
        "start_s": start,
        "worker_cpu_s_per_photo": round(worker_cost, 4),
        "driver_cpu_s_per_photo": round(driver_cost, 5),
        "serial_fraction": round((start + photos * driver_cost) / wall(workers), 4),
        "rows": rows,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=None, help="LFW photos (default: all)")
    parser.add_argument("--workers", type=int, default=None, help="default: one per core")
    parser.add_argument("--project-photos", type=int, default=13233, help="N of the projection")
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    args = parser.parse_args()
    workers = args.workers or default_workers()
    config = FaceAnalyzer().config
    with tempfile.TemporaryDirectory() as folder:
        paths = photo_list(args.limit, Path(folder))
        print(f"{len(paths)} files ({len(paths) - 1} LFW photos + 1 broken), {workers} workers")
        local = timed_run("local pool", LocalPool(workers), paths, config)
        ray_run = timed_run("ray (local cluster)", RayExecutor("local", workers), paths, config)
    check = compare(local.pop("results"), ray_run.pop("results"))
    overhead = round(ray_run["wall_s"] / local["wall_s"], 3)
    projection = project(ray_run, workers, args.project_photos)

    print(
        f"\n{'executor':<22}{'photos':>8}{'faces':>8}{'wall s':>10}{'photos/s':>10}"
        f"{'start s':>9}  load before-after"
    )
    for run in (local, ray_run):
        print(
            f"{run['executor']:<22}{run['photos']:>8}{run['faces']:>8}{run['wall_s']:>10.1f}"
            f"{run['photos_per_s']:>10.2f}{run['first_result_s']:>9.1f}"
            f"  {run['load_before']:.1f}-{run['load_after']:.1f}"
        )
    print(f"\nRay / local wall time: {overhead:.3f}")
    print(
        "same files in order: {same_files_in_order}, same bad files: {same_bad_files}, same "
        "face counts: {same_face_counts}, max embedding diff {max_embedding_diff:.2e}, max box "
        "diff {max_box_diff:.2e}".format(**check)
    )
    print(
        f"\nprojected, not measured: Ray on n CPUs, {args.project_photos} photos, "
        "T(n) = S + N (c / n + d) with S {start_s:.1f} s, c {worker_cpu_s_per_photo:.3f} s, "
        "d {driver_cpu_s_per_photo:.4f} s (serial fraction {serial_fraction:.4f})".format(
            **projection
        )
    )
    print(f"{'CPUs':>6}{'wall s':>10}{'photos/s':>10}{'speedup':>9}")
    for row in projection["rows"]:
        print(
            f"{row['cpus']:>6}{row['wall_s']:>10.1f}{row['photos_per_s']:>10.1f}"
            f"{row['speedup']:>9.2f}"
        )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        report = {
            "config": {
                **vars(args),
                "json": str(args.json),
                "workers": workers,
                "cpus": os.cpu_count(),
            },
            "pipeline": config,
            "runs": [local, ray_run],
            "equal": check,
            "ray_over_local": overhead,
            "projection": projection,
        }
        args.json.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
