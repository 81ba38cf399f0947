"""The fused recognizer `dlib-resnet+sface`: its embedding, its alignment (each member with its
own template from one detected face), and that it works where one recognizer does (pipeline,
evaluation shortcut, gallery, export)."""

from __future__ import annotations

from functools import cache
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from facesphere.cli.main import app
from facesphere.errors import ConfigError
from facesphere.eval.verification import embed_main_faces
from facesphere.gallery import Gallery
from facesphere.pipeline.analyzer import FaceAnalyzer, check_config
from facesphere.pretrained.cards import DLIB_RESNET_SFACE
from facesphere.recognize.exported import ExportedRecognizer, read_card
from facesphere.recognize.fused import FusedRecognizer, fuse_embeddings
from facesphere.recognize.registry import create_recognizer
from tests.lfw_photos import lfw

FUSED = "dlib-resnet+sface"


@pytest.fixture(scope="module", autouse=True)
def _data(shared_data: Path) -> None:
    """Every test here reads LFW photos."""


@cache
def analyzer(recognizer: str = FUSED) -> FaceAnalyzer:
    return FaceAnalyzer(detector="yunet", recognizer=recognizer)


def photo(shared_data: Path, name: str, number: int) -> Path:
    return shared_data / "lfw" / "images" / name / f"{name}_{number:04d}.jpg"


def test_fused_cosine_is_the_weighted_mean_of_the_members() -> None:
    recognizer = create_recognizer(FUSED)
    assert isinstance(recognizer, FusedRecognizer)
    rng = np.random.default_rng(0)
    big = rng.integers(0, 255, (2, 150, 150, 3), dtype=np.uint8)
    small = rng.integers(0, 255, (2, 112, 112, 3), dtype=np.uint8)
    fused = recognizer.embed_chips(big, small)
    assert fused.shape == (2, 256)
    np.testing.assert_allclose(np.linalg.norm(fused, axis=1), 1.0, atol=1e-5)
    dlib, sface = (m.embed_chips(c) for m, c in zip(recognizer.members, (big, small)))
    weights = [m.weight for m in DLIB_RESNET_SFACE.members]
    expected = weights[0] * float(dlib[0] @ dlib[1]) + weights[1] * float(sface[0] @ sface[1])
    assert float(fused[0] @ fused[1]) == pytest.approx(expected, abs=1e-5)
    with pytest.raises(ValueError, match="takes 2 chip arrays"):
        recognizer.embed_chips(big)
    with pytest.raises(ValueError):
        recognizer.embed_chips(big, big)  # the sface member needs 112x112 chips


def test_each_member_is_aligned_with_its_own_template() -> None:
    fused = analyzer()
    image = lfw("Colin_Powell")
    faces = fused.detect(image)
    assert faces and faces[0].landmark_scheme == "standard5"  # YuNet's own points
    assert "dlib5" in faces[0].extra_landmarks  # dlib's five for the dlib150 chip
    chips = fused.align(image, faces[:1])
    assert [c.shape for c in chips] == [(1, 150, 150, 3), (1, 112, 112, 3)]
    # the same chips as the single recognizers' pipelines on the same detector
    np.testing.assert_array_equal(chips[0], analyzer("dlib-resnet").align(image, faces[:1])[0])
    np.testing.assert_array_equal(chips[1], analyzer("sface").align(image, faces[:1])[0])


def test_fused_pipeline_equals_fusing_the_member_pipelines(shared_data: Path) -> None:
    """What bench/lfw.py and bench/identify.py rely on: fusing the members' cached main faces
    gives the fused pipeline's embeddings."""
    paths = [photo(shared_data, "Colin_Powell", 1), photo(shared_data, "Tony_Blair", 1)]
    direct = [analyzer().analyze(p)[0].embedding for p in paths]
    config = analyzer().config
    shortcut, bad = embed_main_faces(paths, config, 1, "centre", None, False, "central")
    assert not bad
    for path, vector in zip(paths, direct):
        assert float(shortcut[path].embedding @ vector) > 0.99999
    members = [
        analyzer(m.card.name).analyze(paths[0])[0].embedding for m in DLIB_RESNET_SFACE.members
    ]
    np.testing.assert_allclose(
        fuse_embeddings(DLIB_RESNET_SFACE, [v[None] for v in members])[0], direct[0], atol=1e-5
    )


def test_verification_uses_the_fused_calibration(shared_data: Path) -> None:
    fused = analyzer()
    same = fused.verify(
        photo(shared_data, "Colin_Powell", 1), photo(shared_data, "Colin_Powell", 2)
    )
    other = fused.verify(photo(shared_data, "Colin_Powell", 1), photo(shared_data, "Tony_Blair", 1))
    assert same.same and not other.same
    report = same.to_dict()
    expected = DLIB_RESNET_SFACE.verification_threshold()
    assert (report["threshold"], report["far"], report["model"]) == (
        expected.value,
        1e-3,
        FUSED,
    )


def test_landmark_options_that_cannot_align_every_member_are_refused() -> None:
    with pytest.raises(ConfigError, match="dlib150 template needs dlib5"):
        check_config("yunet", FUSED, landmarker="detector")
    check_config("yunet", FUSED, landmarker="dlib-shape5")  # dlib5 serves both templates
    check_config("cnn", FUSED)


def test_gallery_stores_the_fused_card(tmp_path: Path) -> None:
    fused = analyzer()
    with Gallery.create(tmp_path / "g.sqlite", card=fused.card) as gallery:
        vector = fused.analyze(lfw("Colin_Powell"))[0].embedding
        gallery.enroll("powell", vector[None], model=FUSED, model_version=fused.card.version)
        assert gallery.dim == 256 and gallery.card == DLIB_RESNET_SFACE
        hit = gallery.identify(fused.analyze(lfw("Colin_Powell"))[0].embedding[None])[0]
        assert hit.identity == "powell"
        assert hit.threshold == DLIB_RESNET_SFACE.identification_threshold(1).value


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_fused_export_gives_the_same_embeddings(fmt: str, tmp_path: Path) -> None:
    out = tmp_path / ("fused.onnx" if fmt == "onnx" else "fused.pt")
    result = CliRunner().invoke(app, ["export", "--model", FUSED, "-f", fmt, str(out)])
    assert result.exit_code == 0, result.output
    assert read_card(out) == DLIB_RESNET_SFACE
    exported = ExportedRecognizer(out)
    image = lfw("Tony_Blair")
    faces = analyzer().detect(image)[:1]
    chips = analyzer().align(image, faces)
    native = create_recognizer(FUSED).embed_chips(*chips)
    assert float(exported.embed_chips(*chips)[0] @ native[0]) >= 0.9999
    from_file = FaceAnalyzer(detector="yunet", recognizer=str(out))
    assert from_file.card == DLIB_RESNET_SFACE
    assert (
        float(from_file.analyze(image)[0].embedding @ analyzer().analyze(image)[0].embedding)
        >= 0.9999
    )
