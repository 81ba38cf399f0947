"""The WIDER FACE reader and split (facesphere.eval.wider) and detection AP (eval.metrics)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from facesphere.errors import DataError
from facesphere.eval.metrics import HEIGHT_BUCKETS, detection_ap
from facesphere.eval.wider import (
    WIDER_ANNOTATIONS,
    WiderImage,
    load_wider_subset,
    read_wider_annotations,
    wider_split,
    wider_subset_dir,
)

FIXTURE = """\
1--Handshaking/1_a.jpg
2
10 20 30 40 0 0 0 0 0 0
100 100 8 12 2 0 0 1 0 0
4--Dancing/4_b.jpg
0
0 0 0 0 0 0 0 0 0 0
4--Dancing/4_c.jpg
1
5 6 0 10 0 0 0 0 0 0
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "gt.txt"
    path.write_text(text)
    return path


# -- reader ------------------------------------------------------------------------------------


def test_reader_turns_boxes_into_corners_and_keeps_the_invalid_flag(tmp_path: Path) -> None:
    images = read_wider_annotations(write(tmp_path, FIXTURE))
    assert [im.name for im in images] == [
        "1--Handshaking/1_a.jpg",
        "4--Dancing/4_b.jpg",
        "4--Dancing/4_c.jpg",
    ]
    first, empty, flat = images
    assert first.event == "1--Handshaking"
    assert first.boxes.dtype == np.float32
    np.testing.assert_array_equal(first.boxes, [[10, 20, 40, 60], [100, 100, 108, 112]])
    np.testing.assert_array_equal(first.invalid, [False, True])
    assert first.path(tmp_path) == tmp_path / "images" / "1--Handshaking" / "1_a.jpg"
    # N = 0 and WIDER's line of zeros after it: no boxes, and the next photo still reads
    assert empty.boxes.shape == (0, 4) and empty.invalid.shape == (0,)
    # a box of zero width cannot be matched: it is flagged invalid
    np.testing.assert_array_equal(flat.invalid, [True])


def test_reader_accepts_zero_faces_without_the_line_of_zeros(tmp_path: Path) -> None:
    text = "a/x.jpg\n0\nb/y.jpg\n1\n1 2 3 4 0 0 0 0 0 0\n"
    images = read_wider_annotations(write(tmp_path, text))
    assert [len(im.boxes) for im in images] == [0, 1]


@pytest.mark.parametrize(
    ("text", "line", "words"),
    [
        ("a/x.jpg\n1\n1 2 3 0 0 0 0 0 0\n", 3, "expected 10 numbers"),
        ("a/x.jpg\n1\n1 2 3 x 0 0 0 0 0 0\n", 3, "whole numbers"),
        ("a/x.jpg\n1\n1 2 -3 4 0 0 0 0 0 0\n", 3, "negative box"),
        ("a/x.jpg\n1\n1 2 3 4 0 0 0 2 0 0\n", 3, "invalid flag"),
        ("a/x.jpg\ntwo\n", 2, "number of faces"),
        ("a/x.jpg\n-1\n", 2, "negative number"),
        ("a/x.jpg\n", 2, "ends before the face count"),
        ("a/x.jpg\n2\n1 2 3 4 0 0 0 0 0 0\n", 4, "ends inside the 2 boxes"),
        ("a/x.jpg\n1\n1 2 3 4 0 0 0 0 0 0\n1 2 3 4 0 0 0 0 0 0\n", 4, "photo name"),
        ("a/x.jpg\n0\n1 0 0 0 0 0 0 0 0 0\n", 3, "0 faces but a box line"),
        ("a/x.jpg\n0\na/x.jpg\n0\n", 3, "listed twice"),
        ("nofolder.jpg\n0\n", 1, "photo name"),
    ],
)
def test_a_malformed_file_raises_data_error_naming_the_line(
    tmp_path: Path, text: str, line: int, words: str
) -> None:
    path = write(tmp_path, text)
    with pytest.raises(DataError, match=f"line {line}: .*{words}"):
        read_wider_annotations(path)


def test_a_missing_file_is_a_data_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no WIDER annotation file"):
        read_wider_annotations(tmp_path / "absent.txt")


# -- split -------------------------------------------------------------------------------------


def fake_images(per_event: dict[str, int]) -> list[WiderImage]:
    empty = np.zeros((0, 4), np.float32)
    return [
        WiderImage(f"{event}/{event}_{k:03d}.jpg", empty, np.zeros(0, bool))
        for event, count in per_event.items()
        for k in range(count)
    ]


def test_split_is_every_fourth_photo_per_event_disjoint_covering_and_deterministic() -> None:
    images = fake_images({"1--Handshaking": 52, "4--Dancing": 52, "13--Interview": 10})
    train, dev = wider_split(images)
    names = lambda part: [im.name for im in part]  # noqa: E731
    assert len(dev) == 13 + 13 + 2 and len(train) == len(images) - len(dev)
    assert set(names(train)).isdisjoint(names(dev))
    assert sorted(names(train) + names(dev)) == sorted(names(images))
    assert "1--Handshaking/1--Handshaking_003.jpg" in names(dev)
    assert "1--Handshaking/1--Handshaking_000.jpg" in names(train)
    # the input order does not matter
    again_train, again_dev = wider_split(list(reversed(images)))
    assert names(again_dev) == names(dev) and names(again_train) == names(train)


