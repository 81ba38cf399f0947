"""Open-set identification (1:N) on LFW: rank-1, DIR and FPIR at the default identification
threshold, DET points, and the fixed new-user scenario, for each detector:recognizer pipeline.

Protocols (`facesphere.eval.identification`): the LFW open set (gallery = the first photo of
every person with >= 2 photos, mated probes = their other photos, strangers = the people with
one photo) and the new-user scenario (30 people with >= 3 photos and 30 single-photo people,
drawn with random.Random(2026)). The threshold comes from the recognizer's model card for the
gallery's size (`--threshold` overrides it). Embeddings go through the embedding cache
(`$FACESPHERE_HOME/cache/embeddings.sqlite`), main face `central`, centre crop where no face
is found. LFW is a test set: nothing here is tuned on it.

    python bench/identify.py --json out/bench/identify.json --plot out/bench/identify_det.png
    python bench/identify.py --limit 40 --threshold 0.5 --pipelines yunet:sface   # smoke run
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from facesphere.eval.identification import (
    FPIR_LEVELS,
    OpenSetProtocol,
    TopMatches,
    det_curve,
    det_points,
    lfw_open_set,
    new_user_scenario,
    open_set_report,
    top_matches,
)
from facesphere.eval.verification import embed_main_faces
from facesphere.io.data import data_dir
from facesphere.paths import facesphere_home
from facesphere.pipeline.analyzer import Face, FaceAnalyzer

DEFAULT_PIPELINES = "retinaface:dlib-resnet+sface,yunet:dlib-resnet+sface,yunet:sface"


def operating_threshold(
    recognizer: str, gallery_size: int, override: float | None = None
) -> dict[str, Any]:
    """The identification threshold for a gallery of `gallery_size` subjects: the recognizer
    card's (at the card's default FPIR), or `override` when given."""
    if override is not None:
        return {
            "value": float(override),
            "fpir": None,
            "far": None,
            "gallery_size": gallery_size,
            "source": "--threshold",
        }
    from facesphere.pipeline.analyzer import recognizer_card

    card = recognizer_card(recognizer, {})
    threshold = card.identification_threshold(gallery_size)
    return {
        "value": float(threshold.value),
        "fpir": threshold.fpir,
        "far": threshold.far,
        "gallery_size": threshold.gallery_size,
        "source": f"card {card.name} v{card.version}",
    }


def search(protocol: OpenSetProtocol, faces: dict[Path, Face]) -> TopMatches:
    """Rank-1 answers of the protocol's probes (every photo of it must be in `faces`)."""
    gallery = np.stack([faces[s.path].embedding for s in protocol.gallery])
    probes = protocol.probes
    embeddings = (
        np.stack([faces[s.path].embedding for s in probes])
        if probes
        else np.zeros((0, gallery.shape[1]))
    )
    return top_matches(
        gallery, [s.subject for s in protocol.gallery], embeddings, [s.subject for s in probes]
    )


def evaluate(
    protocol: OpenSetProtocol,
    faces: dict[Path, Face],
    recognizer: str,
    override: float | None,
    extra_thresholds: list[float],
) -> tuple[dict[str, Any], TopMatches]:
    """One protocol's report: sizes, the threshold used, rates and counts there, DET points."""
    missing = [p for p in protocol.paths() if p not in faces]
    usable = protocol.without(missing)
    matches = search(usable, faces)
    threshold = operating_threshold(recognizer, len(usable.subjects), override)
    report = open_set_report(matches, threshold["value"])
    points = det_points(matches, FPIR_LEVELS, [threshold["value"], *extra_thresholds])
    row = {
        "protocol": usable.summary(),
        "dropped_unreadable": len(missing),
        **report.to_dict(),
        "threshold": threshold,  # the report's threshold value, with where it came from
        "det": [p.to_dict() for p in points],
    }
    return row, matches


def parse_pipelines(text: str) -> list[tuple[str, str]]:
    pipelines = []
    for item in text.split(","):
        detector, sep, recognizer = item.strip().partition(":")
        if not sep or not detector or not recognizer:
            raise SystemExit(f"--pipelines: {item!r} is not detector:recognizer")
        pipelines.append((detector, recognizer))
    return pipelines


def save(path: Path | None, data: dict[str, Any]) -> None:
    """Write what has been measured so far (after each pipeline, so a crash loses little)."""
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(data, indent=2) + "\n")


def fmt(value: float | None, spec: str = ".4f") -> str:
    return "-" if value is None else format(value, spec)


