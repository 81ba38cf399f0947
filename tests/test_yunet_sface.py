"""YuNet and SFace run as torch graphs, against OpenCV's FaceDetectorYN / FaceRecognizerSF."""

from __future__ import annotations

from functools import cache
from itertools import pairwise
from pathlib import Path

import cv2
import numpy as np
import onnx
import pytest
import torch
from lfw_photos import NAMES, group_photo, lfw
from onnx import TensorProto, helper

from facesphere.align.templates import STANDARD_112, align_face
from facesphere.detect import create_detector
from facesphere.detect.base import Detection
from facesphere.errors import ConfigError, ModelError
from facesphere.pipeline.analyzer import FaceAnalyzer
from facesphere.pretrained.cards import SFACE, YUNET
from facesphere.pretrained.files import card_file
from facesphere.pretrained.onnx_graph import dequantize, load_onnx_graph
from facesphere.recognize import create_recognizer


@pytest.fixture(scope="module", autouse=True)
def _data(shared_data: Path) -> None:
    """Every test here reads LFW photos."""


@cache
def yunet():
    return create_detector("yunet")


@cache
def sface():
    return create_recognizer("sface")


def opencv_faces(image: np.ndarray) -> np.ndarray:
    """OpenCV's rows (x, y, w, h, 5 points, score) for RGB `image`, at its own size."""
    h, w = image.shape[:2]
    reference = cv2.FaceDetectorYN.create(str(card_file(YUNET)), "", (w, h), 0.6, 0.3, 5000)
    _, faces = reference.detect(np.ascontiguousarray(image[:, :, ::-1]))
    return np.zeros((0, 15), np.float32) if faces is None else faces


def as_rows(detections: list[Detection]) -> np.ndarray:
    """Our detections in OpenCV's row layout."""
    return np.array(
        [[*d.box[:2], *(d.box[2:] - d.box[:2]), *d.landmarks.ravel(), d.score] for d in detections]
    ).reshape(-1, 15)


# -- the graph -------------------------------------------------------------------------------


def test_block_dequantization() -> None:
    q = torch.tensor([[1, 2, 3, 4, 5]], dtype=torch.int8)
    scale = torch.tensor([[0.5, 2.0]])
    zero = torch.tensor([[1, -1]], dtype=torch.int8)
    out = dequantize(q, scale, zero, {"axis": 1, "block_size": 3})
    assert out.tolist() == [[0.0, 0.5, 1.0, 10.0, 12.0]]
    per_axis = dequantize(q.T, torch.tensor([2.0] * 5), None, {"axis": 0})
    assert per_axis.flatten().tolist() == [2.0, 4.0, 6.0, 8.0, 10.0]


def test_unsupported_op_refused(tmp_path: Path) -> None:
    node = helper.make_node("Erf", ["x"], ["y"])
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])],
    )
    onnx.save(helper.make_model(graph), tmp_path / "erf.onnx")
    with pytest.raises(ModelError, match="Erf"):
        load_onnx_graph(tmp_path / "erf.onnx")
    (tmp_path / "junk.onnx").write_bytes(b"not an onnx file")
    with pytest.raises(ModelError, match="junk"):
        load_onnx_graph(tmp_path / "junk.onnx")


def test_graph_outputs_equal_opencv_dnn() -> None:
    """The raw head outputs against OpenCV's dnn on the same blob (any H, W; batch of 2)."""
    graph = yunet().model
    net = cv2.dnn.readNet(str(card_file(YUNET)))
    x = np.random.default_rng(0).uniform(0, 255, (2, 3, 96, 160)).astype(np.float32)
    with torch.inference_mode():
        ours = graph(torch.from_numpy(x))
    net.setInput(x[1:])
    names = net.getUnconnectedOutLayersNames()
    for name, reference in zip(names, net.forward(names), strict=True):
        assert ours[name].shape[0] == 2
        assert np.abs(ours[name][1].numpy() - reference[0]).max() < 1e-4, name


# -- YuNet -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "image",
    [*(lambda n=n: lfw(n) for n in NAMES[:4]), lambda: group_photo(NAMES)],
    ids=[*NAMES[:4], "group"],
)
def test_yunet_matches_opencv(image) -> None:
    image = image()
    reference = opencv_faces(image)
    found = yunet().detect(image)
    ours = as_rows(found)
    assert len(ours) == len(reference) >= 1
    # measured: boxes and points within 7e-5 px, scores within 4e-7
    assert np.abs(ours[:, :14] - reference[:, :14]).max() < 1e-3
    assert np.abs(ours[:, 14] - reference[:, 14]).max() < 1e-5
    assert all(a.score >= b.score for a, b in pairwise(found))


def test_yunet_group_and_odd_size() -> None:
    """Pasted faces on a canvas whose sides are not multiples of 32."""
    image = group_photo(NAMES, size=(467, 601))
    reference = opencv_faces(image)
    ours = as_rows(yunet().detect(image))
    assert len(ours) == len(reference) >= 5
    assert np.abs(ours - reference).max() < 1e-3


