"""Fine-tuning dlib's pretrained ResNet: the backbone, dlib150 shards, train, export, analyze."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from facesphere.errors import ConfigError
from facesphere.models.backbones import create_backbone
from facesphere.train.data import ShardSource, crop_size
from facesphere.train.recordio import encode_jpeg
from facesphere.train.shards import write_shards


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def test_backbone_takes_trainer_normalised_input_and_matches_dlib() -> None:
    from facesphere.pretrained.dlib_resnet import load_dlib_resnet

    backbone = create_backbone("dlib-resnet", embedding_dim=128).eval()
    assert backbone.template == "dlib150" and backbone.input_size == (150, 150)
    pixels = torch.rand(2, 3, 150, 150, generator=torch.Generator().manual_seed(0)) * 255
    with torch.no_grad():
        ours = backbone((pixels - 127.5) / 127.5)
        reference = load_dlib_resnet(normalize=False)(pixels)
        fresh = create_backbone("dlib-resnet", embedding_dim=128, pretrained=False).eval()(
            (pixels - 127.5) / 127.5
        )
    torch.testing.assert_close(ours, reference, rtol=1e-4, atol=1e-4)
    assert not torch.allclose(fresh, reference, atol=1e-2)
    with pytest.raises(ConfigError, match="128"):
        create_backbone("dlib-resnet", embedding_dim=512)


def test_shards_of_another_template_are_refused(tmp_path: Path) -> None:
    chip = np.zeros((150, 150, 3), np.uint8)
    write_shards(tmp_path / "dlib", [encode_jpeg(chip)], [0], ["a"], template="dlib150")
    assert ShardSource(tmp_path / "dlib", "dlib150").read(0).shape == (150, 150, 3)
    assert crop_size("dlib150") == (150, 150)
    with pytest.raises(ValueError, match="--template standard112"):
        ShardSource(tmp_path / "dlib", "standard112")


@pytest.mark.slow
def test_fine_tune_dlib_resnet_and_use_the_export(shared_data: Path, tmp_path: Path) -> None:
    from facesphere.export import export_model
    from facesphere.pipeline.analyzer import FaceAnalyzer
    from facesphere.pretrained.dlib_resnet import load_dlib_resnet
    from facesphere.recognize.exported import read_card
    from facesphere.train.config import config_from_dict
    from facesphere.train.prepare import prepare
    from facesphere.train.trainer import train

    src = tmp_path / "src"
    for person in sorted((shared_data / "celeba299").iterdir())[:3]:
        (src / person.name).mkdir(parents=True)
        for photo in sorted(person.iterdir())[:3]:
            (src / person.name / photo.name).symlink_to(photo)
    shards = tmp_path / "shards"
    manifest = prepare(src, shards, progress=False, template="dlib150")
    assert manifest["template"] == "dlib150" and manifest["counts"]["images"] >= 6
    # The prepared crop is the chip the analyzer itself aligns for dlib's recogniser.
    analyzer = FaceAnalyzer()  # the default detector, as prepare uses
    first = sorted((src / sorted(p.name for p in src.iterdir())[0]).iterdir())[0]
    image = analyzer.load(str(first))
    chip = analyzer.align(image, analyzer.detect(image)[:1])[0][0]  # first template, one face
    crop = ShardSource(shards, "dlib150").read(0)
    assert crop.shape == (150, 150, 3)
    assert np.abs(crop.astype(float) - chip).mean() < 4.0  # JPEG only

    config = config_from_dict(
        {
            "backbone": "dlib-resnet",
            "embedding_dim": 128,
            "batch_size": 4,
            "steps": 2,
            "lr": 0.01,
            "head": "arcface",
            "head_kwargs": {"s": 32.0, "m": 0.3},
            "output": str(tmp_path / "run"),
            "progress": False,
            "data": {"kind": "shards", "source": str(shards)},
        }
    )
    train(config)
    blob = torch.load(tmp_path / "run" / "model.pt", weights_only=False)
    assert blob["card"]["template"] == "dlib150" and blob["card"]["input_size"] == (150, 150)
    pretrained = load_dlib_resnet(normalize=False).state_dict()
    tuned = {k.removeprefix("net."): v for k, v in blob["state_dict"].items()}
    assert any(not torch.equal(tuned[k], pretrained[k]) for k in pretrained)

    out = export_model(tmp_path / "run" / "model.pt", tmp_path / "tuned.onnx")
    assert read_card(out).template == "dlib150"
    tuned_analyzer = FaceAnalyzer(recognizer=str(out))
    assert tuned_analyzer.templates[0].name == "dlib150"
    faces = tuned_analyzer.analyze(str(first))
    assert faces and faces[0].embedding.shape == (128,)
    # The exported model embeds the same chip as the fine-tuned torch backbone.
    backbone = create_backbone("dlib-resnet", embedding_dim=128)
    backbone.load_state_dict(blob["state_dict"])
    x = (torch.from_numpy(chip[None]).permute(0, 3, 1, 2).float() - 127.5) / 127.5
    with torch.no_grad():
        expected = torch.nn.functional.normalize(backbone.eval()(x), dim=1)[0].numpy()
    got = tuned_analyzer.recognizer.embed_chips(chip[None])[0]
    np.testing.assert_allclose(got, expected, atol=1e-4)