def print_tables(results: dict[str, dict[str, Any]]) -> None:
    first = next(iter(results.values()))["lfw"]["protocol"]
    print(
        f"\nLFW open set: gallery {first['gallery_subjects']} people (first photo each), "
        f"{first['mated_probes']} mated probes, {first['strangers']} strangers"
    )
    print(
        f"{'pipeline':<28} {'N':>6} {'rank-1':>7} {'thresh.':>8} {'FPIR tgt':>9} "
        f"{'FPIR':>7} {'DIR':>7} {'FNIR':>7} {'wrong':>6} {'no face':>8} {'wall s':>7}"
    )
    for name, result in results.items():
        row = result["lfw"]
        print(
            f"{name:<28} {row['gallery_subjects']:>6d} {fmt(row['rank1']):>7} "
            f"{row['threshold']['value']:>8.4f} {fmt(row['threshold']['fpir'], '.0e'):>9} "
            f"{fmt(row['fpir']):>7} {fmt(row['dir']):>7} {fmt(row['fnir']):>7} "
            f"{row['wrong']:>6d} {result['no_face']:>8d} {result['seconds']:>7.0f}"
        )
    print("\nDET (LFW open set): FNIR at the threshold where FPIR <= target (threshold)")
    levels = [f"{level:g}" for level in FPIR_LEVELS]
    print(f"{'pipeline':<28} " + " ".join(f"{'FPIR ' + level:>18}" for level in levels))
    coarse = False
    for name, result in results.items():
        strangers = result["lfw"]["strangers"]
        cells = []
        for point in result["lfw"]["det"]:
            if point["fpir_target"] is None:
                continue
            mark = "*" if point["fpir_target"] * strangers < 1 else ""
            coarse = coarse or bool(mark)
            cells.append(f"{fmt(point['fnir'])} ({fmt(point['threshold'], '.3f')}){mark}")
        print(f"{name:<28} " + " ".join(f"{cell:>18}" for cell in cells))
    if coarse:
        print(
            "*: fewer than 1/target strangers, so no stranger may be named: the threshold is "
            "just above the best stranger's score (FPIR 0)"
        )
    scenario = next(iter(results.values()))["scenario"]["protocol"]
    print(
        f"\nNew-user scenario: {scenario['gallery_subjects']} people enrolled, "
        f"{scenario['mated_probes']} probes, {scenario['strangers']} strangers"
    )
    print(
        f"{'pipeline':<28} {'thresh.':>8} {'right':>6} {'wrong':>6} {'unknown':>8} "
        f"{'strangers named':>16}"
    )
    for name, result in results.items():
        row = result["scenario"]
        print(
            f"{name:<28} {row['threshold']['value']:>8.4f} {row['correct']:>6d} "
            f"{row['wrong']:>6d} {row['unknown']:>8d} "
            f"{row['strangers_named']:>9d} of {row['strangers']:<3d}"
        )


def plot_det(curves: dict[str, tuple[TopMatches, dict[str, Any]]], out: Path) -> None:
    """DET curves (FNIR against FPIR, both axes logarithmic) of the LFW open set, one per
    pipeline, with each pipeline's operating point."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 4.2), dpi=120)
    floor, fnir_floor = 1e-4, 1e-3  # zero rates are drawn on the axes' edges
    for name, (matches, row) in curves.items():
        curve = det_curve(matches)
        fpir, fnir = np.maximum(curve.fpir, floor), np.maximum(curve.fnir, fnir_floor)
        (line,) = ax.plot(fpir, fnir, lw=2, label=f"{name} (N={row['gallery_subjects']})")
        if row["fpir"] is not None and row["fnir"] is not None:
            operating = (max(row["fpir"], floor), max(row["fnir"], fnir_floor))
            ax.plot(*operating, "o", color=line.get_color(), ms=6)
    for level in FPIR_LEVELS:
        ax.axvline(level, color="grey", ls=":", lw=1)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(floor, 1)
    ax.set_ylim(fnir_floor, 1.05)
    ax.set_xlabel("false positive identification rate (FPIR)")
    ax.set_ylabel("false negative identification rate (FNIR)")
    ax.set_title("LFW open-set identification, DET (dot: operating threshold)", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--pipelines",
        default=DEFAULT_PIPELINES,
        help=f"comma list of detector:recognizer (default {DEFAULT_PIPELINES})",
    )
    parser.add_argument("--limit", type=int, help="LFW open set: only the first N people by name")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--plot", type=Path, help="write the DET curves (PNG) here")
    parser.add_argument(
        "--threshold", type=float, help="cosine threshold for every pipeline instead of the cards'"
    )
    parser.add_argument(
        "--det-thresholds", default="", help="comma list of extra thresholds for DET points"
    )
    parser.add_argument("--no-cache", action="store_true", help="do not use the embedding cache")
    args = parser.parse_args()
    pipelines = parse_pipelines(args.pipelines)
    extra = [float(v) for v in args.det_thresholds.split(",") if v.strip()]

    images = data_dir() / "lfw" / "images"
    open_set = lfw_open_set(images, args.limit)
    scenario = new_user_scenario(images)
    paths = sorted(set(open_set.paths()) | set(scenario.paths()))
    cache = None if args.no_cache else facesphere_home() / "cache" / "embeddings.sqlite"
    data: dict[str, Any] = {
        "lfw_open_set": open_set.summary(),
        "scenario": {
            **scenario.summary(),
            "member_names": scenario.subjects,
            "stranger_names": [s.subject for s in scenario.strangers],
        },
        "images": len(paths),
        "limit": args.limit,
        "results": {},
    }
    for _, recognizer in pipelines:  # fail before hours of embedding, not after
        operating_threshold(recognizer, len(open_set.subjects), args.threshold)
    curves: dict[str, tuple[TopMatches, dict[str, Any]]] = {}
    for detector, recognizer in pipelines:
        name = f"{detector}:{recognizer}"
        config = FaceAnalyzer(detector=detector, recognizer=recognizer).config
        start = time.perf_counter()
        faces, unreadable = embed_main_faces(
            paths, config, args.workers, "centre", cache, True, "central"
        )
        lfw_row, matches = evaluate(open_set, faces, recognizer, args.threshold, extra)
        scenario_row, _ = evaluate(scenario, faces, recognizer, args.threshold, extra)
        data["results"][name] = {
            "pipeline": {k: config.get(k) for k in ("detector", "recognizer", "engine", "flip")},
            "seconds": time.perf_counter() - start,
            "no_face": sum(1 for f in faces.values() if f.source == "centre"),
            "unreadable": unreadable,
            "lfw": lfw_row,
            "scenario": scenario_row,
        }
        curves[name] = (matches, lfw_row)
        print(f"done: {name}", flush=True)
        save(args.json, data)
    print_tables(data["results"])
    if args.plot is not None:
        plot_det(curves, args.plot)
    save(args.json, data)


if __name__ == "__main__":
    main()
