"""ThunderNet face detector: ops against brute-force references, shapes, training, loading."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from facesphere.detect.thunder.model import (
    CEM_CHANNELS,
    CompressedRPN,
    ContextEnhancement,
    SpatialAttention,
    ThunderFace,
    ThunderSpec,
    landmarks_from_offsets,
    offsets_from_landmarks,
)
from facesphere.detect.thunder.ops import (
    box_iou,
    decode_boxes,
    encode_boxes,
    make_anchors,
    nms,
    ps_roi_align,
)
from facesphere.errors import ConfigError
from facesphere.train.thunder.config import config_from_dict
from facesphere.train.thunder.data import SceneMaker, augment_scene
from facesphere.train.thunder.labels import FaceLabel, ImageLabel

torch.set_num_threads(1)


# -- PSRoI align ---------------------------------------------------------------------------------


def _bilinear(plane: np.ndarray, x: float, y: float) -> float:
    h, w = plane.shape
    if x <= -1 or x >= w or y <= -1 or y >= h:
        return 0.0
    x, y = min(max(x, 0.0), w - 1), min(max(y, 0.0), h - 1)
    x0, y0 = math.floor(x), math.floor(y)
    x1, y1 = min(x0 + 1, w - 1), min(y0 + 1, h - 1)
    fx, fy = x - x0, y - y0
    top = plane[y0, x0] * (1 - fx) + plane[y0, x1] * fx
    bottom = plane[y1, x0] * (1 - fx) + plane[y1, x1] * fx
    return float(top * (1 - fy) + bottom * fy)


def _ps_roi_align_reference(
    feats: np.ndarray, rois: np.ndarray, k: int, scale: float, s: int
) -> np.ndarray:
    """One bin at a time: average of s*s bilinear samples from the bin's own channels."""
    c = feats.shape[1] // (k * k)
    out = np.zeros((len(rois), c, k, k))
    for r, (b, x1, y1, x2, y2) in enumerate(rois):
        bw = max((x2 - x1) * scale, 1.0 / k) / k
        bh = max((y2 - y1) * scale, 1.0 / k) / k
        for i in range(k):
            for j in range(k):
                for ch in range(c):
                    plane = feats[int(b), (i * k + j) * c + ch]
                    total = 0.0
                    for sy in range(s):
                        for sx in range(s):
                            y = y1 * scale + (i + (sy + 0.5) / s) * bh - 0.5
                            x = x1 * scale + (j + (sx + 0.5) / s) * bw - 0.5
                            total += _bilinear(plane, x, y)
                    out[r, ch, i, j] = total / (s * s)
    return out


def test_ps_roi_align_matches_per_bin_average() -> None:
    gen = torch.Generator().manual_seed(0)
    k, c = 3, 2
    feats = torch.randn(2, c * k * k, 6, 7, generator=gen)
    rois = torch.tensor(
        [
            [0, 3.0, 5.0, 40.0, 50.0],
            [1, -10.0, 2.0, 30.0, 20.0],
            [1, 50.0, 40.0, 60.0, 52.0],
            [0, 20.0, 20.0, 21.0, 21.0],
        ]
    )
    got = ps_roi_align(feats, rois, k, 1 / 8, sampling_ratio=2).numpy()
    want = _ps_roi_align_reference(feats.numpy(), rois.numpy(), k, 1 / 8, 2)
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_ps_roi_align_uses_position_sensitive_channels() -> None:
    k = 2
    feats = torch.zeros(1, k * k, 4, 4)
    for b in range(k * k):
        feats[0, b] = float(b + 1)  # each bin's channel holds a constant
    out = ps_roi_align(feats, torch.tensor([[0, 0.0, 0.0, 32.0, 32.0]]), k, 1 / 8)
    assert out.shape == (1, 1, k, k)
    np.testing.assert_allclose(out[0, 0].numpy(), [[1, 2], [3, 4]], atol=1e-6)


# -- anchors, box coding, NMS --------------------------------------------------------------------


