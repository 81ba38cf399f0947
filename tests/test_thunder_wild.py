"""ThunderNet in the wild: the working resolution, batch-norm folding, WIDER training crops,
ignored boxes, teacher labels and fine-tuning."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from facesphere.detect import create_detector
from facesphere.detect.thunder.detector import (
    LEVEL_REACH,
    SMALLEST_ANCHOR,
    ThunderDetector,
    working_scales,
)
from facesphere.detect.thunder.model import (
    ThunderFace,
    ThunderSpec,
    load_model,
    save_model,
    traced_feature_maps,
)
from facesphere.errors import ConfigError, DataError
from facesphere.models.fold import fold_batchnorm
from facesphere.train.thunder.config import config_from_dict
from facesphere.train.thunder.data import SceneMaker, augment_scene
from facesphere.train.thunder.labels import (
    FaceLabel,
    Found,
    ImageLabel,
    fuse_teachers,
    label_photos,
    load_labels,
    save_labels,
)
from facesphere.train.thunder.loss import LossSettings, ignored_by, rpn_targets

torch.set_num_threads(1)


# -- working resolution --------------------------------------------------------------------------


def test_working_scales_map_the_smallest_face_to_the_smallest_anchor() -> None:
    scales = working_scales(1080, 1920, min_face=24.0, max_side=2048)
    assert scales[0] == pytest.approx(SMALLEST_ANCHOR / 24.0)
    # 4x coarser levels until the whole image fits in one level's reach
    assert all(a / b == pytest.approx(4.0) for a, b in itertools.pairwise(scales))
    assert 1920 * scales[-1] <= LEVEL_REACH < 1920 * scales[-2]
    # max_side caps the finest level; 0 means no cap
    assert working_scales(4000, 4000, 8.0, 1000)[0] == pytest.approx(0.25)
    assert working_scales(4000, 4000, 8.0, 0)[0] == pytest.approx(2.0)
    # a small photo is one level, enlarged to 320 px (the training crops' size)
    assert working_scales(200, 150, 16.0, 2048) == [pytest.approx(1.6)]


def test_thunder_options_are_checked() -> None:
    with pytest.raises(ConfigError, match="min_face"):
        create_detector("thunder", min_face=2)
    with pytest.raises(ConfigError, match="upsample"):
        create_detector("thunder", upsample=5)
    with pytest.raises(ConfigError, match="refine_landmarks"):
        create_detector("thunder", refine_landmarks="yes")
    assert create_detector("thunder", upsample=1, min_face=24).min_face == 12
    assert working_scales(320, 320, create_detector("thunder").min_face, 2048) == [1.0]


def _portrait(shared_data: Path) -> np.ndarray:
    path = next(iter(sorted((shared_data / "celeba299").iterdir())))
    with Image.open(next(iter(sorted(path.glob("*.jpg"))))) as img:
        return np.asarray(img.convert("RGB"))


def _best_iou(found, box: np.ndarray) -> float:
    from facesphere.video.tracker import iou_matrix

    if not found:
        return 0.0
    return float(iou_matrix(box[None], np.stack([d.box for d in found]))[0].max())


def test_small_face_in_a_large_frame_is_found(shared_data: Path) -> None:
    """A 40 px face in a 1920x1080 frame: shrinking the frame to 320 px would make it 7 px."""
    photo = _portrait(shared_data)
    detector = create_detector("thunder")
    (face,) = detector.detect(photo)[:1]
    scale = 40.0 / float(face.box[3] - face.box[1])
    small = np.asarray(
        Image.fromarray(photo).resize(
            (round(photo.shape[1] * scale), round(photo.shape[0] * scale)), Image.BILINEAR
        )
    )
    frame = np.full((1080, 1920, 3), 100, np.uint8)
    frame[600 : 600 + small.shape[0], 1300 : 1300 + small.shape[1]] = small
    expected = face.box * scale + np.array([1300, 600, 1300, 600], np.float32)
    assert _best_iou(detector.detect(frame), expected) >= 0.5
    # the same face is lost when min_face asks only for faces 8x larger
    assert _best_iou(create_detector("thunder", min_face=320).detect(frame), expected) < 0.5


def test_face_larger_than_the_anchors_is_found_on_a_coarser_level(shared_data: Path) -> None:
    photo = _portrait(shared_data)
    detector = create_detector("thunder")
    (face,) = detector.detect(photo)[:1]
    big = np.asarray(Image.fromarray(photo).resize((photo.shape[1] * 8, photo.shape[0] * 8)))
    finest = working_scales(*big.shape[:2], detector.min_face, detector.max_side)[0]
    assert float(face.box[3] - face.box[1]) * 8 * finest > 1.3 * LEVEL_REACH
    assert _best_iou(detector.detect(big), face.box * 8) >= 0.5


def _with_batch_norm_statistics(model: ThunderFace) -> ThunderFace:
    """`model` in eval mode with non-trivial batch-norm statistics and scales to fold."""
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
            module.weight.data.uniform_(0.5, 1.5)
    return model.eval()


def test_folded_batch_norm_gives_the_same_outputs() -> None:
    model = _with_batch_norm_statistics(ThunderFace(ThunderSpec(input_size=128)))
    x = torch.randn(1, 3, 128, 160)
    with torch.no_grad():
        before = model.features(x)[:3]
        folded = ThunderFace(ThunderSpec(input_size=128))
        folded.load_state_dict(model.state_dict())
        folded.eval().fold_for_inference()
        after = folded.features(x)[:3]
        # the detector hands the folded (channels-last) backbone NHWC images
        after_nhwc = folded.features(x.contiguous(memory_format=torch.channels_last))[:3]
    left = sum(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    assert left == 0
    for a, b, c in zip(before, after, after_nhwc, strict=True):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(a, c, atol=1e-4, rtol=1e-4)
    with pytest.raises(ValueError, match="eval"):
        fold_batchnorm(ThunderFace().train())


def test_traced_feature_maps_match_eager_ones_at_other_sizes() -> None:
    torch.manual_seed(0)
    model = _with_batch_norm_statistics(ThunderFace(ThunderSpec(input_size=128)))
    model.fold_for_inference()
    traced = traced_feature_maps(model)  # traced on a 64x64 image
    for height, width in ((96, 224), (320, 192)):
        x = torch.randn(1, 3, height, width).contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            eager, fast = model.feature_maps(x), traced(x)
        assert fast[0].shape == (1, 245, height // 16, width // 16)
        for a, b in zip(eager, fast, strict=True):
            torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


# -- training data -------------------------------------------------------------------------------


def _crowd_label(root: Path) -> ImageLabel:
    """A 'WIDER' photo of 400x300 with three faces of 60, 20 and 4 px and one invalid box."""
    folder = root / "wider_train_subset" / "images" / "0--Test"
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (300, 400, 3), dtype=np.uint8)).save(folder / "a.jpg")
    boxes = [(50, 50, 110, 110), (200, 100, 220, 120), (300, 200, 304, 204), (10, 250, 60, 290)]
    faces = []
    for k, box in enumerate(boxes):
        b = np.array(box, np.float32)
        w = b[2] - b[0]
        pts = np.array(
            [
                [b[0] + 0.3 * w, b[1] + 0.4 * w],
                [b[0] + 0.7 * w, b[1] + 0.4 * w],
                [b[0] + 0.5 * w, b[1] + 0.6 * w],
                [b[0] + 0.35 * w, b[1] + 0.8 * w],
                [b[0] + 0.65 * w, b[1] + 0.8 * w],
            ],
            np.float32,
        )
        faces.append(FaceLabel(b, pts, 1.0, ignore=k == 3))
    return ImageLabel("wider_train_subset/images/0--Test/a.jpg", "wider", "0--Test", False, faces)


def _portrait_labels(root: Path) -> list[ImageLabel]:
    folder = root / "celeba299" / "1"
    folder.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (120, 120), (150, 120, 100)).save(folder / "1.jpg")
    pts = np.array([[45, 50], [75, 50], [60, 65], [48, 80], [72, 80]], np.float32)
    face = FaceLabel(np.array([30, 30, 90, 100], np.float32), pts)
    return [ImageLabel("celeba299/1/1.jpg", "celeba299", "1", False, [face])]


def test_wider_crops_keep_faces_and_ignore_what_cannot_be_learnt(tmp_path: Path) -> None:
    labels = [_crowd_label(tmp_path), *_portrait_labels(tmp_path)]
    maker = SceneMaker(tmp_path, labels, [], held_out=False, size=160, wider_fraction=1.0)
    seen_ignored = 0
    for index in range(40):
        scene = maker.crowd(np.random.default_rng(index))
        assert scene.image.shape == (160, 160, 3)
        for box in [*scene.boxes, *scene.ignore]:
            assert np.all(box >= 0) and np.all(box <= 160) and np.all(box[2:] > box[:2])
        for box, pts in zip(scene.boxes, scene.landmarks, strict=True):
            side = min(box[2] - box[0], box[3] - box[1])
            assert side >= 8  # faces under 8 px are never targets
            centre = (box[:2] + box[2:]) / 2
            # the eyes stay above the box centre (landmarks follow the scaling)
            assert pts[0, 1] < centre[1] and pts[1, 1] < centre[1]
        seen_ignored += len(scene.ignore)
        flipped = augment_scene(scene, np.random.default_rng(1))
        assert flipped.ignore.shape == scene.ignore.shape
    assert seen_ignored > 0  # the invalid box and the 4 px face show up as ignored
    with pytest.raises(DataError, match="WIDER"):
        SceneMaker(tmp_path, labels[1:], [], held_out=False, size=160, wider_fraction=0.5)


def test_ignored_boxes_are_no_negatives() -> None:
    anchors = torch.tensor(
        [[0, 0, 16, 16], [100, 100, 116, 116], [0, 0, 256, 256], [200, 200, 216, 216]],
        dtype=torch.float32,
    )
    ignore = torch.tensor([[2, 2, 12, 12]], dtype=torch.float32)
    held = ignored_by(anchors, ignore)
    # the small anchor on the ignored box is out; the huge one that merely contains it is not
    assert held.tolist() == [True, False, False, False]
    gt = torch.tensor([[200, 200, 216, 216]], dtype=torch.float32)
    settings = LossSettings(rpn_batch=8)
    pos, neg, _, _ = rpn_targets(anchors, gt, settings, None, ignore)
    assert pos.tolist() == [3] and 0 not in neg.tolist() and set(neg.tolist()) == {1, 2}
    _, neg_all, _, _ = rpn_targets(anchors, gt, settings, None, None)
    assert 0 in neg_all.tolist()


def test_teachers_are_fused_and_lone_weak_faces_dropped() -> None:
    pts = np.zeros((1, 5, 2), np.float32)
    a = Found(
        np.array([[0, 0, 10, 10], [50, 50, 60, 60], [80, 0, 90, 10]], np.float32),
        np.array([0.9, 0.6, 0.95], np.float32),
        np.concatenate([pts, pts + 1, pts + 2]),
    )
    b = Found(
        np.array([[1, 1, 11, 11], [200, 200, 210, 210]], np.float32),
        np.array([0.7, 0.85], np.float32),
        np.concatenate([pts + 4, pts + 5]),
    )
    faces = fuse_teachers(a, b)
    boxes = [f.box.tolist() for f in faces]
    # matched pair averaged (score: the lower), lone 0.6 dropped, lone 0.95 and 0.85 kept
    assert boxes == [[0.5, 0.5, 10.5, 10.5], [80, 0, 90, 10], [200, 200, 210, 210]]
    assert faces[0].score == pytest.approx(0.7)
    np.testing.assert_allclose(faces[0].landmarks, 2.0)


def test_teacher_labels_have_five_points_and_never_read_lfw(
    shared_data: Path, tmp_path: Path
) -> None:
    person = tmp_path / "celeba299" / "Someone"
    person.mkdir(parents=True)
    source = next(iter(sorted((shared_data / "celeba299").iterdir())))
    (person / "a.jpg").write_bytes(next(iter(sorted(source.glob("*.jpg")))).read_bytes())
    labels = label_photos(tmp_path, sources=("celeba299",), progress=False)
    save_labels(labels, tmp_path / "labels.json")
    (item,) = load_labels(tmp_path / "labels.json")
    assert item.path == "celeba299/Someone/a.jpg" and len(item.faces) == 1
    face = item.faces[0]
    x1, y1, x2, y2 = face.box
    assert np.isfinite(face.landmarks).all() and not face.ignore
    left, right, nose = face.landmarks[:3]
    assert x1 < left[0] < nose[0] < right[0] < x2 and y1 < left[1] < nose[1] < y2
    with pytest.raises(ValueError, match="benchmark"):
        label_photos(tmp_path, sources=("lfw",), progress=False)
    (tmp_path / "old.json").write_text('{"format": "facesphere-thunder-labels", "images": []}')
    with pytest.raises(DataError, match="older format"):
        load_labels(tmp_path / "old.json")


def test_wider_labels_keep_annotated_boxes_and_mark_invalid_ones(shared_data: Path) -> None:
    from facesphere.eval.wider import load_wider_subset, wider_split

    labels = label_photos(shared_data, sources=("wider",), limit=2, progress=False)
    train, dev = wider_split(load_wider_subset(shared_data))
    assert [item.path.split("/")[-1] for item in labels] == [
        im.name.split("/")[-1] for im in train[:2]
    ]
    dev_names = {im.name for im in dev}
    for item, truth in zip(labels, train, strict=False):
        assert truth.name not in dev_names
        np.testing.assert_allclose(np.stack([f.box for f in item.faces]), truth.boxes)
        assert [f.ignore for f in item.faces] == truth.invalid.tolist()
        assert any(np.isfinite(f.landmarks).all() for f in item.faces)


# -- fine-tuning ---------------------------------------------------------------------------------


def test_fine_tuning_starts_from_the_given_weights(tmp_path: Path) -> None:
    from facesphere.train.thunder.train import train_detector

    spec = ThunderSpec(input_size=96, anchor_scales=(24.0, 48.0), anchor_ratios=(1.0,))
    start = ThunderFace(spec)
    save_model(start, tmp_path / "start.pt")
    root = tmp_path / "data"
    labels = [_crowd_label(root), *_portrait_labels(root)]
    base = {
        "input_size": 96,
        "anchor_scales": [24.0, 48.0],
        "anchor_ratios": [1.0],
        "batch_size": 2,
        "steps": 1,
        "lr": 1e-9,
        "warmup_steps": 0,
        "wider_fraction": 0.5,
        "real_fraction": 0.2,
        "data_root": str(root),
        "output": str(tmp_path / "run"),
        "checkpoint_every": 0,
        "progress": False,
        "init_weights": str(tmp_path / "start.pt"),
    }
    result = train_detector(config_from_dict(base), labels=labels)
    tuned = load_model(result.model_path)
    weight = "cem.from_c4.weight"
    # one step at a negligible learning rate: the weights are still the starting ones
    torch.testing.assert_close(
        tuned.state_dict()[weight], start.state_dict()[weight], atol=1e-5, rtol=0
    )
    other = config_from_dict({**base, "anchor_ratios": [1.0, 1.25], "output": str(tmp_path / "b")})
    with pytest.raises(ConfigError, match="init_weights"):
        train_detector(other, labels=labels)
    with pytest.raises(ConfigError, match="wider_fraction"):
        config_from_dict({**base, "wider_fraction": 0.9, "real_fraction": 0.2})


def test_detector_reads_weights_of_any_input_size(tmp_path: Path) -> None:
    save_model(ThunderFace(ThunderSpec(input_size=96)), tmp_path / "m.pt")
    found = ThunderDetector(weights=tmp_path / "m.pt", score_threshold=0.0).detect(
        np.zeros((90, 700, 3), np.uint8)
    )
    for det in found:
        assert det.box[0] >= 0 and det.box[2] <= 700 and det.box[3] <= 90
