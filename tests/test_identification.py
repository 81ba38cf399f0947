"""Open-set identification: rates on hand-made embeddings, DET points, LFW protocol lists."""

from __future__ import annotations

import math
import random
from pathlib import Path

import numpy as np
import pytest

from facesphere.eval.identification import (
    SCENARIO_SEED,
    det_curve,
    det_points,
    evaluate_identification,
    lfw_open_set,
    new_user_scenario,
    open_set_report,
    threshold_at_fpir,
    top_matches,
)

DIM = 6
SLACK = DIM - 1  # the last axis takes up the rest of the unit norm; no gallery face uses it


def axis(i: int) -> np.ndarray:
    v = np.zeros(DIM)
    v[i] = 1.0
    return v


def probe(**scores: float) -> np.ndarray:
    """A unit vector whose dot product with gallery axis a, b, c, d is the given score."""
    v = np.zeros(DIM)
    for name, score in scores.items():
        v["abcd".index(name)] = score
    v[SLACK] = math.sqrt(1.0 - float(v @ v))
    return v


A, B, C, D = (axis(i) for i in range(4))


def scene():
    """Gallery A, B, C (one face each); four mated probes and two strangers."""
    gallery = np.stack([A, B, C])
    labels = ["A", "B", "C"]
    probes = np.stack(
        [
            probe(a=0.9),  # A, right and confident: correct
            probe(a=0.3, b=0.2),  # A, right but weak: unknown (rank-1 right)
            probe(a=0.7, b=0.6),  # B, A ranks first above the threshold: wrong
            probe(c=0.4, a=0.1),  # C, right but weak: unknown
            probe(a=0.8),  # stranger named as A: a false positive
            probe(b=0.2),  # stranger, rejected
        ]
    )
    probe_labels = ["A", "A", "B", "C", "X", "Y"]
    return gallery, labels, probes, probe_labels


def test_counts_and_rates_at_a_threshold() -> None:
    report = evaluate_identification(*scene(), threshold=0.5)
    assert (report.mated, report.strangers) == (4, 2)
    assert (report.correct, report.wrong, report.unknown) == (1, 1, 2)
    assert report.strangers_named == 1
    assert report.rank1 == pytest.approx(3 / 4)
    assert report.dir == pytest.approx(1 / 4)
    assert report.fnir == pytest.approx(3 / 4)
    assert report.fpir == pytest.approx(1 / 2)
    assert (report.gallery_subjects, report.gallery_faces) == (3, 3)


def test_wrong_person_above_threshold_is_wrong_even_when_own_score_passes() -> None:
    # B's own score 0.6 is above the threshold too, but A ranks first: not a correct answer.
    report = evaluate_identification([A, B], ["A", "B"], [probe(a=0.7, b=0.6)], ["B"], 0.5)
    assert (report.correct, report.wrong, report.unknown) == (0, 1, 0)
    assert report.dir == 0.0 and report.rank1 == 0.0


def test_lower_threshold_names_more_strangers_and_finds_more_mates() -> None:
    report = evaluate_identification(*scene(), threshold=0.15)
    assert (report.correct, report.wrong, report.unknown) == (3, 1, 0)
    assert report.strangers_named == 2 and report.fpir == 1.0


def test_score_equal_to_threshold_is_accepted() -> None:
    report = evaluate_identification([A], ["A"], [probe(a=0.5), probe(a=0.5)], ["A", "Z"], 0.5)
    assert report.correct == 1 and report.strangers_named == 1


def test_a_subject_scores_its_best_face() -> None:
    # A has two faces, axes a and c (listed apart, B's face in between): A scores its better
    # face's 0.8, so it beats B's 0.5 (its first face alone, or the mean, would not).
    gallery = np.stack([A, B, C])
    matches = top_matches(gallery, ["A", "B", "A"], [probe(a=0.1, b=0.5, c=0.8)], ["A"])
    assert list(matches.top_subject) == ["A"]
    assert matches.top_score[0] == pytest.approx(0.8)
    assert matches.subjects == ["A", "B"] and matches.gallery_faces == 3
    report = open_set_report(matches, 0.7)
    assert (report.correct, report.gallery_subjects, report.gallery_faces) == (1, 2, 3)


def test_no_strangers_gives_no_fpir() -> None:
    report = evaluate_identification([A], ["A"], [probe(a=0.9)], ["A"], 0.5)
    assert math.isnan(report.fpir)
    assert report.to_dict()["fpir"] is None and report.to_dict()["dir"] == 1.0


def test_bad_inputs_are_refused() -> None:
    with pytest.raises(ValueError, match="labels"):
        top_matches([A, B], ["A"], [A], ["A"])
    with pytest.raises(ValueError, match="empty"):
        top_matches(np.zeros((0, DIM)), [], [A], ["A"])
    with pytest.raises(ValueError, match="-d"):
        top_matches([A], ["A"], [np.ones(3)], ["A"])


def det_scene():
    """Mated: three found at 0.95, 0.8, 0.6 and one wrong; strangers at 0.9, 0.7, 0.5, 0.3."""
    gallery, labels = np.stack([A, B, C, D]), ["A", "B", "C", "D"]
    probes = [
        probe(a=0.95),
        probe(b=0.8),
        probe(c=0.6),
        probe(a=0.65, d=0.1),  # D, named A
        probe(a=0.9),
        probe(b=0.7),
        probe(c=0.5),
        probe(d=0.3),
    ]
    return top_matches(gallery, labels, probes, ["A", "B", "C", "D", "W", "X", "Y", "Z"])