def test_anchors_layout_sizes_and_ratios() -> None:
    anchors = make_anchors((3, 4), 16, (16.0, 64.0), (1.0, 1.25))
    assert anchors.shape == (3 * 4 * 4, 4)
    wh = anchors[:, 2:] - anchors[:, :2]
    centres = (anchors[:, 2:] + anchors[:, :2]) / 2
    torch.testing.assert_close(wh.prod(1)[:4], torch.tensor([256.0, 256.0, 4096.0, 4096.0]))
    torch.testing.assert_close(wh[1, 1] / wh[1, 0], torch.tensor(1.25))
    # row-major over cells: anchor block 5 is row 1, column 1
    torch.testing.assert_close(centres[5 * 4], torch.tensor([24.0, 24.0]))


def test_box_encoding_round_trip() -> None:
    gen = torch.Generator().manual_seed(1)
    ref = torch.rand(50, 2, generator=gen) * 200
    ref = torch.cat([ref, ref + 5 + torch.rand(50, 2, generator=gen) * 100], dim=1)
    boxes = torch.rand(50, 2, generator=gen) * 200
    boxes = torch.cat([boxes, boxes + 3 + torch.rand(50, 2, generator=gen) * 150], dim=1)
    deltas = encode_boxes(boxes, ref)
    torch.testing.assert_close(decode_boxes(deltas, ref), boxes, atol=1e-3, rtol=1e-5)
    torch.testing.assert_close(encode_boxes(ref, ref), torch.zeros(50, 4))


def test_landmark_offsets_round_trip() -> None:
    boxes = torch.tensor([[10.0, 20.0, 110.0, 140.0]])
    pts = torch.tensor([[[40.0, 60.0], [80.0, 61.0], [60.0, 90.0], [45.0, 110.0], [75, 111]]])
    torch.testing.assert_close(
        landmarks_from_offsets(offsets_from_landmarks(pts, boxes), boxes), pts
    )


def _nms_reference(boxes: np.ndarray, scores: np.ndarray, thr: float) -> list[int]:
    def iou(a: np.ndarray, b: np.ndarray) -> float:
        iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
        ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
        inter = iw * ih
        union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
        return inter / union

    remaining = sorted(range(len(boxes)), key=lambda i: -scores[i])
    kept = []
    while remaining:
        best = remaining.pop(0)
        kept.append(best)
        remaining = [i for i in remaining if iou(boxes[best], boxes[i]) <= thr]
    return kept


@pytest.mark.parametrize("thr", [0.3, 0.5, 0.7])
def test_nms_matches_brute_force(thr: float) -> None:
    rng = np.random.default_rng(2)
    xy = rng.uniform(0, 100, (120, 2))
    boxes = np.concatenate([xy, xy + rng.uniform(10, 60, (120, 2))], axis=1).astype(np.float32)
    scores = rng.permutation(120).astype(np.float32)  # distinct: one valid order
    got = nms(torch.from_numpy(boxes), torch.from_numpy(scores), thr).tolist()
    assert got == _nms_reference(boxes, scores, thr)
    iou = box_iou(torch.from_numpy(boxes[got]), torch.from_numpy(boxes[got]))
    assert (iou - torch.eye(len(got))).max() <= thr


# -- modules -------------------------------------------------------------------------------------


def test_cem_rpn_sam_shapes() -> None:
    c4, c5 = torch.randn(2, 120, 10, 12), torch.randn(2, 512, 5, 6)
    cem = ContextEnhancement(120, 512)(c4, c5)
    assert cem.shape == (2, CEM_CHANNELS, 10, 12)
    feats, logits, deltas = CompressedRPN(CEM_CHANNELS, 10)(cem)
    assert feats.shape == (2, 256, 10, 12)
    assert logits.shape == (2, 10 * 12 * 10) and deltas.shape == (2, 10 * 12 * 10, 4)
    sam = SpatialAttention()(cem, feats)
    assert sam.shape == cem.shape


def test_whole_model_shapes() -> None:
    model = ThunderFace(ThunderSpec(input_size=160)).eval()
    with torch.no_grad():
        sam, logits, _deltas, anchors = model.features(torch.randn(1, 3, 160, 160))
        assert sam.shape == (1, CEM_CHANNELS, 10, 10)
        assert anchors.shape == (10 * 10 * 10, 4) and logits.shape == (1, 1000)
        rois = torch.tensor([[0, 10.0, 10.0, 90.0, 100.0], [0, 50.0, 40.0, 70.0, 60.0]])
        score, box, lms = model.head_outputs(sam, rois)
    assert score.shape == (2,) and box.shape == (2, 4) and lms.shape == (2, 5, 2)


