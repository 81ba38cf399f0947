"""Exporting a trained backbone (ONNX / TorchScript) and embedding with ExportedRecognizer."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from facesphere.align.templates import STANDARD_112
from facesphere.models.backbones import create_backbone
from facesphere.train.config import config_from_dict
from facesphere.train.export import ExportedRecognizer, export_checkpoint, read_metadata
from facesphere.train.trainer import save_backbone


@pytest.fixture(scope="module")
def backbone_file(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, torch.nn.Module]:
    torch.manual_seed(0)
    model = create_backbone("shufflenetv2_x0_5", embedding_dim=32)
    # Non-trivial batch-norm statistics so that eval mode matters.
    model.train()
    with torch.no_grad():
        model(torch.randn(8, 3, 112, 112))
    model.eval()
    config = config_from_dict(
        {
            "backbone": "shufflenetv2_x0_5",
            "embedding_dim": 32,
            "steps": 1,
            "data": {"kind": "shards", "source": "x"},
        }
    )
    path = tmp_path_factory.mktemp("export") / "model.pt"
    save_backbone(path, model, config, step=1)
    return path, model


def _chips(n: int) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, size=(n, 112, 112, 3), dtype=np.uint8)


def _reference(model: torch.nn.Module, chips: np.ndarray) -> np.ndarray:
    x = (torch.from_numpy(chips).permute(0, 3, 1, 2).float() - 127.5) / 127.5
    with torch.no_grad():
        return torch.nn.functional.normalize(model(x), dim=1).numpy()


@pytest.mark.parametrize("fmt", ["onnx", pytest.param("torchscript", marks=pytest.mark.slow)])
def test_export_round_trip(backbone_file, tmp_path: Path, fmt: str) -> None:
    path, model = backbone_file
    out = tmp_path / ("net.onnx" if fmt == "onnx" else "net.pt")
    export_checkpoint(path, out, fmt, name="tiny")
    meta = read_metadata(out)
    assert meta["facesphere.template"] == "standard112"
    assert meta["facesphere.input_size"] == "112,112"
    assert float(meta["facesphere.mean"]) == 127.5 and float(meta["facesphere.std"]) == 127.5
    recognizer = ExportedRecognizer(out)
    assert recognizer.name == "tiny"
    assert recognizer.template is STANDARD_112
    assert recognizer.embedding_dim == 32
    for n in (1, 3):  # dynamic batch
        chips = _chips(n)
        got = recognizer.embed_chips(chips)
        assert got.shape == (n, 32) and got.dtype == np.float32
        np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
        np.testing.assert_allclose(got, _reference(model, chips), atol=1e-4)
    with pytest.raises(ValueError, match="shape"):
        recognizer.embed_chips(np.zeros((1, 150, 150, 3), np.uint8))
    if fmt == "onnx":  # the raw graph too: onnxruntime output == torch output
        import onnxruntime

        session = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])
        x = np.random.default_rng(1).standard_normal((5, 3, 112, 112)).astype(np.float32)
        got = session.run(None, {session.get_inputs()[0].name: x})[0]
        with torch.no_grad():
            want = torch.nn.functional.normalize(model(torch.from_numpy(x)), dim=1).numpy()
        np.testing.assert_allclose(got, want, atol=1e-4)


@pytest.mark.slow
def test_exported_recognizer_in_analyzer(backbone_file, tmp_path: Path, shared_data: Path) -> None:
    from facesphere.analyzer import FaceAnalyzer

    path, _ = backbone_file
    out = export_checkpoint(path, tmp_path / "net.onnx", "onnx")
    analyzer = FaceAnalyzer()
    analyzer.recognizer = ExportedRecognizer(out)
    photo = sorted(next(iter(sorted((shared_data / "celeba299").iterdir()))).iterdir())[0]
    vectors = analyzer.embed(photo)
    assert vectors.shape[1] == 32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def test_not_exported_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        ExportedRecognizer(tmp_path / "missing.onnx")