def test_threshold_at_fpir_allows_floor_of_target_times_strangers() -> None:
    matches = det_scene()
    just_above_07 = threshold_at_fpir(matches, 0.25)
    assert 0.7 < just_above_07 < 0.7 + 1e-9
    assert 0.9 < threshold_at_fpir(matches, 0.1) < 0.9 + 1e-9  # 0.4 strangers: none allowed
    assert threshold_at_fpir(matches, 1.0) == -math.inf


def test_det_points_at_fpir_levels_and_given_thresholds() -> None:
    points = det_points(det_scene(), fpir_levels=(0.1, 0.25), thresholds=(0.5,))
    assert [p.fpir_target for p in points] == [0.1, 0.25, None]
    assert [p.fpir for p in points] == pytest.approx([0.0, 0.25, 0.75])
    # above 0.9 only 0.95 is found; above 0.7 also 0.8; at 0.5 also 0.6 (the wrong one never)
    assert [p.fnir for p in points] == pytest.approx([0.75, 0.5, 0.25])
    assert points[2].threshold == 0.5
    assert points[2].to_dict()["fpir_target"] is None


def test_det_point_with_tied_stranger_scores_keeps_fpir_under_target() -> None:
    matches = top_matches([A], ["A"], [probe(a=0.6), probe(a=0.6), probe(a=0.1)], "XYZ")
    (point,) = det_points(matches, fpir_levels=(0.4,))
    assert point.fpir == 0.0  # naming one of the tied pair would name both (2/3 > 0.4)


def test_det_curve_runs_from_strict_to_lenient() -> None:
    curve = det_curve(det_scene())
    assert curve.thresholds[0] == math.inf
    assert (curve.fpir[0], curve.fnir[0]) == (0.0, 1.0)
    assert (curve.fpir[-1], curve.fnir[-1]) == pytest.approx((1.0, 0.25))
    assert np.all(np.diff(curve.fpir) >= 0) and np.all(np.diff(curve.fnir) <= 0)


# -- protocol lists on a fake LFW tree ----------------------------------------------------


def fake_lfw(root: Path, counts: dict[str, int]) -> Path:
    images = root / "images"
    for name, count in counts.items():
        folder = images / name
        folder.mkdir(parents=True)
        for number in reversed(range(1, count + 1)):  # created out of order on purpose
            (folder / f"{name}_{number:04d}.jpg").write_bytes(b"x")
    return images


def test_lfw_open_set_roles(tmp_path: Path) -> None:
    images = fake_lfw(tmp_path, {"Alice": 11, "Bob": 2, "Carol": 1, "Dave": 1})
    (images / "Empty").mkdir()
    (images / "Bob" / "notes.txt").write_text("not a photo")
    protocol = lfw_open_set(images)
    assert [(s.subject, s.path.name) for s in protocol.gallery] == [
        ("Alice", "Alice_0001.jpg"),
        ("Bob", "Bob_0001.jpg"),
    ]
    assert [s.path.name for s in protocol.mated] == [
        *(f"Alice_{n:04d}.jpg" for n in range(2, 12)),  # _0010 after _0009: numeric order
        "Bob_0002.jpg",
    ]
    assert [s.subject for s in protocol.strangers] == ["Carol", "Dave"]
    assert protocol.subjects == ["Alice", "Bob"]
    assert len(protocol.paths()) == 15
    summary = protocol.summary()
    assert (summary["gallery_subjects"], summary["mated_probes"], summary["strangers"]) == (
        2,
        11,
        2,
    )


def test_lfw_open_set_limit_takes_first_people_by_name(tmp_path: Path) -> None:
    images = fake_lfw(tmp_path, {"Dave": 1, "Bob": 2, "Carol": 1, "Alice": 3})
    protocol = lfw_open_set(images, limit=3)
    assert protocol.subjects == ["Alice", "Bob"]
    assert [s.subject for s in protocol.strangers] == ["Carol"]


def test_without_drops_subjects_that_lose_their_gallery_photo(tmp_path: Path) -> None:
    images = fake_lfw(tmp_path, {"Alice": 3, "Bob": 2, "Carol": 1})
    protocol = lfw_open_set(images)
    smaller = protocol.without([images / "Bob" / "Bob_0001.jpg", images / "Alice/Alice_0003.jpg"])
    assert smaller.subjects == ["Alice"]
    assert [s.path.name for s in smaller.mated] == ["Alice_0002.jpg"]
    assert [s.subject for s in smaller.strangers] == ["Carol"]  # Bob is not a stranger now


def test_new_user_scenario_follows_its_rule(tmp_path: Path) -> None:
    counts = {f"Multi{i}": 3 + i % 2 for i in range(6)}
    counts |= {f"Pair{i}": 2 for i in range(3)} | {f"Single{i}": 1 for i in range(5)}
    images = fake_lfw(tmp_path, counts)
    scenario = new_user_scenario(images, members=3, strangers=2)
    rng = random.Random(SCENARIO_SEED)
    members = sorted(rng.sample(sorted(n for n in counts if n.startswith("Multi")), 3))
    outsiders = sorted(rng.sample(sorted(n for n in counts if n.startswith("Single")), 2))
    assert scenario.subjects == members
    assert [s.path.name for s in scenario.gallery] == [f"{n}_0001.jpg" for n in members]
    # the second and third photos, never a fourth
    assert [s.path.name for s in scenario.mated] == [
        f"{n}_{k:04d}.jpg" for n in members for k in (2, 3)
    ]
    assert [s.subject for s in scenario.strangers] == outsiders
    again = new_user_scenario(images, members=3, strangers=2)
    assert again.probes == scenario.probes


def test_new_user_scenario_needs_enough_people(tmp_path: Path) -> None:
    images = fake_lfw(tmp_path, {"Alice": 3, "Bob": 1})
    with pytest.raises(ValueError, match="needs 2"):
        new_user_scenario(images, members=2, strangers=1)
