"""thunder's second landmark stage: crop geometry, the file format, the detector's use of it,
its training command and the bundled stage's accuracy on held-out landmarks5 crops."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from facesphere.cli.main import app
from facesphere.detect.thunder.detector import ThunderDetector
from facesphere.detect.thunder.model import load_model, load_refiner, save_model
from facesphere.detect.thunder.refine import (
    LandmarkRefiner,
    RefinerSpec,
    crop_squares,
    face_crops,
    refine_landmarks,
)
from facesphere.errors import ConfigError
from facesphere.pretrained.cards import THUNDER
from facesphere.pretrained.files import card_file
from facesphere.train.thunder.config import (
    LandmarkTrainConfig,
    load_landmark_config,
    validate_landmarks,
)
from facesphere.train.thunder.data import load_landmarks5
from facesphere.train.thunder.labels import read_rgb

runner = CliRunner()


def _centroid(crop: np.ndarray) -> np.ndarray:
    weight = crop[..., 0].astype(np.float64)
    ys, xs = np.mgrid[: crop.shape[0], : crop.shape[1]]
    return np.array([(xs * weight).sum(), (ys * weight).sum()]) / weight.sum()


@pytest.mark.parametrize("size", [20, 40, 80])
def test_face_crops_put_image_points_where_the_square_says(size: int) -> None:
    ys, xs = np.mgrid[:200, :300]
    blob = 250 * np.exp(-((xs - 120) ** 2 + (ys - 80) ** 2) / (2 * 3.0**2))  # at x 120, y 80
    image = np.repeat(blob[..., None], 3, axis=2).astype(np.uint8)
    square = np.array([[100.0, 60.0, 40.0]], np.float32)  # x0, y0, side
    crop = face_crops(image, square, size)[0]
    assert crop.shape == (size, size, 3)
    scale = size / 40.0
    np.testing.assert_allclose(_centroid(crop), [20 * scale, 20 * scale], atol=0.05 * scale)


def test_face_crops_repeat_the_edge_beyond_the_image() -> None:
    image = np.full((50, 60, 3), 90, np.uint8)
    image[:, :5] = 200
    crops = face_crops(image, np.array([[-30.0, -10.0, 40.0], [500.0, 500.0, 30.0]]), 16)
    assert crops.shape == (2, 16, 16, 3)
    assert crops[0, :, 0, 0].min() == 200  # left of the image: its first columns repeated
    assert (crops[1] == 0).all()  # wholly outside: nothing to read, no error


def test_crop_squares_are_centred_on_the_box() -> None:
    squares = crop_squares(np.array([[10.0, 20.0, 50.0, 100.0]]))
    x0, y0, side = squares[0]
    assert side == pytest.approx(1.15 * 80)
    assert (x0 + side / 2, y0 + side / 2) == pytest.approx((30.0, 60.0))


def _constant_refiner(units: np.ndarray) -> LandmarkRefiner:
    refiner = LandmarkRefiner(RefinerSpec(size=16, widths=(4, 8)))
    with torch.no_grad():
        refiner.points.weight.zero_()
        refiner.points.bias.copy_(torch.from_numpy(units.reshape(-1)))
    return refiner.eval()


UNITS = np.array([[0.3, 0.4], [0.7, 0.4], [0.5, 0.6], [0.35, 0.75], [0.65, 0.75]], np.float32)


def test_refined_points_map_from_crop_units_to_image_pixels() -> None:
    boxes = np.array([[10.0, 20.0, 50.0, 60.0], [100.0, 0.0, 200.0, 120.0]], np.float32)
    image = np.zeros((240, 320, 3), np.uint8)
    points = refine_landmarks(_constant_refiner(UNITS), image, boxes, THUNDER.normalization)
    squares = crop_squares(boxes)
    for i, (x0, y0, side) in enumerate(squares):
        np.testing.assert_allclose(points[i], UNITS * side + [x0, y0], atol=1e-4)
    none = refine_landmarks(_constant_refiner(UNITS), image, boxes[:0], THUNDER.normalization)
    assert none.shape == (0, 5, 2)


def test_detector_uses_the_landmark_stage_its_file_holds(tmp_path: Path, shared_data: Path) -> None:
    detector_model = load_model(card_file(THUNDER))
    with_stage, without = tmp_path / "with.pt", tmp_path / "without.pt"
    save_model(detector_model, with_stage, refiner=_constant_refiner(UNITS))
    save_model(detector_model, without)
    assert load_refiner(without) is None
    assert isinstance(load_refiner(with_stage), LandmarkRefiner)
    crop = next(c for c in load_landmarks5(shared_data) if c.held_out)
    image = np.pad(read_rgb(shared_data / crop.path), ((40, 40), (40, 40), (0, 0)), mode="edge")

    refined = ThunderDetector(weights=with_stage).detect(image)
    head = ThunderDetector(weights=with_stage, refine_landmarks=False).detect(image)
    plain = ThunderDetector(weights=without).detect(image)
    assert refined and head and plain
    x0, y0, side = crop_squares(refined[0].box[None])[0]
    np.testing.assert_allclose(refined[0].landmarks, UNITS * side + [x0, y0], atol=1e-3)
    np.testing.assert_allclose(head[0].landmarks, plain[0].landmarks, atol=1e-5)
    assert np.abs(head[0].landmarks - refined[0].landmarks).max() > 1.0
    np.testing.assert_allclose(head[0].box, refined[0].box, atol=1e-5)  # boxes untouched


def test_landmark_config_is_checked() -> None:
    shipped = load_landmark_config(Path(__file__).parents[1] / "configs" / "thunder_landmarks.yaml")
    assert shipped.export == "src/facesphere/assets/thunder_snet49.pt"
    validate_landmarks(LandmarkTrainConfig())
    with pytest.raises(ConfigError, match="size"):
        validate_landmarks(LandmarkTrainConfig(size=50))
    with pytest.raises(ConfigError, match="widths"):
        validate_landmarks(LandmarkTrainConfig(widths=[]))
    with pytest.raises(ConfigError, match="epochs"):
        validate_landmarks(LandmarkTrainConfig(epochs=0))


def test_train_landmarks_command_writes_a_detector_with_the_stage(
    tmp_path: Path, shared_data: Path
) -> None:
    config = tmp_path / "landmarks.yaml"
    config.write_text(
        f"size: 16\nwidths: [8, 16]\nepochs: 2\nbatch_size: 8\nlimit: 24\nthreads: 1\n"
        f"progress: false\noutput: {tmp_path / 'run'}\n"
    )
    result = runner.invoke(app, ["train-landmarks", "--config", str(config)])
    assert result.exit_code == 0, result.output
    model_path = tmp_path / "run" / "model.pt"
    refiner = load_refiner(model_path)
    assert refiner is not None and refiner.spec == RefinerSpec(16, (8, 16))
    rows = (tmp_path / "run" / "metrics.csv").read_text().strip().splitlines()
    assert len(rows) == 3  # header + one row per epoch
    assert all(np.isfinite(float(r.split(",")[2])) for r in rows[1:])
    # the detector's weights travel unchanged beside the new stage
    got, want = load_model(model_path).state_dict(), load_model(card_file(THUNDER)).state_dict()
    assert all(torch.equal(got[k], want[k]) for k in want)
    bad = runner.invoke(app, ["train-landmarks", "--config", str(config), "--set", "size=15"])
    assert bad.exit_code != 0


def test_bundled_landmark_stage_beats_the_head_on_held_out_crops(shared_data: Path) -> None:
    crops = [c for c in load_landmarks5(shared_data) if c.held_out][:60]
    refined = ThunderDetector()
    head = ThunderDetector(refine_landmarks=False)
    errors: dict[str, list[float]] = {"refined": [], "head": []}
    for crop in crops:
        image = np.pad(read_rgb(shared_data / crop.path), ((40, 40), (40, 40), (0, 0)), "edge")
        points = crop.points + 40
        iod = float(np.linalg.norm(points[0] - points[1]))
        mid = points[:2].mean(axis=0)
        for name, detector in (("refined", refined), ("head", head)):
            found = [
                d
                for d in detector.detect(image)
                if d.box[0] < mid[0] < d.box[2] and d.box[1] < mid[1] < d.box[3]
            ]
            if found:
                error = np.linalg.norm(found[0].landmarks - points, axis=1).mean() / iod
                errors[name].append(float(error))
    assert len(errors["refined"]) >= 40
    assert np.mean(errors["refined"]) < 0.075
    assert np.mean(errors["refined"]) < 0.85 * np.mean(errors["head"])


def test_cached_embeddings_name_the_detector_version(monkeypatch: pytest.MonkeyPatch) -> None:
    """Embeddings cached with thunder v2's points are not served for v3's."""
    from facesphere.detect import DETECTORS
    from facesphere.eval.verification import pipeline_key

    config = {"detector": "thunder", "recognizer": "sface", "flip": True}
    now = pipeline_key(config, "centre", "central")
    assert json.loads(now)["detector_version"] == THUNDER.version
    DETECTORS.card("thunder")  # loads the registry before it is patched
    monkeypatch.setitem(DETECTORS._cards, "thunder", THUNDER.derive(version="2"))
    assert pipeline_key(config, "centre", "central") != now