def test_the_shared_subset_reads_and_splits_65_dev_photos() -> None:
    if not (wider_subset_dir() / WIDER_ANNOTATIONS).is_file():
        pytest.skip(f"the WIDER subset is not at {wider_subset_dir()} (set FACESPHERE_DATA)")
    images = load_wider_subset()
    assert len(images) == 260
    assert sum(len(im.boxes) for im in images) == 1523
    train, dev = wider_split(images)
    assert (len(train), len(dev)) == (195, 65)
    assert {im.event for im in dev} == {im.event for im in images}
    assert all(sum(im.event == e for im in dev) == 13 for e in {im.event for im in dev})


# -- detection AP ------------------------------------------------------------------------------


def boxes(*rows: tuple[float, float, float, float]) -> np.ndarray:
    return np.asarray(rows, np.float32).reshape(-1, 4)


GT = boxes((0, 0, 20, 20), (100, 0, 120, 20))  # two 20 px faces


def found(*rows: tuple[tuple[float, float, float, float], float]):
    return boxes(*(r[0] for r in rows)), np.asarray([r[1] for r in rows], np.float32)


def test_perfect_detections_give_ap_one() -> None:
    result = detection_ap([found((GT[0], 0.9), (GT[1], 0.8))], [GT])
    assert result.ap == pytest.approx(1.0)
    assert (result.positives, result.true_positives, result.false_positives) == (2, 2, 0)


def test_one_false_positive_above_all_true_ones() -> None:
    # ranks: FP (p 0/1), TP (1/2, r 0.5), TP (2/3, r 1): envelope 2/3 at both recalls
    dets = found(((300, 300, 320, 320), 0.95), (GT[0], 0.9), (GT[1], 0.8))
    assert detection_ap([dets], [GT]).ap == pytest.approx(2 / 3)
    # between the two: TP (1/1), FP, TP (2/3): 0.5 * 1 + 0.5 * 2/3
    dets = found((GT[0], 0.9), ((300, 300, 320, 320), 0.85), (GT[1], 0.8))
    assert detection_ap([dets], [GT]).ap == pytest.approx(5 / 6)


def test_ranking_is_across_images_and_a_missed_face_caps_recall() -> None:
    # image 0: a FP at 0.99; image 1: the only TP at 0.5; image 1's second face is missed
    dets = [found(((50, 50, 70, 70), 0.99)), found((GT[0], 0.5))]
    assert detection_ap(dets, [boxes(), GT]).ap == pytest.approx(0.5 * 0.5)


def test_duplicates_and_low_overlap_are_false_positives() -> None:
    shifted = (GT[0] + np.array([12, 0, 12, 0])).tolist()  # IoU 8*20 / (2*400 - 160) = 0.25
    dets = found((GT[0], 0.9), (GT[0], 0.8), (shifted, 0.7))
    result = detection_ap([dets], [GT[:1]])
    assert (result.true_positives, result.false_positives) == (1, 2)
    assert result.ap == pytest.approx(1.0)  # both FPs rank below the only TP
    assert detection_ap([dets], [GT[:1]], iou_threshold=0.2).true_positives == 1


def test_invalid_boxes_are_ignored() -> None:
    truth = boxes(GT[0], GT[1], (200, 0, 220, 20))
    invalid = np.array([False, False, True])
    # a top-ranked detection on the invalid box is neither TP nor FP; missing it costs nothing
    dets = found(((200, 0, 220, 20), 0.99), (GT[0], 0.9), (GT[1], 0.8))
    result = detection_ap([dets], [truth], [invalid])
    assert result.ap == pytest.approx(1.0)
    assert (result.positives, result.ignored, result.false_positives) == (2, 1, 0)
    assert detection_ap([found((GT[0], 0.9), (GT[1], 0.8))], [truth], [invalid]).ap == 1.0
    # without the flag the third box is a face not found: recall 2/3 at precision 1
    assert detection_ap([found((GT[0], 0.9), (GT[1], 0.8))], [truth]).ap == pytest.approx(2 / 3)


def test_a_counted_box_is_preferred_to_an_ignored_one() -> None:
    truth = boxes((0, 0, 20, 20), (2, 0, 22, 20))  # the detection overlaps the ignored one more
    invalid = np.array([False, True])
    dets = found(((2, 0, 22, 20), 0.9))  # IoU 1 with the ignored box, 18/22 with the counted
    result = detection_ap([dets], [truth], [invalid])
    assert (result.true_positives, result.ignored) == (1, 0)


def test_height_buckets_ignore_faces_and_unmatched_detections_outside_them() -> None:
    small, large = (0, 0, 10, 10), (100, 100, 200, 200)  # heights 10 and 100
    truth = boxes(small, large)
    dets = [found((large, 0.9), ((300, 300, 400, 400), 0.95))]  # the large face, a large FP
    assert detection_ap(dets, [truth]).ap == pytest.approx(0.5 * 0.5)  # FP first, half found
    tiny = detection_ap(dets, [truth], height_range=HEIGHT_BUCKETS["<16"])
    assert tiny.positives == 1 and tiny.ap == 0.0  # the large face and the large FP: ignored
    assert (tiny.false_positives, tiny.ignored) == (0, 2)
    big = detection_ap(dets, [truth], height_range=HEIGHT_BUCKETS[">=64"])
    assert big.positives == 1 and big.ap == pytest.approx(0.5)  # the large FP counts here
    assert detection_ap(dets, [truth], height_range=HEIGHT_BUCKETS["16-32"]).positives == 0
    assert math.isnan(detection_ap(dets, [truth], height_range=HEIGHT_BUCKETS["16-32"]).ap)


def test_no_detections_score_zero_and_mismatched_inputs_are_refused() -> None:
    assert detection_ap([found()], [GT]).ap == 0.0
    with pytest.raises(ValueError):
        detection_ap([found()], [GT, GT])
    with pytest.raises(ValueError):
        detection_ap([found()], [GT], [np.zeros(3, bool)])
