"""The one exporter: checkpoints and bundled models to ONNX/TorchScript with their model card,
and exported files as FaceAnalyzer recognizers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from facesphere.cards import TRAINING_NORMALIZATION, ModelCard, Normalization
from facesphere.cli.main import app
from facesphere.errors import ConfigError, ImageError, ModelError, ModelFileError
from facesphere.export import export_model
from facesphere.models.backbones import create_backbone
from facesphere.models.checkpoint import save_backbone, trained_card
from facesphere.pretrained.cards import DLIB_RESNET
from facesphere.recognize.exported import ExportedRecognizer, read_card
from facesphere.recognize.registry import create_recognizer

DIM = 24
FORMATS = {"onnx": ".onnx", "torchscript": ".pt"}


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, torch.nn.Module]:
    """A tiny backbone file as the trainer writes it (``model.pt``), and the module."""
    torch.manual_seed(0)
    model = create_backbone("shufflenetv2_x0_5", embedding_dim=DIM)
    model.train()
    with torch.no_grad():  # batch-norm statistics that make eval mode matter
        model(torch.randn(8, 3, 112, 112))
    model.eval()
    path = tmp_path_factory.mktemp("ckpt") / "model.pt"
    card = trained_card("shufflenetv2_x0_5", DIM, "standard112", 1, "x")
    save_backbone(path, model, card, "shufflenetv2_x0_5", {}, step=1)
    return path, model


@pytest.fixture(scope="module")
def checkpoint(trained: tuple[Path, torch.nn.Module]) -> Path:
    return trained[0]


@pytest.fixture(scope="module")
def exported(checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The checkpoint exported to ONNX through the CLI."""
    out = tmp_path_factory.mktemp("onnx") / "tiny.onnx"
    result = CliRunner().invoke(
        app, ["export", str(checkpoint), "--format", "onnx", "--name", "tiny", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == str(out)
    return out


def _chips(n: int) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, size=(n, 112, 112, 3), dtype=np.uint8)


def _reference(model: torch.nn.Module, chips: np.ndarray) -> np.ndarray:
    x = torch.from_numpy(TRAINING_NORMALIZATION.apply(chips)).permute(0, 3, 1, 2)
    with torch.no_grad():
        return torch.nn.functional.normalize(model(x), dim=1).numpy()


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_checkpoint_card_round_trips_and_embeddings_match(trained, tmp_path: Path, fmt) -> None:
    path, model = trained
    out = export_model(path, tmp_path / f"net{FORMATS[fmt]}", fmt, name="tiny")
    card = read_card(out)
    assert card == trained_card("shufflenetv2_x0_5", DIM, "standard112", 1, "x").derive(name="tiny")
    assert card.input_size == (112, 112) and card.normalization == TRAINING_NORMALIZATION
    recognizer = create_recognizer(str(out))
    assert isinstance(recognizer, ExportedRecognizer) and recognizer.card == card
    for n in (1, 3):  # dynamic batch
        chips = _chips(n)
        got = recognizer.embed_chips(chips)
        assert got.shape == (n, DIM) and got.dtype == np.float32
        np.testing.assert_allclose(got, _reference(model, chips), atol=1e-4)
    with pytest.raises(ValueError, match="shape"):
        recognizer.embed_chips(np.zeros((1, 150, 150, 3), np.uint8))


def test_card_json_round_trip_and_bad_cards() -> None:
    assert ModelCard.from_json(DLIB_RESNET.to_json()) == DLIB_RESNET
    with pytest.raises(ModelError, match="not a facesphere model card"):
        ModelCard.from_json('{"name": "x"}')
    with pytest.raises(ModelError, match="not JSON"):
        ModelCard.from_json("{")
    with pytest.raises(ModelError, match="needs embedding_dim"):
        ModelCard(name="x", version="1", task="recognition", weights_source="", licence="")


def test_normalization_works_row_by_row_and_checks_the_channels() -> None:
    norm = Normalization((120.0, 110.5, 100.25), (60.0, 64.5, 70.0))
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (2, 5, 7, 3), dtype=np.uint8)
    expected = (pixels.astype(np.float32) - np.float32(norm.mean)) / np.float32(norm.std)
    cases = [
        (pixels, expected),
        (pixels.transpose(0, 2, 1, 3), expected.transpose(0, 2, 1, 3)),  # not C-contiguous
        (pixels[0, 2], expected[0, 2]),  # one row of pixels
    ]
    for view, want in cases:
        out = norm.apply(view)
        assert out.dtype == np.float32
        np.testing.assert_array_equal(out, want)
    with pytest.raises(ImageError, match=r"\(\.\.\., 3\)"):
        norm.apply(np.zeros((4, 4, 1), np.uint8))


