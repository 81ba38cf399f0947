"""Clustering quality on celeba299: is there one cluster per person?

Embeds the largest face of every photo of the first `--limit` identities (all 299 by
default; embeddings are cached in `--cache` so other thresholds cost nothing), clusters them
with each of `--methods` (`facesphere.cluster`: average linkage, Chinese whispers) at each
`--thresholds` value, and reports pairwise precision / recall / F1 against the identities, and
the number of clusters (all, and of two or more faces) against the number of people.
`--half even|odd` keeps every other identity (sorted by name): the clustering defaults were
chosen on the even half and checked on the odd one.

    python bench/cluster.py --limit 50 --json out/bench/cluster.json
    python bench/cluster.py --half even --thresholds 0.905 0.92 0.93 0.94 0.95
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from facesphere.cluster import cluster_embeddings, list_cluster_methods, pairwise_scores
from facesphere.io.data import data_dir
from facesphere.io.files import iter_image_files
from facesphere.pipeline.analyzer import FaceAnalyzer
from facesphere.pipeline.runner import analyze_files
from facesphere.pretrained.cards import DLIB_RESNET


def photo_list(limit: int | None, half: str = "all") -> tuple[list[str], list[str]]:
    """(paths, identity of each) of the first `limit` celeba299 identities of `half`."""
    root = data_dir() / "celeba299"
    people = sorted(p for p in root.iterdir() if p.is_dir())
    people = {"all": people, "even": people[0::2], "odd": people[1::2]}[half][:limit]
    paths, who = [], []
    for person in people:
        for path in iter_image_files([person]):
            paths.append(str(path))
            who.append(person.name)
    return paths, who


def embed(paths: list[str], workers: int | None, cache: Path | None) -> dict[str, Any]:
    """Embedding of the largest face per path (None when no face), reusing `cache`."""
    known: dict[str, np.ndarray | None] = {}
    if cache is not None and cache.is_file():
        data = np.load(cache)
        for path, vector, found in zip(data["paths"], data["embeddings"], data["found"]):
            known[str(path)] = vector if found else None
    todo = [p for p in paths if p not in known]
    start = time.perf_counter()
    if todo:
        config = FaceAnalyzer().config
        for result in analyze_files(todo, config, workers, keep="largest"):
            known[result.path] = result.faces[0].embedding if result.faces else None
    seconds = time.perf_counter() - start
    if cache is not None and todo:
        cache.parent.mkdir(parents=True, exist_ok=True)
        keys = sorted(known)
        np.savez(
            cache,
            paths=np.array(keys, dtype=str),
            embeddings=np.array(
                [known[k] if known[k] is not None else np.zeros(128, np.float32) for k in keys],
                np.float32,
            ),
            found=np.array([known[k] is not None for k in keys]),
        )
    return {"vectors": known, "embedded": len(todo), "seconds": seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=None, help="identities (default: all)")
    parser.add_argument(
        "--thresholds",
        type=float,
        nargs="+",
        default=sorted({0.92, *(t.value for t in DLIB_RESNET.thresholds.values())}),
    )
    parser.add_argument("--half", choices=["all", "even", "odd"], default="all")
    parser.add_argument("--workers", type=int, default=None, help="embedding processes")
    parser.add_argument("--cache", type=Path, default=Path("out/bench/celeba299_embeddings.npz"))
    methods = list_cluster_methods()
    parser.add_argument("--methods", nargs="+", default=methods, choices=methods)
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    args = parser.parse_args()

    paths, who = photo_list(args.limit, args.half)
    embedded = embed(paths, args.workers, args.cache)
    keep = [i for i, p in enumerate(paths) if embedded["vectors"][p] is not None]
    vectors = np.stack([embedded["vectors"][paths[i]] for i in keep])
    truth = np.array([who[i] for i in keep])
    people = len(set(who))
    print(
        f"{people} identities, {len(paths)} photos, {len(keep)} with a face "
        f"({len(paths) - len(keep)} without); embedded {embedded['embedded']} in "
        f"{embedded['seconds']:.0f} s"
    )
    rows = []
    print(
        f"{'method':>16} {'threshold':>9} {'precision':>9} {'recall':>7} {'F1':>6} "
        f"{'clusters':>8} {'size>=2':>7} {'people':>6} {'seconds':>7}"
    )
    for method in args.methods:
        for threshold in args.thresholds:
            start = time.perf_counter()
            labels = cluster_embeddings(vectors, threshold, method)
            seconds = time.perf_counter() - start
            scores = pairwise_scores(truth, labels)
            sizes = np.bincount(labels)
            row = {
                "method": method,
                "threshold": threshold,
                **scores.to_dict(),
                "clusters_of_2_or_more": int((sizes >= 2).sum()),
                "singletons": int((sizes == 1).sum()),
                "seconds": seconds,
            }
            rows.append(row)
            print(
                f"{method:>16} {threshold:>9.3f} {row['precision']:>9.4f} {row['recall']:>7.4f}"
                f" {row['f1']:>6.4f} {row['clusters']:>8d} {row['clusters_of_2_or_more']:>7d}"
                f" {people:>6d} {seconds:>7.2f}"
            )
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        summary = {
            "identities": people,
            "photos": len(paths),
            "with_face": len(keep),
            "results": rows,
        }
        args.json.write_text(json.dumps(summary, indent=2) + "\n")


if __name__ == "__main__":
    main()
