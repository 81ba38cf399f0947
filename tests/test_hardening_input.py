"""Hostile inputs (issue 13): images too small to hold a face, images far larger than a detector
needs, and the front ends (CLI, REST) around them."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from functools import cache
from pathlib import Path

import cv2
import numpy as np
import pytest
from fastapi.testclient import TestClient
from lfw_photos import lfw
from PIL import Image
from typer.testing import CliRunner

from facesphere.cli.main import app
from facesphere.detect import create_detector, list_detectors
from facesphere.detect.base import Detection
from facesphere.detect.geometry import DEFAULT_MAX_SIDE, MIN_FACE_SIDE, shrink_to_max_side
from facesphere.pipeline.analyzer import FaceAnalyzer
from facesphere.serve.app import create_app
from facesphere.serve.config import ServeConfig
from facesphere.serve.keys import KeyStore

runner = CliRunner()


@cache
def detector(name: str, **options: int):
    return create_detector(name, **options)


def check_detections(found: list[Detection], height: int, width: int) -> None:
    """A list of Detection with finite, non-empty boxes that overlap the image."""
    assert isinstance(found, list)
    for face in found:
        assert isinstance(face, Detection)
        x1, y1, x2, y2 = (float(v) for v in face.box)
        assert np.isfinite([x1, y1, x2, y2, face.score]).all()
        assert x1 < x2 and y1 < y2
        assert x1 < width and x2 > 0 and y1 < height and y2 > 0
        if face.landmarks is not None:
            assert face.landmarks.shape == (5, 2) and np.isfinite(face.landmarks).all()


# -- tiny and odd images, every detector ---------------------------------------------------------

ODD_SHAPES = [
    (1, 4000),
    (4000, 1),
    (3, 2000),
    (2000, 3),
    (7, 9),
    (19, 25),
    (20, 20),
    (21, 300),
    (300, 21),
    (9, 3000),
    (2, 100_000),
]


@pytest.mark.parametrize("name", list_detectors())
def test_no_detector_fails_on_tiny_or_odd_images(name: str) -> None:
    """Every size from 1x1 to 12x12 and odd shapes, noise and flat: a list, never a crash."""
    rng = np.random.default_rng(13)
    shapes = [(h, w) for h in range(1, 13) for w in range(1, 13)] + ODD_SHAPES
    for height, width in shapes:
        noise = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
        flat = np.full((height, width, 3), rng.integers(0, 256), np.uint8)
        for image in (noise, flat, flat[:, :, 0]):
            check_detections(detector(name).detect(image), height, width)


@pytest.mark.parametrize("name", list_detectors())
def test_an_image_without_room_for_a_face_has_none(name: str) -> None:
    rng = np.random.default_rng(5)
    for side in range(1, MIN_FACE_SIDE):
        for shape in ((side, side), (side, 500), (500, side)):
            for _ in range(8):
                image = rng.integers(0, 256, (*shape, 3), dtype=np.uint8)
                assert detector(name).detect(image) == [], shape


def test_cnn_on_dlib_below_its_smallest_input() -> None:
    """dlib's own MMOD code fails (or corrupts its memory) on images under 10 px wide."""
    dlib_cnn = detector("cnn", engine="dlib")
    for shape in ((9, 9), (40, 9), (1000, 8), (6, 100)):
        assert dlib_cnn.detect(np.zeros((*shape, 3), np.uint8)) == []


# -- bounded working resolution -------------------------------------------------------------------


def test_shrink_to_max_side() -> None:
    big = np.zeros((3000, 4000, 3), np.uint8)
    shrunk, scale = shrink_to_max_side(big, 2048)
    assert shrunk.shape == (1536, 2048, 3)
    np.testing.assert_allclose(scale, [2048 / 4000, 1536 / 3000])
    strip, scale = shrink_to_max_side(np.zeros((2, 100_000, 3), np.uint8), 2048)
    assert strip.shape == (1, 2048, 3)
    np.testing.assert_allclose(scale, [2048 / 100_000, 1 / 2])
    for limit in (4000, 0):  # within the limit, or no limit: untouched
        same, scale = shrink_to_max_side(big, limit)
        assert same.shape == big.shape and scale.tolist() == [1.0, 1.0]


