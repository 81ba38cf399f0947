"""One interface per stage: registries with explicit options, and the shared pipeline options
of every CLI verb (a trained model given by path, unknown names, a missing GPU, --version)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from facesphere import __version__
from facesphere.cli.main import app
from facesphere.detect import DETECTORS, create_detector, list_detectors
from facesphere.errors import ConfigError, FacesphereError
from facesphere.export import export_model
from facesphere.landmarks import LANDMARKERS, create_landmarker, list_landmarkers
from facesphere.models.backbones import create_backbone
from facesphere.models.checkpoint import save_backbone, trained_card
from facesphere.pretrained.cards import DLIB_MMOD, DLIB_RESNET, DLIB_SHAPE5
from facesphere.recognize import RECOGNIZERS, create_recognizer, list_recognizers
from facesphere.registry import Registry

runner = CliRunner()
DIM = 16


def lfw(root: Path, name: str, number: int = 1) -> Path:
    return root / "lfw" / "images" / name / f"{name}_{number:04d}.jpg"


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small trained-backbone file exported to ONNX: a recognizer given by path."""
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("tiny")
    backbone = create_backbone("shufflenetv2_x0_5", embedding_dim=DIM).eval()
    card = trained_card("shufflenetv2_x0_5", DIM, "standard112", 3, "synthetic")
    save_backbone(folder / "model.pt", backbone, card, "shufflenetv2_x0_5", {}, step=3)
    return export_model(folder / "model.pt", folder / "tiny.onnx", name="tiny")


def one_line_error(result, code: int) -> str:
    assert result.exit_code == code, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.output
    return lines[0]


# -- registries ------------------------------------------------------------------------------


