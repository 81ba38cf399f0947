"""`facesphere export CHECKPOINT` and exported models as FaceAnalyzer recognizers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from facesphere.models.backbones import create_backbone
from facesphere.models.recognizers import create_recognizer
from facesphere.train.config import config_from_dict
from facesphere.train.export import ExportedRecognizer, read_metadata
from facesphere.train.trainer import save_backbone

DIM = 24


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny trained-backbone file as written by the trainer (``model.pt``)."""
    torch.manual_seed(0)
    model = create_backbone("shufflenetv2_x0_5", embedding_dim=DIM).eval()
    config = config_from_dict(
        {
            "backbone": "shufflenetv2_x0_5",
            "embedding_dim": DIM,
            "steps": 1,
            "data": {"kind": "shards", "source": "x"},
        }
    )
    path = tmp_path_factory.mktemp("ckpt") / "model.pt"
    save_backbone(path, model, config, step=1)
    return path


@pytest.fixture(scope="module")
def exported(checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The checkpoint exported to ONNX through the CLI."""
    from facesphere.cli.main import app

    out = tmp_path_factory.mktemp("onnx") / "tiny.onnx"
    result = CliRunner().invoke(app, ["export", str(checkpoint), "--format", "onnx", str(out)])
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == str(out)
    return out


def test_cli_exports_checkpoint_to_onnx(exported: Path) -> None:
    meta = read_metadata(exported)
    assert meta["facesphere.embedding_dim"] == str(DIM)
    assert meta["facesphere.name"] == "tiny"
    assert meta["facesphere.template"] == "standard112"


def test_create_recognizer_takes_exported_path(exported: Path) -> None:
    recognizer = create_recognizer(str(exported))
    assert isinstance(recognizer, ExportedRecognizer)
    assert recognizer.embedding_dim == DIM
    chips = np.random.default_rng(0).integers(0, 256, (2, 112, 112, 3), dtype=np.uint8)
    np.testing.assert_allclose(np.linalg.norm(recognizer.embed_chips(chips), axis=1), 1, atol=1e-5)


def test_create_recognizer_keeps_names() -> None:
    with pytest.raises(KeyError, match="unknown recognizer"):
        create_recognizer("no-such-net")
    with pytest.raises(FileNotFoundError):
        create_recognizer("missing/model.onnx")


def test_analyzer_with_exported_recognizer_embeds_lfw_photo(
    exported: Path, shared_data: Path
) -> None:
    from facesphere.analyzer import FaceAnalyzer

    analyzer = FaceAnalyzer(detector="hog", recognizer=str(exported))
    assert analyzer.recognizer.template.size == (112, 112)
    photo = shared_data / "lfw" / "images" / "Aaron_Peirsol" / "Aaron_Peirsol_0001.jpg"
    faces = analyzer.analyze(photo, fallback="centre")
    assert len(faces) >= 1
    vector = faces[0].embedding
    assert vector is not None and vector.shape == (DIM,)
    assert abs(float(np.linalg.norm(vector)) - 1.0) < 1e-5


def test_thunder_landmarks_align_exported_recognizer(exported: Path, shared_data: Path) -> None:
    """The bundled ThunderNet's own five points feed the standard 112x112 alignment."""
    from facesphere.align.templates import dlib5_to_standard5
    from facesphere.analyzer import FaceAnalyzer

    analyzer = FaceAnalyzer(detector="thunder", recognizer=str(exported))
    image = analyzer.load(
        shared_data / "lfw" / "images" / "Aaron_Peirsol" / "Aaron_Peirsol_0001.jpg"
    )
    faces = analyzer.detect(image)
    assert faces and faces[0].landmark_scheme == "standard5"
    own = {tuple(d.box.round(2)): pts for d, pts in analyzer.detector.detect_with_landmarks(image)}
    np.testing.assert_array_equal(faces[0].landmarks, own[tuple(faces[0].box.round(2))])
    # the detector's eye centres agree with the shape predictor's on this photo
    reference = dlib5_to_standard5(analyzer.landmarker.predict(image, faces[0].box[None])[0])
    iod = float(np.linalg.norm(reference[0] - reference[1]))
    eye_error = np.linalg.norm(faces[0].landmarks[:2] - reference[:2], axis=1)
    assert eye_error.max() < 0.2 * iod, eye_error / iod
    assert analyzer.align(image, faces[:1]).shape == (1, 112, 112, 3)
    vector = analyzer.embed(image, faces[:1])
    assert vector.shape == (1, DIM)


@pytest.mark.slow  # tracing + TorchScript load: ~15 s on a loaded 2-core machine
def test_cli_exports_checkpoint_to_torchscript(checkpoint: Path, tmp_path: Path) -> None:
    from facesphere.cli.main import app

    out = tmp_path / "tiny.pt"
    result = CliRunner().invoke(
        app, ["export", str(checkpoint), "--format", "torchscript", str(out)]
    )
    assert result.exit_code == 0, result.output
    recognizer = create_recognizer(str(out))
    assert isinstance(recognizer, ExportedRecognizer)
    assert recognizer.embedding_dim == DIM


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: p / "missing.pt", "not found"),
        (lambda p: p, "without rank-0.pt"),
        (lambda p: _write(p / "junk.pt", b"not a checkpoint"), "cannot export"),
        (lambda p: _save(p / "other.pt", {"format": "something-else"}), "not a facesphere"),
    ],
)
def test_cli_bad_checkpoint_exits_2(tmp_path: Path, make, message: str) -> None:
    from facesphere.cli.main import app

    bad = make(tmp_path)
    result = CliRunner().invoke(app, ["export", str(bad), str(tmp_path / "out.onnx")])
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0]
    assert not (tmp_path / "out.onnx").exists()


def test_cli_model_option_still_validated(tmp_path: Path) -> None:
    from facesphere.cli.main import app

    runner = CliRunner()
    result = runner.invoke(app, ["export", "--model", "nope", str(tmp_path / "x.onnx")])
    assert result.exit_code == 2 and "unknown model" in result.stderr
    result = runner.invoke(app, ["export", str(tmp_path / "x.onnx")])
    assert result.exit_code == 2 and "--model" in result.stderr
    result = runner.invoke(
        app, ["export", "--model", "dlib-resnet", "-f", "tflite", str(tmp_path / "x.onnx")]
    )
    assert result.exit_code == 2 and "unknown format" in result.stderr


@pytest.mark.slow
def test_cli_model_option_exports_dlib_resnet(tmp_path: Path) -> None:
    from facesphere.cli.main import app

    out = tmp_path / "dlib.onnx"
    result = CliRunner().invoke(app, ["export", "--model", "dlib-resnet", str(out)])
    assert result.exit_code == 0, result.output
    assert out.stat().st_size > 1_000_000


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _save(path: Path, blob: dict) -> Path:
    torch.save(blob, path)
    return path