def test_create_recognizer_names_and_paths(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown recognizer 'no-such-net'; known: dlib-resnet"):
        create_recognizer("no-such-net")
    with pytest.raises(ConfigError, match="has no option 'colour'"):
        create_recognizer("dlib-resnet", colour="red")
    with pytest.raises(ModelFileError, match="no exported model"):
        create_recognizer("missing/model.onnx")
    plain = tmp_path / "plain.pt"
    torch.jit.save(torch.jit.script(torch.nn.Identity()), str(plain))
    with pytest.raises(ModelError, match="carries no facesphere model card"):
        create_recognizer(str(plain))
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not onnx")
    with pytest.raises(ModelError, match="not an ONNX model"):
        create_recognizer(str(junk))


def test_exported_detector_is_not_a_recognizer(tmp_path: Path) -> None:
    out = export_model("dlib-mmod", tmp_path / "mmod.onnx")
    assert read_card(out).name == "dlib-mmod"
    with pytest.raises(ModelError, match="detection model, not a recognizer"):
        create_recognizer(str(out))


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_bundled_resnet_export_gives_the_same_embeddings(
    fmt: str, tmp_path: Path, shared_data: Path
) -> None:
    from facesphere.pipeline.analyzer import FaceAnalyzer

    out = tmp_path / f"dlib{FORMATS[fmt]}"
    result = CliRunner().invoke(app, ["export", "--model", "dlib-resnet", "-f", fmt, str(out)])
    assert result.exit_code == 0, result.output
    assert read_card(out) == DLIB_RESNET
    photo = shared_data / "lfw" / "images" / "Aaron_Peirsol" / "Aaron_Peirsol_0001.jpg"
    native = FaceAnalyzer(recognizer="dlib-resnet")
    from_file = FaceAnalyzer(recognizer=str(out))
    assert from_file.card == DLIB_RESNET and from_file.threshold == native.threshold
    assert native.threshold == DLIB_RESNET.verification_threshold().value
    a, b = native.embed(photo), from_file.embed(photo)
    assert a.shape == b.shape == (1, 128)
    assert float((a * b).sum()) >= 0.9999


def test_analyzer_with_exported_recognizer_embeds_lfw_photo(
    exported: Path, shared_data: Path
) -> None:
    from facesphere.pipeline.analyzer import FaceAnalyzer

    analyzer = FaceAnalyzer(detector="hog", recognizer=str(exported))
    assert analyzer.templates[0].size == (112, 112) and analyzer.threshold is None
    with pytest.raises(ConfigError, match="no calibrated verify threshold"):
        analyzer.verify(photo_path(shared_data), photo_path(shared_data))
    faces = analyzer.analyze(photo_path(shared_data), fallback="centre")
    assert len(faces) >= 1
    vector = faces[0].embedding
    assert vector is not None and vector.shape == (DIM,)
    assert abs(float(np.linalg.norm(vector)) - 1.0) < 1e-5


def test_thunder_landmarks_align_exported_recognizer(exported: Path, shared_data: Path) -> None:
    """The bundled ThunderNet's own five points feed the standard 112x112 alignment."""
    from facesphere.align.templates import dlib5_to_standard5
    from facesphere.pipeline.analyzer import FaceAnalyzer

    analyzer = FaceAnalyzer(detector="thunder", recognizer=str(exported))
    image = analyzer.load(
        shared_data / "lfw" / "images" / "Aaron_Peirsol" / "Aaron_Peirsol_0001.jpg"
    )
    faces = analyzer.detect(image)
    assert faces and faces[0].landmark_scheme == "standard5"
    own = {tuple(d.box.round(2)): d.landmarks for d in analyzer.detector.detect(image)}
    np.testing.assert_array_equal(faces[0].landmarks, own[tuple(faces[0].box.round(2))])
    # the detector's eye centres agree with the shape predictor's on this photo
    reference = dlib5_to_standard5(analyzer.landmarker.predict(image, faces[0].box[None])[0])
    iod = float(np.linalg.norm(reference[0] - reference[1]))
    eye_error = np.linalg.norm(faces[0].landmarks[:2] - reference[:2], axis=1)
    assert eye_error.max() < 0.2 * iod, eye_error / iod
    assert [chips.shape for chips in analyzer.align(image, faces[:1])] == [(1, 112, 112, 3)]
    vector = analyzer.embed(image, faces[:1])
    assert vector.shape == (1, DIM)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: p / "missing.pt", "no facesphere checkpoint"),
        (lambda p: p, "no facesphere checkpoint"),
        (lambda p: _write(p / "junk.pt", b"not a checkpoint"), "not a readable checkpoint"),
        (lambda p: _save(p / "other.pt", {"format": "something-else"}), "not a facesphere"),
    ],
)
def test_cli_bad_checkpoint_exits_2(tmp_path: Path, make, message: str) -> None:
    bad = make(tmp_path)
    result = CliRunner().invoke(app, ["export", str(bad), str(tmp_path / "out.onnx")])
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0]
    assert not (tmp_path / "out.onnx").exists()


def test_cli_model_option_still_validated(tmp_path: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(app, ["export", "--model", "nope", str(tmp_path / "x.onnx")])
    assert result.exit_code == 2 and "unknown model" in result.stderr
    result = runner.invoke(app, ["export", str(tmp_path / "x.onnx")])
    assert result.exit_code == 2 and "--model" in result.stderr
    result = runner.invoke(app, ["export", "--model", "dlib-resnet", "--name", "x", "o.onnx"])
    assert result.exit_code == 2 and "keeps its own name" in result.stderr
    result = runner.invoke(
        app, ["export", "--model", "dlib-resnet", "-f", "tflite", str(tmp_path / "x.onnx")]
    )
    assert result.exit_code == 2 and "unknown format" in result.stderr


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _save(path: Path, blob: dict) -> Path:
    torch.save(blob, path)
    return path


def photo_path(root: Path) -> Path:
    return root / "lfw" / "images" / "Aaron_Peirsol" / "Aaron_Peirsol_0001.jpg"
