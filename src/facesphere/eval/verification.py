"""The verification protocol: embed every image of a pair list, score the pairs, report."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from facesphere.cards import ModelCard
from facesphere.detect import DETECTORS
from facesphere.eval.cache import EmbeddingCache
from facesphere.eval.metrics import auc, eer, kfold_accuracy, roc_curve, tar_at_far
from facesphere.eval.pairs import Pair
from facesphere.io.files import file_sha256
from facesphere.paths import facesphere_home
from facesphere.pipeline.analyzer import Face, recognizer_card
from facesphere.pipeline.executors import LocalPool
from facesphere.pipeline.runner import analyze_files
from facesphere.recognize.fused import fuse_embeddings

FAR_LEVELS = (1e-3, 1e-2)


@dataclass
class VerificationReport:
    """Everything the pairs protocol measured."""

    pairs: int
    images: int
    accuracy_mean: float
    accuracy_std: float
    fold_accuracies: list[float]
    fold_thresholds: list[float]
    auc: float
    eer: float
    tar_at_far: dict[str, float]
    no_face: int
    no_face_action: str
    unreadable: list[str]
    seconds: float
    pipeline: dict[str, Any]
    scores: np.ndarray = field(repr=False)
    labels: np.ndarray = field(repr=False)

    def to_dict(self) -> dict[str, Any]:
        data = {k: v for k, v in self.__dict__.items() if k not in ("scores", "labels")}
        return json.loads(json.dumps(data))


def pipeline_key(config: dict[str, Any], fallback: str, face: str) -> str:
    """A stable string naming what produced an embedding (for the cache)."""
    keys = ("detector", "recognizer", "engine", "upsample", "flip")
    settings = {**{k: config.get(k) for k in keys}, "fallback": fallback, "face": face}
    if config.get("max_side") is not None:  # named only when set: earlier caches stay valid
        settings["max_side"] = config["max_side"]
    # the detector's weights version: new weights (thunder v3's landmark stage) give new points
    card = DETECTORS.card(config["detector"]) if config.get("detector") in DETECTORS else None
    if card is not None:
        settings["detector_version"] = card.version
    model_file = Path(str(config.get("recognizer")))
    if model_file.is_file():  # an exported model: its content, not its path, names it
        settings["recognizer"] = file_sha256(model_file)
    return json.dumps(settings, sort_keys=True)


def embed_main_faces(
    paths: list[Path],
    config: dict[str, Any],
    workers: int | None = None,
    fallback: str = "centre",
    cache_path: Path | None = None,
    progress: bool = True,
    face: str = "central",
) -> tuple[dict[Path, Face], list[str]]:
    """The main face of every image (`central` or `largest`; the centre crop where none is
    detected), through the cache.

    A fused recognizer's embeddings are fused from its members' (each embedded, and cached,
    as a pipeline of its own with the same detector): the same vectors the fused pipeline
    computes, since its members align the same detected face with their own templates.
    Returns the faces by path and the images that could not be read (with reasons).
    """
    card = recognizer_card(str(config.get("recognizer")), {})
    if card.members:
        return _fused_main_faces(paths, config, card, workers, fallback, cache_path, progress, face)
    key = pipeline_key(config, fallback, face)
    cache = EmbeddingCache(cache_path) if cache_path else None
    faces: dict[Path, Face] = {}
    hashes: dict[Path, str] = {}
    unreadable: list[str] = []
    todo: list[Path] = []
    for path in paths:
        try:
            hashes[path] = file_sha256(path)
        except OSError as exc:
            unreadable.append(f"{path}: {exc.strerror or exc}")
            continue
        cached = cache.get(hashes[path], key) if cache else None
        if cached is not None:
            faces[path] = cached
        else:
            todo.append(path)
    try:
        results = analyze_files(
            [str(p) for p in todo],
            config,
            LocalPool(workers),
            fallback,
            keep=face,
            progress=progress,
            description="embedding",
        )
        for done, result in enumerate(results, start=1):
            path = Path(result.path)
            if result.error or not result.faces:
                unreadable.append(f"{path}: {result.error or 'no face'}")
                continue
            faces[path] = result.faces[0]
            if cache:
                cache.put(hashes[path], key, result.faces[0])
                if done % 200 == 0:
                    cache.commit()
    finally:
        if cache:
            cache.close()
    return faces, unreadable


def _fused_main_faces(
    paths: list[Path],
    config: dict[str, Any],
    card: ModelCard,
    workers: int | None,
    fallback: str,
    cache_path: Path | None,
    progress: bool,
    face: str,
) -> tuple[dict[Path, Face], list[str]]:
    """`embed_main_faces` for a fused recognizer, member by member."""
    per_member = []
    unreadable: list[str] = []
    for member in card.members:
        member_config = {**config, "recognizer": member.card.name}
        faces, bad = embed_main_faces(
            paths, member_config, workers, fallback, cache_path, progress, face
        )
        per_member.append(faces)
        unreadable = unreadable or bad
    fused: dict[Path, Face] = {}
    for path, first in per_member[0].items():
        if all(path in faces for faces in per_member):
            vectors = [faces[path].embedding[None] for faces in per_member]
            embedding = fuse_embeddings(card, vectors)[0]
            fused[path] = replace(first, embedding=embedding, extra_landmarks={})
    return fused, unreadable


def evaluate_pairs(
    pairs: list[Pair],
    config: dict[str, Any],
    workers: int | None = None,
    use_cache: bool = True,
    progress: bool = True,
    face: str = "central",
) -> VerificationReport:
    """Run the 10-fold verification protocol over `pairs` with the pipeline `config`.

    face: which face of a photo is compared: `central` (the default: pair lists such as LFW's
    are cut around the labelled person, while other people may be larger) or `largest`.
    A pair whose image could not be read scores -1 (decided "different").
    """
    start = time.perf_counter()
    paths = sorted({p.path_a for p in pairs} | {p.path_b for p in pairs})
    cache_path = facesphere_home() / "cache" / "embeddings.sqlite" if use_cache else None
    faces, unreadable = embed_main_faces(
        paths, config, workers, "centre", cache_path, progress, face
    )
    scores = np.array(
        [
            float(faces[p.path_a].embedding @ faces[p.path_b].embedding)
            if p.path_a in faces and p.path_b in faces
            else -1.0
            for p in pairs
        ]
    )
    labels = np.array([p.same for p in pairs])
    folds = np.array([p.fold for p in pairs])
    kfold = kfold_accuracy(scores, labels, folds)
    curve = roc_curve(scores, labels)
    return VerificationReport(
        pairs=len(pairs),
        images=len(paths),
        accuracy_mean=kfold.mean,
        accuracy_std=kfold.std,
        fold_accuracies=kfold.accuracies.tolist(),
        fold_thresholds=kfold.thresholds.tolist(),
        auc=auc(curve),
        eer=eer(curve),
        tar_at_far={f"{far:g}": tar_at_far(curve, far) for far in FAR_LEVELS},
        no_face=sum(1 for f in faces.values() if f.source == "centre"),
        no_face_action="embedded the centre crop (face box 1/2.2 of the photo, as LFW is cut)",
        unreadable=unreadable,
        seconds=time.perf_counter() - start,
        pipeline={
            **{k: config.get(k) for k in ("detector", "recognizer", "engine", "upsample", "flip")},
            "face": face,
        },
        scores=scores,
        labels=labels,
    )


def plot_roc(report: VerificationReport, out: str | Path, title: str = "ROC") -> None:
    """Write the ROC curve (log FAR axis) of a report as an image."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curve = roc_curve(report.scores, report.labels)
    fig, ax = plt.subplots(figsize=(5, 4), dpi=120)
    far = np.maximum(curve.far, 1e-4)
    ax.plot(far, curve.tar, lw=2, label=f"acc {report.accuracy_mean:.2%}, AUC {report.auc:.4f}")
    for level, value in report.tar_at_far.items():
        ax.axvline(float(level), color="grey", ls=":", lw=1)
        ax.annotate(f"TAR {value:.3f}", (float(level), value), fontsize=8)
    ax.set_xscale("log")
    ax.set_xlim(1e-4, 1)
    ax.set_ylim(0, 1.01)
    ax.set_xlabel("false accept rate")
    ax.set_ylabel("true accept rate")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)
