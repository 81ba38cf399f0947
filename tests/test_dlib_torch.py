"""The dlib models rebuilt in torch/numpy against dlib itself, on real photos."""

from __future__ import annotations

from functools import cache
from pathlib import Path

import dlib
import numpy as np
import pytest
from lfw_photos import NAMES, group_photo, lfw
from PIL import Image
from typer.testing import CliRunner

from facesphere.pretrained.cards import DLIB_MMOD, DLIB_RESNET, DLIB_SHAPE5
from facesphere.pretrained.dlib_format import (
    DlibFormatError,
    Reader,
    load_network,
    load_shape_predictor,
    read_network,
    read_shape_predictor,
)
from facesphere.pretrained.files import card_file


@cache
def dlib_cnn() -> dlib.cnn_face_detection_model_v1:
    return dlib.cnn_face_detection_model_v1(str(card_file(DLIB_MMOD)))


@cache
def torch_mmod(upsample: int):
    from facesphere.detect.mmod import MMODDetector

    return MMODDetector(upsample=upsample)


def iou(a: np.ndarray, b: np.ndarray) -> float:
    iw = min(a[2], b[2]) - max(a[0], b[0]) + 1
    ih = min(a[3], b[3]) - max(a[1], b[1]) + 1
    inter = max(iw, 0) * max(ih, 0)
    area = lambda r: (r[2] - r[0] + 1) * (r[3] - r[1] + 1)  # noqa: E731
    return inter / (area(a) + area(b) - inter)


# -- reader ---------------------------------------------------------------------------------


def test_integer_and_float_encoding() -> None:
    r = Reader(b"\x01\x05\x81\x05\x02\x00\x01\x01\x00\x01\x10\x81\x04\x81\x03\x01\x00", "t")
    assert r.int_() == 5
    assert r.int_() == -5
    assert r.int_() == 256
    assert r.int_() == 0
    assert r.float_() == 1.0  # 16 * 2**-4
    assert r.float_() == -3.0  # -3 * 2**0
    assert r.at_end()
    with pytest.raises(DlibFormatError, match="end of file"):
        r.int_()
    with pytest.raises(DlibFormatError, match="control byte"):
        Reader(b"\x00", "t").int_()


def test_reads_the_three_models() -> None:
    resnet = load_network(card_file(DLIB_RESNET))
    assert resnet.input["size"] == (150, 150)
    assert len(resnet.layers) == 108
    assert resnet.layers[-1].kind == "fc" and resnet.layers[-1].arrays["weight"].shape == (256, 128)
    mmod = load_network(card_file(DLIB_MMOD))
    assert mmod.loss["detector_windows"][0]["width"] == 80
    assert 0 < mmod.loss["nms_iou"] < 1
    shape = load_shape_predictor(card_file(DLIB_SHAPE5))
    assert shape.initial_shape.shape == (5, 2)
    assert shape.leaf_values.shape[2:] == (16, 5, 2)