class NetworkSpy:
    """Records the array each detector's network (or dlib call) gets."""

    def __init__(self, name: str, found) -> None:
        self.shapes: list[tuple[int, ...]] = []
        if name == "hog":
            real = found._detector

            class Wrapped:
                def run(inner, image, *args):
                    self.shapes.append(image.shape[:2])
                    return real.run(image, *args)

            found._detector = Wrapped()
            self.undo = lambda: setattr(found, "_detector", real)
        else:
            hook = found.model.register_forward_pre_hook(
                lambda module, args: self.shapes.append(tuple(args[0].shape[2:]))
            )
            self.undo = hook.remove


@pytest.fixture()
def spy() -> Iterator:
    spies: list[NetworkSpy] = []

    def attach(name: str, found) -> NetworkSpy:
        spies.append(NetworkSpy(name, found))
        return spies[-1]

    yield attach
    for one in spies:
        one.undo()


def test_huge_image_runs_at_the_default_max_side(spy) -> None:
    """A 4000x4000 photo reaches YuNet as 2048x2048; a 1080p frame keeps its own size."""
    yunet = detector("yunet")
    seen = spy("yunet", yunet)
    assert yunet.detect(np.full((4000, 4000, 3), 128, np.uint8)) == []
    yunet.detect(np.full((1080, 1920, 3), 128, np.uint8))
    assert seen.shapes == [(DEFAULT_MAX_SIDE, DEFAULT_MAX_SIDE), (1088, 1920)]  # padded to 32


@pytest.mark.parametrize("name", ["yunet", "retinaface", "cnn", "hog"])
def test_boxes_of_a_shrunk_image_map_back(name: str, spy) -> None:
    """A photo enlarged 3x, run at max_side 250, gives 3x the boxes (and points) of the photo
    itself, and the network sees a 250 px image."""
    photo = lfw("Colin_Powell")
    large = cv2.resize(photo, (750, 750), interpolation=cv2.INTER_LINEAR)
    bounded = detector(name, max_side=250)
    seen = spy(name, bounded)
    (small,) = detector(name).detect(photo)
    (mapped,) = bounded.detect(large)
    assert mapped.box.dtype == np.float32
    if name == "cnn":  # the tiled pyramid: the image plus 11 px each side
        assert seen.shapes[0][1] == 250 + 2 * 11
    elif name == "yunet":
        assert seen.shapes == [(256, 256)]  # 250, padded to a multiple of 32
    else:
        assert seen.shapes == [(250, 250)]
    np.testing.assert_allclose(mapped.box, small.box * 3, atol=6)
    if small.landmarks is not None:
        np.testing.assert_allclose(mapped.landmarks, small.landmarks * 3, atol=6)


def test_thunder_boxes_end_at_the_image() -> None:
    """thunder pads a non-square image to a square: no box reaches into the padding."""
    photo = lfw("Tony_Blair")
    wide = np.full((150, 600, 3), 90, np.uint8)
    wide[:, 200:450] = photo[:150]  # a face cut at the image's bottom edge
    found = detector("thunder").detect(wide)
    assert found
    for face in found:
        assert face.box[3] <= 150 and face.box[2] <= 600


# -- front ends ---------------------------------------------------------------------------------


def png(path: Path, width: int, height: int, value: int = 128) -> Path:
    Image.fromarray(np.full((height, width, 3), value, np.uint8)).save(path)
    return path


@pytest.mark.parametrize("name", list_detectors())
def test_detect_cli_on_a_tiny_image_exits_3(name: str, tmp_path: Path) -> None:
    tiny = png(tmp_path / "tiny.png", 1, 1)
    result = runner.invoke(app, ["detect", str(tiny), "--detector", name])
    assert result.exit_code == 3, result.output
    assert result.stderr.strip() == f"error: {tiny}: no face found"
    assert "Traceback" not in result.output


def test_detect_cli_json_still_prints_the_empty_answer(tmp_path: Path) -> None:
    tiny = png(tmp_path / "tiny.png", 5, 5)
    result = runner.invoke(app, ["detect", str(tiny), "--json", "-d", "cnn"])
    assert result.exit_code == 3, result.output
    assert json.loads(result.stdout)["faces"] == []


