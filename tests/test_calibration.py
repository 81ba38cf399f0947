"""Calibrated thresholds: operating points from scores, FAR interpolation, identification
thresholds that rise with the gallery's size, and the shipped cards' calibrations."""

from __future__ import annotations

import math

import numpy as np
import pytest

from facesphere.cards import Calibration, ModelCard, OperatingPoint, Threshold
from facesphere.errors import ConfigError, DataError, ModelError
from facesphere.eval.calibration import (
    CALIBRATED_FARS,
    choose_fusion_weight,
    measured_fpir,
    operating_points,
    pair_scores,
    threshold_at_far,
)
from facesphere.pretrained.cards import DLIB_RESNET, DLIB_RESNET_SFACE, SFACE

POINTS = (
    OperatingPoint(1e-2, 0.50, 0.01),
    OperatingPoint(1e-3, 0.60, 0.05),
    OperatingPoint(1e-4, 0.70, 0.20),
)
CALIBRATION = Calibration("dev", POINTS, genuine_pairs=10, impostor_pairs=10_000)


def test_threshold_at_far_accepts_that_share_of_impostors() -> None:
    impostor = np.arange(1000) / 1000.0  # 0.000 .. 0.999
    threshold = threshold_at_far(impostor, 0.01)
    assert np.mean(impostor >= threshold) == pytest.approx(0.01)
    assert 0.989 < threshold < 0.990
    with pytest.raises(DataError):
        threshold_at_far(impostor, 0.0)


def test_operating_points_measure_frr_at_each_far() -> None:
    rng = np.random.default_rng(0)
    impostor = rng.normal(0.0, 0.1, 200_000)
    genuine = rng.normal(0.5, 0.1, 5_000)
    points = operating_points(genuine, impostor, (1e-2, 1e-3, 1e-4))
    assert [p.far for p in points] == [1e-2, 1e-3, 1e-4]
    assert points[0].threshold < points[1].threshold < points[2].threshold
    for point in points:
        assert np.mean(impostor >= point.threshold) == pytest.approx(point.far, rel=0.1)
        assert point.frr == pytest.approx(np.mean(genuine < point.threshold), abs=1e-4)
    with pytest.raises(DataError, match="cannot measure"):
        operating_points(genuine, impostor[:100], (1e-4,))


def test_pair_scores_split_genuine_from_impostor() -> None:
    labels = np.array([0, 0, 1])
    similarity = np.array([[1.0, 0.9, 0.1], [0.9, 1.0, 0.2], [0.1, 0.2, 1.0]])
    genuine, impostor = pair_scores(similarity, labels)
    assert genuine.tolist() == [0.9] and sorted(impostor.tolist()) == [0.1, 0.2]


def test_fusion_weight_prefers_the_informative_recognizer() -> None:
    rng = np.random.default_rng(1)
    labels = np.repeat(np.arange(40), 5)
    same = labels[:, None] == labels[None]
    good = np.where(same, 0.8, 0.0) + rng.normal(0, 0.05, same.shape)
    noise = rng.normal(0, 0.3, same.shape)
    good, noise = (good + good.T) / 2, (noise + noise.T) / 2
    weight, tried = choose_fusion_weight(good, noise, labels, fars=(1e-2,), step=0.25)
    assert set(tried) == {0.0, 0.25, 0.5, 0.75, 1.0}
    assert weight >= 0.75 and tried[weight] <= tried[0.0]


def test_at_far_interpolates_in_log_far_and_refuses_outside() -> None:
    assert CALIBRATION.at_far(1e-3) == (0.60, 0.05)
    value, frr = CALIBRATION.at_far(math.sqrt(1e-3 * 1e-4))  # half-way in log FAR
    assert value == pytest.approx(0.65) and frr == pytest.approx(0.125)
    with pytest.raises(ConfigError, match="outside the calibrated range"):
        CALIBRATION.at_far(1e-5)
    with pytest.raises(ModelError):
        Calibration("dev", POINTS[::-1], 1, 1)  # FAR must decrease