def test_damaged_and_wrong_files(tmp_path: Path) -> None:
    mmod_bytes = card_file(DLIB_MMOD).read_bytes()
    truncated = tmp_path / "truncated.dat"
    truncated.write_bytes(mmod_bytes[: len(mmod_bytes) // 2])
    with pytest.raises(DlibFormatError, match=r"truncated\.dat"):
        load_network(truncated)
    garbage = tmp_path / "garbage.dat"
    garbage.write_bytes(np.random.default_rng(0).integers(0, 256, 5000, np.uint8).tobytes())
    with pytest.raises(DlibFormatError, match=r"garbage\.dat"):
        load_network(garbage)
    with pytest.raises(DlibFormatError, match=r"garbage\.dat"):
        load_shape_predictor(garbage)
    with pytest.raises(DlibFormatError, match="mmod"):
        read_shape_predictor(mmod_bytes, "mmod.dat")
    with pytest.raises(DlibFormatError, match=r"shape\.dat"):
        read_network(card_file(DLIB_SHAPE5).read_bytes()[:200_000], "shape.dat")
    assert issubclass(DlibFormatError, ValueError)
    with pytest.raises(DlibFormatError, match="missing"):
        load_network(tmp_path / "missing.dat")


def test_wrong_network_for_model_class() -> None:
    from facesphere.pretrained.dlib_mmod import convert_dlib_mmod
    from facesphere.pretrained.dlib_resnet import convert_dlib_resnet

    with pytest.raises(DlibFormatError):
        convert_dlib_resnet(card_file(DLIB_MMOD))
    with pytest.raises(DlibFormatError):
        convert_dlib_mmod(card_file(DLIB_RESNET))


# -- recogniser -----------------------------------------------------------------------------


def _chips() -> tuple[np.ndarray, np.ndarray]:
    hog = dlib.get_frontal_face_detector()
    sp = dlib.shape_predictor(str(card_file(DLIB_SHAPE5)))
    rec = dlib.face_recognition_model_v1(str(card_file(DLIB_RESNET)))
    chips, ref = [], []
    for name in NAMES[:4]:
        img = lfw(name)
        shape = sp(img, hog(img, 0)[0])
        chip = dlib.get_face_chip(img, shape, 150, 0.25)
        chips.append(chip)
        v = np.asarray(rec.compute_face_descriptor(chip))
        ref.append(v / np.linalg.norm(v))
    return np.stack(chips), np.stack(ref)


def test_resnet_matches_dlib() -> None:
    from facesphere.recognize.dlib_resnet import DlibResNetRecognizer

    chips, ref = _chips()
    rec = DlibResNetRecognizer(batch_size=3)  # two batches
    emb = rec.embed_chips(chips)
    assert emb.shape == (4, 128) and emb.dtype == np.float32
    assert np.allclose(np.linalg.norm(emb, axis=1), 1, atol=1e-5)
    cos = (emb * ref).sum(axis=1)
    assert cos.min() >= 0.9999, cos
    # different people stay apart
    assert (emb[0] * emb[1]).sum() < 0.95
    assert (rec.card.embedding_dim, rec.card.input_size) == (128, (150, 150))
    assert rec.card.name == "dlib-resnet"
    with pytest.raises(ValueError):
        rec.embed_chips(chips[:, :100])


# -- shape predictor ------------------------------------------------------------------------


def test_shape_predictor_matches_dlib() -> None:
    from facesphere.pretrained.dlib_shape import load_dlib_shape5

    sp = dlib.shape_predictor(str(card_file(DLIB_SHAPE5)))
    tp = load_dlib_shape5()
    rng = np.random.default_rng(1)
    hog = dlib.get_frontal_face_detector()
    for name in NAMES[:3]:
        img = lfw(name)
        x1, y1 = rng.integers(-30, 120, 12), rng.integers(-30, 120, 12)
        side = rng.integers(40, 200, 12)
        boxes = np.stack([x1, y1, x1 + side, y1 + side + rng.integers(-10, 10, 12)], axis=1)
        boxes = np.concatenate(
            [boxes, [[d.left(), d.top(), d.right(), d.bottom()] for d in hog(img, 0)]]
        ).astype(int)
        ref = np.array(
            [[(p.x, p.y) for p in sp(img, dlib.rectangle(*map(int, b))).parts()] for b in boxes]
        )
        out = tp.predict(img, boxes.astype(np.float32))
        assert out.shape == (len(boxes), 5, 2) and out.dtype == np.float32
        assert np.abs(out - ref).max() <= 0.5
    assert tp.predict(lfw(NAMES[0]), np.zeros((0, 4))).shape == (0, 5, 2)


# -- detector -------------------------------------------------------------------------------


def _compare_detections(img: np.ndarray, upsample: int) -> int:
    ref = dlib_cnn()(img, upsample)
    out = torch_mmod(upsample).detect_inclusive(img)
    assert len(out) == len(ref), (out, ref)
    ref_boxes = [
        np.array([d.rect.left(), d.rect.top(), d.rect.right(), d.rect.bottom()]) for d in ref
    ]
    for box, score in out:
        assert box.dtype == np.float32 and box.shape == (4,)
        best = max(range(len(ref)), key=lambda j: iou(box, ref_boxes[j]))
        assert iou(box, ref_boxes[best]) >= 0.95
        assert abs(score - ref[best].confidence) < 1e-2
    scores = [s for _, s in out]
    assert scores == sorted(scores, reverse=True)
    return len(out)


def test_mmod_single_faces_upsample0() -> None:
    for name in NAMES[:2]:
        assert _compare_detections(lfw(name), 0) == 1


def test_mmod_group_photo_upsample0() -> None:
    img = group_photo(NAMES[:3], (400, 560))
    assert _compare_detections(img, 0) == 3


def test_mmod_upsample1() -> None:
    assert _compare_detections(lfw(NAMES[2]), 1) == 1


def test_mmod_no_face() -> None:
    assert torch_mmod(0).detect(np.full((120, 160, 3), 127, np.uint8)) == []


@pytest.mark.slow
def test_mmod_group_photo_640x480_upsample1() -> None:
    img = group_photo(NAMES[:4])
    assert _compare_detections(img, 0) >= 4  # LFW photos may hold extra faces
    assert _compare_detections(img, 1) >= 4


# -- export and CLI -------------------------------------------------------------------------


def test_onnx_resnet_parity(tmp_path: Path) -> None:
    import onnxruntime as ort

    from facesphere.export import export_model
    from facesphere.recognize.dlib_resnet import DlibResNetRecognizer

    path = export_model("dlib-resnet", tmp_path / "resnet.onnx")
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    chips = np.stack([np.asarray(Image.fromarray(lfw(n)).resize((150, 150))) for n in NAMES[:3]])
    x = chips.transpose(0, 3, 1, 2).astype(np.float32)
    onnx_emb = sess.run(None, {"input": x})[0]
    assert onnx_emb.shape == (3, 128)
    torch_emb = DlibResNetRecognizer().embed_chips(chips)
    assert (onnx_emb * torch_emb).sum(axis=1).min() >= 0.9999


def test_onnx_mmod_dynamic_size(tmp_path: Path) -> None:
    import onnxruntime as ort
    import torch

    from facesphere.export import export_model

    path = export_model("dlib-mmod", tmp_path / "mmod.onnx")
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    det = torch_mmod(0)
    tiled, _ = det.tiled_pyramid(lfw(NAMES[0]))
    ref = det.model(tiled).detach().numpy()
    got = sess.run(None, {"pyramid": tiled.numpy()})[0]
    assert got.shape == ref.shape
    assert np.abs(got - ref).max() < 1e-3
    with torch.inference_mode():
        small = torch.zeros(2, 3, 97, 131)
        assert sess.run(None, {"pyramid": small.numpy()})[0].shape == tuple(det.model(small).shape)


def test_cli_export(tmp_path: Path) -> None:
    from facesphere.cli.main import app

    runner = CliRunner()
    out = tmp_path / "m.pt"
    res = runner.invoke(
        app, ["export", "--model", "dlib-mmod", "--format", "torchscript", str(out)]
    )
    assert res.exit_code == 0, res.output
    assert out.is_file() and out.stat().st_size > 100_000
    for args, msg in [
        (["export", str(tmp_path / "a.onnx")], "--model"),
        (["export", "--model", "arcface", str(tmp_path / "a.onnx")], "unknown model"),
        (
            ["export", "--model", "dlib-resnet", "--format", "tflite", str(tmp_path / "a")],
            "unknown format",
        ),
        (["export", "ckpt.pt", "--model", "dlib-resnet", str(tmp_path / "a.onnx")], "not both"),
        (["export", "a", "b", "c", "--model", "dlib-resnet"], "positional"),
    ]:
        res = runner.invoke(app, args)
        assert res.exit_code == 2, (args, res.output)
        assert msg in res.output
        assert "Traceback" not in res.output
