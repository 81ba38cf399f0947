"""Hostile inputs (issue 13): images too small to hold a face, images far larger than a detector
needs, the front ends (CLI, REST) around them, files that are no images (FIFOs, devices,
decompression bombs), truncated videos and text files that are not UTF-8."""

from __future__ import annotations

import io
import json
import os
import socket
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
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
from facesphere.defaults import DEFAULT_DETECTOR
from facesphere.detect import create_detector, list_detectors
from facesphere.detect.base import Detection
from facesphere.detect.geometry import DEFAULT_MAX_SIDE, MIN_FACE_SIDE, shrink_to_max_side
from facesphere.errors import ImageError
from facesphere.io.image import load_image
from facesphere.pipeline.analyzer import FaceAnalyzer
from facesphere.serve.app import create_app
from facesphere.serve.config import ServeConfig
from facesphere.serve.keys import KeyStore
from tests.raw_http import png_header

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
    (1, 100_000),
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
    """thunder pads its input to a multiple of 32: no box reaches into the padding."""
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


# -- files that are not images -------------------------------------------------------------------


def in_thread(function, timeout: float = 20.0):
    """`function()`'s result, failing (not hanging) when it blocks, as on opening a FIFO."""
    outcome: dict[str, object] = {}

    def run() -> None:
        try:
            outcome["value"] = function()
        except BaseException as exc:  # handed to the test below
            outcome["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(timeout)
    assert not thread.is_alive(), "blocked"
    if "error" in outcome:
        raise outcome["error"]  # type: ignore[misc]
    return outcome["value"]


@pytest.fixture()
def special_files(tmp_path: Path) -> Iterator[dict[str, Path]]:
    """A FIFO, a character device, a socket and a folder, each named like an image."""
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    folder = tmp_path / "folder.png"
    folder.mkdir()
    sock_path = tmp_path / "sock.png"
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(sock_path))
    yield {
        "a FIFO": fifo,
        "a character device": Path("/dev/zero"),
        "a socket": sock_path,
        "a directory": folder,
    }
    server.close()


def test_special_files_are_named_not_read(special_files: dict[str, Path]) -> None:
    for kind, path in special_files.items():
        with pytest.raises(ImageError) as error:
            in_thread(lambda path=path: load_image(path))
        assert str(error.value) == f"{path}: not a regular file ({kind})"


def test_cli_names_a_fifo_given_as_image_or_video(special_files: dict[str, Path]) -> None:
    fifo = special_files["a FIFO"]
    for verb in (["detect"], ["video", "--no-progress"]):
        result = in_thread(lambda verb=verb: runner.invoke(app, [*verb, str(fifo)]))
        assert result.exit_code == 2, result.output
        assert result.stderr.strip().splitlines() == [f"error: {fifo}: not a regular file (a FIFO)"]


def test_images_over_pillows_bomb_limit_get_the_pixel_limit_wording(tmp_path: Path) -> None:
    pillow_limit = Image.MAX_IMAGE_PIXELS
    bomb = png_header(20_000, 20_000)  # 400 MP: over twice Pillow's limit, its error
    with pytest.raises(ImageError) as error:
        load_image(bomb)
    assert error.value.reason == "image is 20000x20000 = 400.0 MP, over the limit of 50.0 MP"
    path = tmp_path / "bomb.png"
    path.write_bytes(bomb)
    result = runner.invoke(app, ["detect", str(path)])
    assert result.exit_code == 2 and "over the limit of 50.0 MP" in result.stderr
    # a limit above Pillow's is ours to set: the header passes, the missing pixels do not
    with pytest.raises(ImageError, match="corrupt or truncated"):
        load_image(bomb, max_pixels=500_000_000)
    assert pillow_limit == Image.MAX_IMAGE_PIXELS