def test_identification_threshold_rises_with_gallery_size() -> None:
    small = CALIBRATION.identification(1, fpir=1e-2)
    assert small.value == pytest.approx(0.50) and small.far == pytest.approx(1e-2)
    ten = CALIBRATION.identification(10, fpir=1e-2)
    # FPIR = 1 - (1 - FAR)^N, so FAR = 1 - 0.99^(1/10)
    assert ten.far == pytest.approx(1 - 0.99 ** (1 / 10))
    assert 1 - (1 - ten.far) ** 10 == pytest.approx(0.01)
    assert small.value < ten.value < CALIBRATION.identification(50, fpir=1e-2).value
    assert (ten.fpir, ten.gallery_size) == (1e-2, 10)
    huge = CALIBRATION.identification(10**9, fpir=1e-2)
    assert huge.value == 0.70 and "too large" in huge.note
    with pytest.raises(ConfigError):
        CALIBRATION.identification(10, fpir=1.5)


def test_card_thresholds_come_from_its_calibration() -> None:
    card = ModelCard(
        "m", "1", "recognition", "-", "-", embedding_dim=4, template="standard112",
        input_size=(112, 112), calibration=CALIBRATION,
    )  # fmt: skip
    assert card.verification_threshold().far == 1e-3  # the default FAR
    assert card.verification_threshold(1e-2).value == 0.50
    assert ModelCard.from_json(card.to_json()) == card
    bare = card.derive(calibration=None)
    with pytest.raises(ConfigError, match="no calibrated verify threshold"):
        bare.verification_threshold()
    described = card.identification_threshold(30).describe()
    assert described["gallery_size"] == 30 and described["fpir"] == 0.01
    assert described["threshold"] > card.verification_threshold(1e-2).value
    assert Threshold.given(0.3).describe()["far"] is None


@pytest.mark.parametrize("card", [DLIB_RESNET, SFACE, DLIB_RESNET_SFACE])
def test_shipped_recognizers_are_calibrated_on_celeba299(card: ModelCard) -> None:
    calibration = card.calibration
    assert calibration is not None and "celeba299" in calibration.dataset
    assert tuple(p.far for p in calibration.points) == CALIBRATED_FARS
    thresholds = [p.threshold for p in calibration.points]
    assert thresholds == sorted(thresholds)  # a lower FAR needs a higher threshold
    frrs = [p.frr for p in calibration.points]
    assert frrs == sorted(frrs) and all(0.0 <= f < 1.0 for f in frrs)
    assert calibration.impostor_pairs > 10_000_000 and calibration.genuine_pairs > 50_000
    verify = card.verification_threshold()
    assert verify.far == 1e-3 and 0.0 < verify.value < 1.0


def test_fused_card_describes_its_members() -> None:
    card = DLIB_RESNET_SFACE
    assert card.templates == ("dlib150", "standard112")
    assert [m.card for m in card.members] == [DLIB_RESNET, SFACE]
    assert sum(m.weight for m in card.members) == pytest.approx(1.0)
    assert card.embedding_dim == 256 and f"w{card.members[0].weight:.2f}" in card.version
    assert ModelCard.from_json(card.to_json()) == card
    # the fused calibration is better than either member's at the default FAR
    frr = {c.name: c.verification_threshold().frr for c in (DLIB_RESNET, SFACE, card)}
    assert frr[card.name] <= min(frr[DLIB_RESNET.name], frr[SFACE.name])


def test_measured_fpir_counts_strangers_above_threshold() -> None:
    gallery = np.eye(3, dtype=np.float32)
    strangers = np.array([[0.9, 0.1, 0.0], [0.0, 0.2, 0.1]], np.float32)
    assert measured_fpir(gallery, strangers, 0.5) == (0.5, 2)
