"""Clustering quality on celeba299: is there one cluster per person?

Embeds the central face of every photo of the first `--limit` identities (all 299 by default)
with `--detector` and `--recognizer` (through the shared embedding cache, so other thresholds
cost nothing), clusters them with each of `--methods` (`facesphere.cluster`: average linkage,
Chinese whispers) at each `--thresholds` value (default: a grid around the recognizer card's
cluster thresholds), and reports pairwise precision / recall / F1 against the identities and
the number of clusters (all, and of two or more faces) against the number of people. `--half
even|odd` keeps every other identity (sorted by name): the clustering thresholds in the cards
were chosen on the even half (best F1) and checked on the odd one.

    python bench/cluster.py --limit 50 --json out/bench/cluster.json
    python bench/cluster.py --half even --detector yunet --recognizer sface
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from facesphere.cluster import cluster_embeddings, list_cluster_methods, pairwise_scores
from facesphere.defaults import DEFAULT_DETECTOR
from facesphere.eval.verification import embed_main_faces
from facesphere.io.data import data_dir
from facesphere.io.files import iter_image_files
from facesphere.paths import facesphere_home
from facesphere.pipeline.analyzer import FaceAnalyzer, recognizer_card


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


def embed(paths: list[str], detector: str, recognizer: str, workers: int | None) -> dict:
    """Embedding of the central face of each photo (the centre crop when none is detected)."""
    config = FaceAnalyzer(detector=detector, recognizer=recognizer).config
    start = time.perf_counter()
    cache = facesphere_home() / "cache" / "embeddings.sqlite"
    files = [Path(p) for p in paths]
    faces, _ = embed_main_faces(files, config, workers, "centre", cache, True, "central")
    vectors = {str(p): faces[p].embedding if p in faces else None for p in files}
    return {"vectors": vectors, "seconds": time.perf_counter() - start}


def default_thresholds(recognizer: str) -> list[float]:
    """A grid of 0.01 steps 0.05 either side of the card's cluster thresholds."""
    card = recognizer_card(recognizer, {})
    values = [t.value for job, t in card.thresholds.items() if job.startswith("cluster")]
    if not values:
        values = [card.verification_threshold(1e-4).value]
    low, high = min(values) - 0.05, max(values) + 0.05
    return [round(v, 3) for v in np.arange(low, high + 1e-9, 0.01)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=None, help="identities (default: all)")
    parser.add_argument("--thresholds", type=float, nargs="+", default=None)
    parser.add_argument("--detector", default=DEFAULT_DETECTOR)
    parser.add_argument("--recognizer", default="dlib-resnet")
    parser.add_argument("--half", choices=["all", "even", "odd"], default="all")
    parser.add_argument("--workers", type=int, default=None, help="embedding processes")
    methods = list_cluster_methods()
    parser.add_argument("--methods", nargs="+", default=methods, choices=methods)
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    args = parser.parse_args()

    paths, who = photo_list(args.limit, args.half)
    thresholds = args.thresholds or default_thresholds(args.recognizer)
    embedded = embed(paths, args.detector, args.recognizer, args.workers)
    keep = [i for i, p in enumerate(paths) if embedded["vectors"][p] is not None]
    vectors = np.stack([embedded["vectors"][paths[i]] for i in keep])
    truth = np.array([who[i] for i in keep])
    people = len(set(who))
    print(
        f"{people} identities, {len(paths)} photos, {len(keep)} with a face "
        f"({len(paths) - len(keep)} without); {args.detector} + {args.recognizer}, "
        f"embedded in {embedded['seconds']:.0f} s"
    )
    rows = []
    print(
        f"{'method':>16} {'threshold':>9} {'precision':>9} {'recall':>7} {'F1':>6} "
        f"{'clusters':>8} {'size>=2':>7} {'people':>6} {'seconds':>7}"
    )
    for method in args.methods:
        for threshold in thresholds:
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
            "pipeline": {"detector": args.detector, "recognizer": args.recognizer},
            "identities": people,
            "photos": len(paths),
            "with_face": len(keep),
            "results": rows,
        }
        args.json.write_text(json.dumps(summary, indent=2) + "\n")


if __name__ == "__main__":
    main()