def test_concurrent_decodes_restore_pillows_limit() -> None:
    pillow_limit = Image.MAX_IMAGE_PIXELS
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64)).save(buffer, format="PNG")
    data = buffer.getvalue()
    with ThreadPoolExecutor(8) as pool:
        shapes = list(pool.map(lambda _: load_image(data).shape, range(400)))
    assert shapes == [(64, 64, 3)] * 400
    assert pillow_limit == Image.MAX_IMAGE_PIXELS


# -- truncated videos ----------------------------------------------------------------------------


def mjpg_avi(path: Path, frames: int = 20) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (64, 48))
    assert writer.isOpened()
    rng = np.random.default_rng(3)
    for _ in range(frames):
        writer.write(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8))
    writer.release()
    return path


def test_truncated_video_is_processed_in_part_with_a_warning(tmp_path: Path) -> None:
    whole = mjpg_avi(tmp_path / "whole.avi")
    cut = tmp_path / "cut.avi"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    args = ["--no-progress", "--json-summary", "-d", "cnn"]
    complete = runner.invoke(app, ["video", str(whole), *args])
    assert complete.exit_code == 0, complete.output
    summary = json.loads(complete.stdout)
    assert (summary["frames"], summary["frames_expected"], summary["truncated"]) == (20, 20, False)
    assert "warning" not in complete.stderr
    result = runner.invoke(app, ["video", str(cut), *args])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["truncated"] is True and summary["frames_expected"] == 20
    assert 0 < summary["frames"] < 20 and summary["detection_frames"] == summary["frames"]
    (warning,) = result.stderr.strip().splitlines()
    assert warning.startswith(f"warning: {cut}: only {summary['frames']} of the 20 frames")
    text = runner.invoke(app, ["video", str(cut), "--no-progress", "-d", "cnn"])
    assert f"{cut}: {summary['frames']} of 20 frame(s)" in text.stdout


# -- text files that are not UTF-8 ---------------------------------------------------------------


@pytest.mark.parametrize("protocol", ["lfw", "list"])
def test_non_utf8_pairs_file_exits_2(protocol: str, tmp_path: Path) -> None:
    pairs = tmp_path / "pairs.txt"
    pairs.write_bytes(b"1 1\nAaron \xff\xfe 1 2\n")
    args = ["evaluate", "pairs", "--images", str(tmp_path), "--pairs", str(pairs)]
    result = runner.invoke(app, [*args, "--protocol", protocol])
    assert result.exit_code == 2, result.output
    assert result.stderr.strip() == f"error: pairs file {pairs} is not UTF-8 text (byte 10)"


def test_non_utf8_training_config_exits_2(tmp_path: Path) -> None:
    config = tmp_path / "train.yaml"
    config.write_bytes(b"model: \xff\n")
    result = runner.invoke(app, ["train", "--config", str(config)])
    assert result.exit_code == 2, result.output
    assert result.stderr.strip() == f"error: config {config} is not UTF-8 text (byte 7)"


def test_max_side_option_reaches_the_detector(tmp_path: Path) -> None:
    photo = lfw("Colin_Powell")
    large = tmp_path / "large.png"
    Image.fromarray(cv2.resize(photo, (750, 750), interpolation=cv2.INTER_LINEAR)).save(large)
    result = runner.invoke(app, ["detect", str(large), "--max-side", "250", "--json"])
    assert result.exit_code == 0, result.output
    (face,) = json.loads(result.stdout)["faces"]
    (small,) = detector(DEFAULT_DETECTOR).detect(photo)  # what `detect` runs by default
    np.testing.assert_allclose(face["box"], small.box * 3, atol=6)
    assert FaceAnalyzer(max_side=0).detector.max_side == 0
    # thunder too works at most max_side px on the longer side, boxes in the original's pixels
    capped = runner.invoke(
        app, ["detect", str(large), "-d", "thunder", "--max-side", "250", "--json"]
    )
    assert capped.exit_code == 0, capped.output
    (face,) = json.loads(capped.stdout)["faces"][:1]
    assert max(face["box"]) > 250 and face["box"][2] <= 750