# -- data and training ---------------------------------------------------------------------------


def _fake_faces(root: Path, count: int = 8) -> list[ImageLabel]:
    """Drawn 'faces' (skin ellipse, dark eyes, nose dot, mouth) on grey photos."""
    labels = []
    rng = np.random.default_rng(3)
    for n in range(count):
        folder = root / "celeba299" / f"{n % 4}"
        folder.mkdir(parents=True, exist_ok=True)
        img = Image.new("RGB", (120, 120), tuple(int(v) for v in rng.integers(60, 200, 3)))
        d = ImageDraw.Draw(img)
        x1, y1, s = 30 + n % 3 * 5, 28, 60
        d.ellipse([x1, y1 - 5, x1 + s, y1 + s + 5], fill=(225, 180, 150))
        eyes = [(x1 + 18, y1 + 22), (x1 + 42, y1 + 22)]
        for ex, ey in eyes:
            d.ellipse([ex - 4, ey - 3, ex + 4, ey + 3], fill=(20, 20, 20))
        d.line([x1 + 20, y1 + 45, x1 + 40, y1 + 45], fill=(150, 30, 30), width=3)
        img.save(folder / f"{n}.jpg")
        pts = np.array(
            [*eyes, (x1 + 30, y1 + 33), (x1 + 20, y1 + 45), (x1 + 40, y1 + 45)], np.float32
        )
        box = np.array([x1, y1, x1 + s, y1 + s], np.float32)
        labels.append(
            ImageLabel(
                f"celeba299/{n % 4}/{n}.jpg", "celeba299", str(n % 4), False, [FaceLabel(box, pts)]
            )
        )
    return labels


def test_scenes_keep_boxes_and_landmarks_consistent(tmp_path: Path) -> None:
    labels = _fake_faces(tmp_path)
    maker = SceneMaker(tmp_path, labels, [], held_out=False, size=160, seed=1, max_face=100)
    for index in range(6):
        scene = maker.sample(index)
        assert scene.image.shape == (160, 160, 3) and len(scene.boxes) >= 1
        assert np.array_equal(scene.image, maker.sample(index).image)  # depends on index only
        for box, pts in zip(scene.boxes, scene.landmarks, strict=True):
            # eyes and nose of the drawn face stay inside its box
            assert np.all(pts[:3] >= box[:2] - 1) and np.all(pts[:3] <= box[2:] + 1)
            # the left eye (in the image) stays left of the right eye after any mirror
            assert pts[0, 0] < pts[1, 0]


def test_mirror_swaps_left_and_right_points() -> None:
    from facesphere.train.thunder.data import Scene

    pts = np.array([[[10, 5], [20, 5], [15, 9], [11, 14], [19, 14]]], np.float32)
    scene = Scene(np.zeros((30, 40, 3), np.uint8), np.array([[5, 0, 25, 20]], np.float32), pts)
    for seed in range(20):
        out = augment_scene(scene, np.random.default_rng(seed))
        if out.boxes[0, 0] != 5:  # mirrored
            np.testing.assert_allclose(out.boxes[0], [15, 0, 35, 20])
            np.testing.assert_allclose(out.landmarks[0, 0], [20, 5])
            np.testing.assert_allclose(out.landmarks[0, 3], [21, 14])
            return
    pytest.fail("no mirrored sample in 20 draws")


def test_config_validation_and_overrides() -> None:
    cfg = config_from_dict({"steps": 10}, ["lr=0.01", "anchor_ratios=[1.0]"])
    assert cfg.lr == 0.01 and cfg.anchor_ratios == [1.0]
    with pytest.raises(ConfigError, match="unknown key"):
        config_from_dict({"stepz": 10})
    with pytest.raises(ConfigError, match="input_size"):
        config_from_dict({"input_size": 100})
    with pytest.raises(ConfigError, match="lr"):
        config_from_dict({}, ["lr=fast"])