def test_every_stage_lists_its_models_with_cards() -> None:
    assert list_detectors() == ["cnn", "hog", "retinaface", "thunder", "yunet"]
    assert list_landmarkers() == ["dlib-shape5"]
    assert list_recognizers() == ["dlib-resnet", "dlib-resnet+sface", "sface"]
    assert DETECTORS.card("cnn") is DLIB_MMOD
    assert LANDMARKERS.card("dlib-shape5") is DLIB_SHAPE5
    assert RECOGNIZERS.card("dlib-resnet") is DLIB_RESNET
    assert DETECTORS.options("cnn") == [
        "engine",
        "device",
        "upsample",
        "adjust_threshold",
        "max_side",
    ]


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (
            lambda: create_detector("mtcnn"),
            "unknown detector 'mtcnn'; known: cnn, hog, retinaface, thunder",
        ),
        (lambda: create_detector("cnn", upsampling=1), "no option 'upsampling'"),
        (lambda: create_detector("yunet", upsample=1), "yunet' has no option 'upsample'"),
        (lambda: create_detector("hog", engine="torch"), "runs on dlib"),
        (lambda: create_detector("cnn", engine="dlib", device="cuda"), "CPU only"),
        (lambda: create_landmarker("dlib-shape68"), "known: dlib-shape5"),
        (lambda: create_landmarker("dlib-shape5", engine="onnx"), "unknown engine 'onnx'"),
        (lambda: create_recognizer("dlib-resnet", batch=8), "its options: engine, device"),
        (lambda: create_backbone("iresnet50", width=2), "no option 'width'"),
    ],
)
def test_unknown_names_and_options_are_refused(build, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        build()


def test_registry_refuses_factories_that_swallow_options() -> None:
    registry: Registry[object] = Registry("thing")

    with pytest.raises(TypeError, match="must name `forwards_to`"):

        @registry.register("loose")
        def loose(**_: object) -> object:
            return object()

    @registry.register("strict")
    def strict(size: int = 1) -> object:
        return size

    assert registry.create("strict", size=3) == 3
    with pytest.raises(ValueError, match="already registered"):
        registry.register("strict")(strict)


def test_first_use_from_many_threads_sees_every_model(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A registry fills itself on first use; threads asking meanwhile wait for all of it (a
    service's concurrent first requests once saw "unknown landmarker ...; known: none")."""
    import sys
    import threading

    package = tmp_path / "slowstage"
    package.mkdir()
    (package / "__init__.py").write_text("")
    registry: Registry[object] = Registry("thing", "slowstage")
    monkeypatch.setitem(sys.modules, "slowstage_registry", registry)
    for n in range(3):
        (package / f"m{n}.py").write_text(
            "import time\nimport slowstage_registry as r\ntime.sleep(0.05)\n"
            f"r.register('model{n}')(lambda: {n})\n"
        )
    monkeypatch.syspath_prepend(str(tmp_path))
    seen: list[list[str]] = []
    start = threading.Barrier(6)

    def ask() -> None:
        start.wait()
        seen.append(registry.names())

    threads = [threading.Thread(target=ask) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert seen == [["model0", "model1", "model2"]] * 6


def test_every_error_has_one_root() -> None:
    from facesphere import errors
    from facesphere.eval.pairs import PairsFormatError
    from facesphere.gallery.errors import ModelMismatchError
    from facesphere.pretrained.dlib_format import DlibFormatError
    from facesphere.serve.keys import KeyStoreError
    from facesphere.train.recordio import RecordIOError

    own = [getattr(errors, n) for n in dir(errors) if n.endswith("Error")]
    others = [PairsFormatError, ModelMismatchError, DlibFormatError, KeyStoreError, RecordIOError]
    assert all(issubclass(cls, FacesphereError) for cls in own + others)
    assert errors.NoFaceError.exit_code == 3 and errors.ImageError.exit_code == 2


# -- the CLI's shared pipeline options -------------------------------------------------------


def test_version_and_missing_gpu(shared_data: Path) -> None:
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.stdout.strip() == f"facesphere {__version__}"
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA; the refusal is for machines without it")
    photo = str(lfw(shared_data, "Colin_Powell"))
    for verb in (["detect", photo], ["verify", photo, photo], ["embed", photo, "-o", "o.npz"]):
        line = one_line_error(runner.invoke(app, [*verb, "--device", "cuda"]), 2)
        assert "CUDA is not available" in line


def test_unknown_stage_names_exit_2(shared_data: Path) -> None:
    photo = str(lfw(shared_data, "Colin_Powell"))
    line = one_line_error(runner.invoke(app, ["detect", photo, "--detector", "mtcnn"]), 2)
    assert "known: cnn, hog, retinaface, thunder" in line
    line = one_line_error(runner.invoke(app, ["detect", photo, "--landmarker", "x"]), 2)
    assert "unknown landmarker 'x'" in line
    line = one_line_error(
        runner.invoke(app, ["detect", photo, "-d", "yunet", "--upsample", "1"]), 2
    )
    assert "no option 'upsample'" in line


def test_every_pipeline_verb_takes_the_shared_options() -> None:
    shared = ["--detector", "--landmarker", "--recognizer", "--engine", "--device", "--upsample"]
    verbs = [
        ["detect"], ["verify"], ["embed"], ["cluster"], ["video"], ["serve"], ["prepare"],
        ["gallery", "enroll"], ["gallery", "identify"], ["evaluate", "pairs"],
    ]  # fmt: skip
    for verb in verbs:
        result = runner.invoke(app, [*verb, "--help"], env={"COLUMNS": "200"})
        assert result.exit_code == 0, (verb, result.output)
        missing = [option for option in shared if option not in result.stdout]
        assert missing == [], (verb, missing)
    for verb in (["verify"], ["gallery", "identify"], ["video"], ["serve"]):
        assert "--threshold" in runner.invoke(app, [*verb, "--help"]).stdout


def test_a_trained_model_by_path_on_verify_embed_gallery_and_video(
    tiny_model: Path, shared_data: Path, tmp_path: Path
) -> None:
    model = ["--recognizer", str(tiny_model), "--detector", "hog"]
    a, b = lfw(shared_data, "Colin_Powell", 1), lfw(shared_data, "Colin_Powell", 2)

    # verify: an uncalibrated model needs a threshold, and says so
    line = one_line_error(runner.invoke(app, ["verify", str(a), str(b), *model]), 2)
    assert "no calibrated verify threshold" in line
    result = runner.invoke(app, ["verify", str(a), str(b), *model, "--threshold", "0.5", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["model"] == "tiny" and report["threshold"] == 0.5 and report["far"] is None

    # embed: the file's dimension and card
    out = tmp_path / "emb.npz"
    result = runner.invoke(app, ["embed", str(a), str(b), "-o", str(out), "-j", "1", *model])
    assert result.exit_code == 0, result.output
    with np.load(out) as saved:
        assert saved["embeddings"].shape == (2, DIM)
        assert json.loads(str(saved["card"]))["name"] == "tiny"

    # gallery: created for the file's card, identified with it
    gallery = tmp_path / "people.db"
    result = runner.invoke(
        app, ["gallery", "enroll", str(gallery), str(a), "-s", "powell", "--create", *model]
    )
    assert result.exit_code == 0, result.output
    from facesphere.gallery import Gallery

    with Gallery(gallery) as opened:
        assert opened.card is not None and opened.card.name == "tiny"
        assert (opened.model, opened.dim) == ("tiny", DIM)
    result = runner.invoke(
        app, ["gallery", "identify", str(gallery), str(a), *model, "--threshold", "0.5", "--json"]
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["faces"][0]["identity"] == "powell"
    line = one_line_error(runner.invoke(app, ["gallery", "identify", str(gallery), str(a)]), 2)
    assert "tiny" in line and "dlib-resnet" in line  # the default model is not the gallery's

    # video: tracks named through the same gallery and model
    clip = tmp_path / "clip.mp4"
    frame = cv2.imread(str(a))
    writer = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"mp4v"), 5.0, (250, 250))
    for _ in range(3):
        writer.write(frame)
    writer.release()
    result = runner.invoke(
        app,
        ["video", str(clip), "-g", str(gallery), *model, "--threshold", "0.5", "--json-summary",
         "--no-progress"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "powell" in json.loads(result.stdout)["identities"]


def test_serve_checks_its_pipeline_options_before_starting(tmp_path: Path) -> None:
    line = one_line_error(
        runner.invoke(app, ["serve", "--recognizer", str(tmp_path / "x.onnx")]), 2
    )
    assert "no exported model" in line
    line = one_line_error(runner.invoke(app, ["serve", "-d", "yunet", "--upsample", "1"]), 2)
    assert "no option 'upsample'" in line
