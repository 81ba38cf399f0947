"""The open-set identification (1:N) protocol: metrics, DET points and LFW's protocol lists.

A *gallery* holds enrolled subjects, each with one or more face embeddings; a *probe* is a
query face. A probe whose subject is enrolled is *mated*; one whose subject is not (a
*stranger*) is *non-mated*. A search ranks the subjects by their best face's cosine
similarity to the probe (embeddings are L2-normalised, so the dot product) and names the
top subject when its score reaches the threshold, else answers "unknown". The rates, as NIST's
FRVT 1:N reports and ISO/IEC 19795-1 define them, at rank 1:

- rank-1 identification rate (closed-set): share of mated probes whose top subject is their
  own, with no threshold;
- DIR(t), detection-and-identification rate: share of mated probes whose top subject is their
  own **and** scores >= t; FNIR(t) = 1 - DIR(t), the false-negative identification rate (a
  mated probe answered "unknown" or named as someone else);
- FPIR(t), false-positive identification rate: share of strangers whose top score is >= t
  (named as somebody although nobody enrolled is them).

A DET curve is FNIR against FPIR as the threshold moves. Pure numpy: nothing here loads a
model; `facesphere.eval.verification.embed_main_faces` makes the embeddings.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

FPIR_LEVELS = (1e-3, 1e-2, 1e-1)

# The fixed new-user scenario of LFW: who is drawn, with which seed (see `new_user_scenario`).
SCENARIO_SEED = 2026
SCENARIO_MEMBERS = 30
SCENARIO_STRANGERS = 30

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


# -- searching --------------------------------------------------------------------------------


@dataclass
class TopMatches:
    """The rank-1 answer of a gallery search for every probe.

    subjects: the enrolled subjects, sorted. top_subject / top_score: per probe, the best
    subject (a name from `subjects`) and its score (its best face's cosine similarity).
    labels: per probe, its true subject. mated: per probe, whether that subject is enrolled.
    gallery_faces: how many gallery embeddings were searched.
    """

    subjects: list[str]
    top_subject: np.ndarray
    top_score: np.ndarray
    labels: np.ndarray
    mated: np.ndarray
    gallery_faces: int

    @property
    def correct(self) -> np.ndarray:
        """Per probe: mated and its top subject is its own (threshold aside)."""
        return self.mated & (self.top_subject == self.labels)

    @property
    def mated_count(self) -> int:
        return int(self.mated.sum())

    @property
    def stranger_count(self) -> int:
        return int((~self.mated).sum())


def _as_matrix(embeddings: Any, what: str) -> np.ndarray:
    matrix = np.asarray(embeddings, dtype=np.float64)
    if matrix.ndim == 1 and matrix.size == 0:
        matrix = matrix.reshape(0, 0)
    if matrix.ndim != 2:
        raise ValueError(f"{what} must be a 2-d array (one embedding a row), got {matrix.shape}")
    return matrix


def top_matches(
    gallery: Any,
    gallery_labels: Sequence[str],
    probes: Any,
    probe_labels: Sequence[str],
) -> TopMatches:
    """Search every probe embedding in the gallery and keep its rank-1 subject and score.

    gallery: (faces, dim) embeddings with one subject label each (a subject may have several
    faces: its score is its best face's). probes: (probes, dim) embeddings with their true
    labels; a label absent from the gallery marks a stranger. Embeddings should be
    L2-normalised (scores are dot products). Ties between subjects go to the first in sorted
    order.
    """
    gallery = _as_matrix(gallery, "gallery")
    probes = _as_matrix(probes, "probes")
    gallery_labels = [str(label) for label in gallery_labels]
    probe_labels = [str(label) for label in probe_labels]
    if len(gallery_labels) != len(gallery):
        raise ValueError(f"{len(gallery)} gallery embeddings but {len(gallery_labels)} labels")
    if len(probe_labels) != len(probes):
        raise ValueError(f"{len(probes)} probe embeddings but {len(probe_labels)} labels")
    if len(gallery) == 0:
        raise ValueError("the gallery is empty")
    if len(probes) and probes.shape[1] != gallery.shape[1]:
        raise ValueError(
            f"probe embeddings are {probes.shape[1]}-d, gallery ones {gallery.shape[1]}-d"
        )
    subjects = sorted(set(gallery_labels))
    column = {name: index for index, name in enumerate(subjects)}
    owner = np.array([column[label] for label in gallery_labels])
    order = np.argsort(owner, kind="stable")  # each subject's faces side by side
    starts = np.r_[0, np.flatnonzero(np.diff(owner[order])) + 1]
    if len(probes):
        face_scores = probes @ gallery[order].T
        subject_scores = np.maximum.reduceat(face_scores, starts, axis=1)
        best = np.argmax(subject_scores, axis=1)
        top_score = subject_scores[np.arange(len(probes)), best]
    else:
        best = np.zeros(0, dtype=np.int64)
        top_score = np.zeros(0)
    names = np.array(subjects, dtype=object)
    labels = np.array(probe_labels, dtype=object)
    return TopMatches(
        subjects=subjects,
        top_subject=names[best] if len(probes) else np.zeros(0, dtype=object),
        top_score=top_score,
        labels=labels,
        mated=np.array([label in column for label in probe_labels], dtype=bool),
        gallery_faces=len(gallery),
    )


# -- rates at one threshold -------------------------------------------------------------------


def _share(count: int, total: int) -> float:
    return count / total if total else float("nan")


@dataclass
class IdentificationReport:
    """Open-set identification at one `threshold` (accept when score >= threshold).

    Counts: `mated` probes split into `correct` (own subject, score >= threshold), `wrong`
    (someone else named: another subject ranked first with score >= threshold) and `unknown`
    (top score under the threshold); `strangers`, of whom `strangers_named` scored >= threshold
    (false positives). Rates: `rank1` (closed-set, no threshold), `dir` = correct / mated,
    `fnir` = 1 - dir, `fpir` = strangers_named / strangers (NaN where the group is empty).
    """

    threshold: float
    gallery_subjects: int
    gallery_faces: int
    mated: int
    strangers: int
    rank1: float
    dir: float
    fnir: float
    fpir: float
    correct: int
    wrong: int
    unknown: int
    strangers_named: int

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (NaN rates as None)."""
        return {
            k: None if isinstance(v, float) and np.isnan(v) else v for k, v in asdict(self).items()
        }


def open_set_report(matches: TopMatches, threshold: float) -> IdentificationReport:
    """The rates and counts of `matches` at `threshold`."""
    threshold = float(threshold)
    accepted = matches.top_score >= threshold
    mated, strangers = matches.mated, ~matches.mated
    correct_rank1 = matches.correct
    correct = int((correct_rank1 & accepted).sum())
    wrong = int((mated & ~correct_rank1 & accepted).sum())
    unknown = int((mated & ~accepted).sum())
    named = int((strangers & accepted).sum())
    n_mated, n_strangers = matches.mated_count, matches.stranger_count
    dir_rate = _share(correct, n_mated)
    return IdentificationReport(
        threshold=threshold,
        gallery_subjects=len(matches.subjects),
        gallery_faces=matches.gallery_faces,
        mated=n_mated,
        strangers=n_strangers,
        rank1=_share(int(correct_rank1.sum()), n_mated),
        dir=dir_rate,
        fnir=1.0 - dir_rate,
        fpir=_share(named, n_strangers),
        correct=correct,
        wrong=wrong,
        unknown=unknown,
        strangers_named=named,
    )


def evaluate_identification(
    gallery: Any,
    gallery_labels: Sequence[str],
    probes: Any,
    probe_labels: Sequence[str],
    threshold: float,
) -> IdentificationReport:
    """Open-set identification of `probes` against `gallery` at `threshold` in one call
    (`top_matches` then `open_set_report`; see both)."""
    return open_set_report(top_matches(gallery, gallery_labels, probes, probe_labels), threshold)


# -- DET --------------------------------------------------------------------------------------


@dataclass
class DetPoint:
    """One point of the DET curve: at `threshold`, the measured `fpir` and `fnir`.
    `fpir_target` is the FPIR the threshold was chosen for (None for a given threshold)."""

    threshold: float
    fpir: float
    fnir: float
    fpir_target: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (NaN and infinite values as None)."""
        return {
            k: None if isinstance(v, float) and not np.isfinite(v) else v
            for k, v in asdict(self).items()
        }


@dataclass
class DetCurve:
    """FNIR against FPIR at every threshold where either changes (thresholds decreasing)."""

    thresholds: np.ndarray
    fpir: np.ndarray
    fnir: np.ndarray = field(repr=False)


def _rates(matches: TopMatches, thresholds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(FPIR, FNIR) at each threshold (vectorised counts of scores >= threshold)."""
    stranger = np.sort(matches.top_score[~matches.mated])
    hits = np.sort(matches.top_score[matches.correct])
    named = len(stranger) - np.searchsorted(stranger, thresholds, side="left")
    found = len(hits) - np.searchsorted(hits, thresholds, side="left")
    n_strangers, n_mated = matches.stranger_count, matches.mated_count
    fpir = named / n_strangers if n_strangers else np.full(len(thresholds), np.nan)
    fnir = 1.0 - found / n_mated if n_mated else np.full(len(thresholds), np.nan)
    fnir = np.where(np.isnan(thresholds), np.nan, fnir)  # no threshold, no rate
    return np.asarray(fpir, dtype=np.float64), np.asarray(fnir, dtype=np.float64)


def threshold_at_fpir(matches: TopMatches, fpir: float) -> float:
    """The lowest threshold whose FPIR is at most `fpir`: just above the (k+1)-th best
    stranger score, k = floor(fpir * strangers). With k = 0 that is just above the best
    stranger (FPIR 0: the target is finer than the strangers can measure); -inf when every
    stranger may be named; NaN without strangers."""
    scores = np.sort(matches.top_score[~matches.mated])[::-1]
    if len(scores) == 0:
        return float("nan")
    allowed = int(np.floor(float(fpir) * len(scores) + 1e-9))
    if allowed >= len(scores):
        return float("-inf")
    return float(np.nextafter(scores[allowed], np.inf))


def det_points(
    matches: TopMatches,
    fpir_levels: Iterable[float] = FPIR_LEVELS,
    thresholds: Iterable[float] = (),
) -> list[DetPoint]:
    """DET points: FNIR at the threshold of each FPIR level (`threshold_at_fpir`), then FPIR
    and FNIR at each given threshold."""
    levels = [float(level) for level in fpir_levels]
    chosen = [threshold_at_fpir(matches, level) for level in levels]
    given = [float(t) for t in thresholds]
    values = np.array(chosen + given, dtype=np.float64)
    fpir, fnir = _rates(matches, values)
    targets: list[float | None] = [*levels, *([None] * len(given))]
    return [
        DetPoint(float(t), float(p), float(n), target)
        for t, p, n, target in zip(values, fpir, fnir, targets)
    ]


def det_curve(matches: TopMatches) -> DetCurve:
    """The whole DET curve of `matches` (for plots)."""
    thresholds = np.r_[np.inf, np.unique(matches.top_score)[::-1]]
    fpir, fnir = _rates(matches, thresholds)
    return DetCurve(thresholds, fpir, fnir)


# -- protocols --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sample:
    """One photo of one subject."""

    subject: str
    path: Path


@dataclass
class OpenSetProtocol:
    """Who is enrolled (`gallery`), who searches as an enrolled subject (`mated`) and who
    searches as a stranger (`strangers`: subjects with no gallery photo)."""

    name: str
    gallery: list[Sample]
    mated: list[Sample]
    strangers: list[Sample]
    note: str = ""

    @property
    def probes(self) -> list[Sample]:
        """Mated probes, then strangers."""
        return [*self.mated, *self.strangers]

    @property
    def subjects(self) -> list[str]:
        """The enrolled subjects, sorted."""
        return sorted({s.subject for s in self.gallery})

    def paths(self) -> list[Path]:
        """Every photo the protocol uses, sorted, each once."""
        return sorted({s.path for s in [*self.gallery, *self.probes]})

    def without(self, paths: Iterable[Path]) -> OpenSetProtocol:
        """The protocol minus the photos in `paths` (e.g. unreadable ones). A subject left
        with no gallery photo leaves altogether (its mated probes too), so that its probes
        do not turn into strangers."""
        gone = {Path(p) for p in paths}
        gallery = [s for s in self.gallery if s.path not in gone]
        enrolled = {s.subject for s in gallery}
        return OpenSetProtocol(
            self.name,
            gallery,
            [s for s in self.mated if s.path not in gone and s.subject in enrolled],
            [s for s in self.strangers if s.path not in gone],
            self.note,
        )

    def summary(self) -> dict[str, Any]:
        """Sizes (JSON-ready)."""
        return {
            "name": self.name,
            "gallery_subjects": len(self.subjects),
            "gallery_photos": len(self.gallery),
            "mated_probes": len(self.mated),
            "strangers": len(self.strangers),
            "stranger_subjects": len({s.subject for s in self.strangers}),
            "images": len(self.paths()),
            "note": self.note,
        }


def read_people(images: str | Path) -> dict[str, list[Path]]:
    """LFW's layout `images/<Name>/<Name>_NNNN.jpg`: each person's photos, sorted by file
    name (the zero-padded number), people sorted by name. Empty folders are left out."""
    images = Path(images)
    if not images.is_dir():
        raise FileNotFoundError(f"{images}: image folder not found")
    people: dict[str, list[Path]] = {}
    for folder in sorted(p for p in images.iterdir() if p.is_dir()):
        photos = sorted(
            p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
        )
        if photos:
            people[folder.name] = photos
    return people


def lfw_open_set(images: str | Path, limit: int | None = None) -> OpenSetProtocol:
    """LFW's open-set protocol: the gallery holds the first photo (sorted) of every person
    with at least two photos, their other photos are the mated probes, and every photo of the
    people with exactly one photo is a stranger.

    limit: use only the first `limit` people in name order (for quick runs).
    """
    people = read_people(images)
    names = sorted(people)[:limit] if limit is not None else sorted(people)
    gallery, mated, strangers = [], [], []
    for name in names:
        photos = people[name]
        if len(photos) >= 2:
            gallery.append(Sample(name, photos[0]))
            mated += [Sample(name, p) for p in photos[1:]]
        else:
            strangers.append(Sample(name, photos[0]))
    note = "first photo of each person with >= 2 as the gallery, the rest mated; singles strangers"
    if limit is not None:
        note += f"; first {limit} people by name only"
    return OpenSetProtocol("lfw-open-set", gallery, mated, strangers, note)


def new_user_scenario(
    images: str | Path,
    members: int = SCENARIO_MEMBERS,
    strangers: int = SCENARIO_STRANGERS,
    seed: int = SCENARIO_SEED,
) -> OpenSetProtocol:
    """The fixed "new users" scenario of LFW: a small gallery of people just enrolled.

    Rule: `rng = random.Random(seed)`; `rng.sample` draws `members` names from the sorted
    names of the people with at least three photos, then, with the same `rng`, `strangers`
    names from the sorted names of the people with exactly one photo. Each member enrolls
    their first photo (sorted) and searches with their second and third; each stranger
    searches with their one photo. Defaults: 30 members (60 mated probes), 30 strangers,
    seed 2026.
    """
    people = read_people(images)
    eligible = sorted(name for name, photos in people.items() if len(photos) >= 3)
    singles = sorted(name for name, photos in people.items() if len(photos) == 1)
    if len(eligible) < members or len(singles) < strangers:
        raise ValueError(
            f"{images}: {len(eligible)} people with >= 3 photos and {len(singles)} with one; "
            f"the scenario needs {members} and {strangers}"
        )
    rng = random.Random(seed)
    chosen = sorted(rng.sample(eligible, members))
    outsiders = sorted(rng.sample(singles, strangers))
    return OpenSetProtocol(
        "new-user-scenario",
        [Sample(name, people[name][0]) for name in chosen],
        [Sample(name, p) for name in chosen for p in people[name][1:3]],
        [Sample(name, people[name][0]) for name in outsiders],
        f"{members} people with >= 3 photos and {strangers} with one, random.Random({seed})",
    )