def test_tiny_training_lowers_loss_resumes_and_loads(tmp_path: Path) -> None:
    from facesphere.detect.thunder.detector import ThunderDetector
    from facesphere.train.thunder.train import train_detector

    labels = _fake_faces(tmp_path / "data")
    cfg = config_from_dict(
        {
            "input_size": 96,
            "batch_size": 3,
            "steps": 30,
            "lr": 3e-3,
            "warmup_steps": 2,
            "data_root": str(tmp_path / "data"),
            "output": str(tmp_path / "run"),
            "log_every": 5,
            "checkpoint_every": 15,
            "progress": False,
            "anchor_scales": [24.0, 48.0, 96.0],
            "export": str(tmp_path / "export.pt"),
        }
    )
    first = train_detector(cfg, labels=labels, stop_at=15)
    assert first.steps == 15
    assert (tmp_path / "run" / "checkpoints" / "step-00000015" / "rank-0.pt").is_file()
    cfg.resume = "auto"
    result = train_detector(cfg, labels=labels)
    assert result.steps == 30
    with open(tmp_path / "run" / "metrics.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [int(r["step"]) for r in rows] == list(range(5, 35, 5))
    totals = [float(r["total"]) for r in rows]
    assert np.mean(totals[-2:]) < 0.7 * totals[0], totals

    detector = ThunderDetector(weights=tmp_path / "export.pt", score_threshold=0.0)
    assert detector.model.spec.input_size == 96
    for det in detector.detect(np.zeros((90, 140, 3), np.uint8)):
        assert det.box.shape == (4,) and det.box.dtype == np.float32
        assert det.landmarks.shape == (5, 2) and det.landmark_scheme == "standard5"


def test_diverged_detector_run_writes_no_model(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from facesphere.errors import TrainingError
    from facesphere.train.thunder import train as thunder_train

    real_loss = thunder_train.detection_loss

    def diverging(*args, **kwargs):
        losses = real_loss(*args, **kwargs)
        losses["total"] = losses["total"] * float("inf")
        return losses

    monkeypatch.setattr(thunder_train, "detection_loss", diverging)
    labels = _fake_faces(tmp_path / "data")
    cfg = config_from_dict(
        {
            "input_size": 96,
            "batch_size": 2,
            "steps": 3,
            "data_root": str(tmp_path / "data"),
            "output": str(tmp_path / "run"),
            "progress": False,
            "anchor_scales": [24.0, 48.0, 96.0],
            "export": str(tmp_path / "export.pt"),
        }
    )
    with pytest.raises(TrainingError, match="step 1"):
        thunder_train.train_detector(cfg, labels=labels)
    assert not (tmp_path / "run" / "model.pt").exists() and not (tmp_path / "export.pt").exists()


def test_missing_weights_error_is_clear(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from facesphere.detect import create_detector
    from facesphere.detect.thunder.detector import WEIGHTS_ENV
    from facesphere.errors import ModelFileError

    monkeypatch.setenv(WEIGHTS_ENV, str(tmp_path / "none.pt"))
    with pytest.raises(ModelFileError, match="train-detector"):
        create_detector("thunder")


def test_landmarks_are_decoded_from_the_roi_they_were_trained_on(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Training encodes landmark offsets against the RoI, so inference must decode them there,
    not against the refined box."""
    from facesphere.detect.thunder.detector import ThunderDetector

    # a 320 px image: one level at scale 1; the head's points, not the second stage's
    detector = ThunderDetector(min_face=16, refine_landmarks=False)
    roi = torch.tensor([[0.0, 100.0, 100.0, 200.0, 200.0]])
    monkeypatch.setattr(detector.model, "proposals", lambda *args, **kwargs: roi)
    shift = torch.tensor([[2.0, 2.0, 0.0, 0.0]])  # moves the refined box by 0.2 RoI sizes
    monkeypatch.setattr(
        detector.model,
        "head_outputs",
        lambda sam, rois: (torch.full((1,), 5.0), shift, torch.zeros(1, 5, 2)),
    )
    (det,) = detector.detect(np.zeros((320, 320, 3), np.uint8))
    points = det.landmarks
    np.testing.assert_allclose(det.box, [120, 120, 220, 220], atol=1e-4)
    np.testing.assert_allclose(points, np.full((5, 2), 150.0), atol=1e-4)