@pytest.fixture()
def folder(shared_data: Path, tmp_path: Path) -> Path:
    """Two LFW photos and three images too small for a face."""
    root = tmp_path / "photos"
    root.mkdir()
    for name in ("Colin_Powell", "Tony_Blair"):
        source = shared_data / "lfw" / "images" / name / f"{name}_0001.jpg"
        (root / f"{name}.jpg").write_bytes(source.read_bytes())
    png(root / "dot.png", 1, 1)
    png(root / "square.png", 5, 5)
    png(root / "strip.png", 4000, 2)
    return root


TINY = ("dot.png", "square.png", "strip.png")


def test_embed_reports_tiny_images_as_faceless(folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "emb.npz"
    args = ["embed", str(folder), "-o", str(out), "-j", "1", "--json", "-d", "cnn"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert sorted(Path(p).name for p in summary["no_face"]) == sorted(TINY)
    assert summary["faces"] == 2 and summary["errors"] == []


def test_cluster_reports_tiny_images_as_faceless(folder: Path) -> None:
    result = runner.invoke(app, ["cluster", str(folder), "--json", "-", "-j", "1", "-d", "cnn"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert sorted(Path(p).name for p in report["no_face"]) == sorted(TINY)
    assert report["faces"] == 2


def test_enroll_skip_bad_skips_tiny_images(folder: Path, tmp_path: Path) -> None:
    gallery = tmp_path / "people.db"
    photos = [str(folder / "Colin_Powell.jpg"), *(str(folder / n) for n in TINY)]
    args = ["gallery", "enroll", str(gallery), "--create", "-s", "Powell", *photos]
    refused = runner.invoke(app, [*args, "-d", "cnn"])
    assert refused.exit_code == 3, refused.output
    assert "Traceback" not in refused.output
    result = runner.invoke(app, [*args, "--skip-bad", "--json", "-d", "cnn"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert len(report["face_ids"]) == 1 and report["no_face"] == photos[1:]


def test_video_of_4x4_frames(tmp_path: Path) -> None:
    path = tmp_path / "tiny.mp4"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 5, (4, 4))
    for value in range(0, 250, 50):
        writer.write(np.full((4, 4, 3), value, np.uint8))
    writer.release()
    args = ["video", str(path), "--no-progress", "--json-summary", "-d", "cnn"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert (summary["frames"], summary["tracks"]) == (5, 0)


@pytest.fixture(scope="module", params=["yunet", "cnn"])
def service(request, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TestClient, str]]:
    home = tmp_path_factory.mktemp("serve_home")
    key = KeyStore(home / "keys.sqlite").create("writer", "write")[1]
    analyzer = FaceAnalyzer(detector=request.param)
    with TestClient(create_app(ServeConfig(home=home), analyzer)) as client:
        yield client, key


def test_rest_on_a_1x1_image(service: tuple[TestClient, str], shared_data: Path) -> None:
    client, key = service
    headers = {"Authorization": f"Bearer {key}"}
    buffer = io.BytesIO()
    Image.new("RGB", (1, 1), (120, 120, 120)).save(buffer, format="PNG")
    dot = ("dot.png", buffer.getvalue(), "image/png")
    photo = (shared_data / "lfw/images/Colin_Powell/Colin_Powell_0001.jpg").read_bytes()
    for path in ("/v1/detect", "/v1/embed"):
        answer = client.post(path, files={"image": dot}, headers=headers)
        assert answer.status_code == 200, answer.text
        assert answer.json()["faces"] == []
    verify = client.post(
        "/v1/verify", files={"image_a": dot, "image_b": ("a.jpg", photo)}, headers=headers
    )
    assert verify.status_code == 422 and verify.json()["detail"] == "image_a: no face found"
    base = "/v1/galleries/people"
    assert client.put(base, headers=headers).status_code in (200, 201)
    assert client.post(f"{base}/subjects", json={"name": "p"}, headers=headers).status_code in (
        201,
        409,
    )
    faces = f"{base}/subjects/p/faces"
    refused = client.post(faces, files=[("images", dot)], headers=headers)
    assert refused.status_code == 422 and refused.json()["detail"]["no_face"] == ["dot.png"]
    skipped = client.post(
        faces,
        params={"skip_bad": "true"},
        files=[("images", dot), ("images", ("a.jpg", photo))],
        headers=headers,
    )
    assert skipped.status_code == 201, skipped.text
    identify = client.post(f"{base}/identify", files={"image": dot}, headers=headers)
    assert identify.status_code == 200 and identify.json()["faces"] == []