def test_landmarks_are_standard5() -> None:
    face = yunet().detect(lfw("Tony_Blair"))[0]  # the best of two faces
    left_eye, right_eye, nose, left_mouth, right_mouth = face.landmarks
    assert face.landmark_scheme == "standard5" == YUNET.landmark_scheme
    assert left_eye[0] < nose[0] < right_eye[0] and left_mouth[0] < nose[0] < right_mouth[0]
    assert max(left_eye[1], right_eye[1]) < nose[1] < min(left_mouth[1], right_mouth[1])
    x1, y1, x2, y2 = face.box
    assert np.all((face.landmarks >= [x1, y1]) & (face.landmarks <= [x2, y2]))


def test_batched_equals_single() -> None:
    images = [lfw(n) for n in NAMES[:3]] + [group_photo(NAMES[:3], size=(300, 520))]
    batched = yunet().detect_batch(images)
    for image, found in zip(images, batched, strict=True):
        single = yunet().detect(image)
        assert len(found) == len(single) >= 1
        np.testing.assert_allclose(as_rows(found), as_rows(single), atol=1e-4)


def test_empty_images() -> None:
    assert yunet().detect(np.zeros((1, 1, 3), np.uint8)) == []
    assert yunet().detect(np.full((120, 160, 3), 200, np.uint8)) == []
    assert yunet().detect(np.full((31, 45), 10, np.uint8)) == []


def test_finds_small_faces() -> None:
    """No shrinking by default: a face scaled to ~14 px wide on a 128 px canvas is found."""
    image = lfw("George_W_Bush")
    box = yunet().detect(image)[0].box
    side = round(250 * 14 / (box[2] - box[0]))
    canvas = np.full((128, 128, 3), 90, np.uint8)
    small = cv2.resize(image, (side, side), interpolation=cv2.INTER_AREA)
    canvas[40 : 40 + side, 40 : 40 + side] = small
    (face,) = yunet().detect(canvas)
    assert 10 < face.box[2] - face.box[0] < 20 and 40 <= face.box[0] < 40 + side


def test_max_side_maps_back() -> None:
    """max_side 125 on a 500 px photo: OpenCV's faces on the photo shrunk to 125 px, times 4;
    a photo within max_side is not resized."""
    image = cv2.resize(lfw("Colin_Powell"), (500, 500), interpolation=cv2.INTER_LINEAR)
    shrunk = cv2.resize(image, (125, 125), interpolation=cv2.INTER_AREA)
    reference = opencv_faces(shrunk)[:, :14] * 4
    ours = as_rows(create_detector("yunet", max_side=125).detect(image))[:, :14]
    assert len(ours) == len(reference) >= 1
    assert np.abs(ours - reference).max() < 1e-3
    native = as_rows(create_detector("yunet", max_side=500).detect(image))
    np.testing.assert_allclose(native, as_rows(create_detector("yunet", max_side=0).detect(image)))
    assert np.abs(native[:, :14] - opencv_faces(image)[:, :14]).max() < 1e-3


# -- SFace -----------------------------------------------------------------------------------


def test_sface_matches_opencv() -> None:
    reference = cv2.FaceRecognizerSF.create(str(card_file(SFACE)), "")
    chips = np.stack(
        [align_face(lfw(n), yunet().detect(lfw(n))[0].landmarks, STANDARD_112) for n in NAMES[:4]]
    )
    ours = sface().embed_chips(chips)
    expected = np.concatenate(
        [reference.feature(np.ascontiguousarray(chip[:, :, ::-1])) for chip in chips]
    )
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)
    cosines = np.sum(ours * expected, axis=1)
    assert cosines.min() >= 0.9999  # measured minimum 0.99999994 (float32 rounding)
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)
    assert ours.shape == (4, 128) and ours.dtype == np.float32
    # different people are not the same vector
    assert (ours @ ours.T)[~np.eye(4, dtype=bool)].max() < 0.9


def test_sface_refuses_wrong_shapes() -> None:
    with pytest.raises(ValueError, match="112"):
        sface().embed_chips(np.zeros((2, 150, 150, 3), np.uint8))
    with pytest.raises(ValueError, match="112"):
        sface().embed_chips(np.zeros((112, 112), np.uint8))
    assert sface().embed_chips(np.zeros((0, 112, 112, 3), np.uint8)).shape == (0, 128)


# -- registry and pipeline -------------------------------------------------------------------


def test_registry_and_options() -> None:
    assert yunet().card is YUNET and sface().card is SFACE
    assert SFACE.calibration is not None and SFACE.embedding_dim == 128
    with pytest.raises(ConfigError):
        create_detector("yunet", upsample=1)
    with pytest.raises(ConfigError):
        create_recognizer("sface", engine="dlib")
    with pytest.raises(ConfigError):
        create_detector("yunet", score_threshold=2.0)
    for bad in (-1, 1.5):
        with pytest.raises(ConfigError, match="max_side"):
            create_detector("yunet", max_side=bad)


def test_analyzer_embeds_with_yunet_points() -> None:
    analyzer = FaceAnalyzer(detector="yunet", recognizer="sface", threshold=0.3)
    image = lfw("George_W_Bush")
    faces = analyzer.detect(image)
    assert len(faces) == 1 and faces[0].landmark_scheme == "standard5"
    vectors = analyzer.embed(image, faces)
    assert vectors.shape == (1, 128)
    assert abs(float(np.linalg.norm(vectors[0])) - 1.0) < 1e-5
    assert analyzer._landmarker is None  # the detector's own points were used
