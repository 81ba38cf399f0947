"""The converted-weight cache: written once, private, read back, and rebuilt when damaged,
foreign or unwritable, always giving the same boxes, points and embeddings."""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from facesphere.pretrained import dlib_format, weight_cache
from facesphere.pretrained.cards import DLIB_MMOD, DLIB_RESNET, DLIB_SHAPE5
from facesphere.pretrained.dlib_mmod import load_dlib_mmod
from facesphere.pretrained.dlib_resnet import load_dlib_resnet
from facesphere.pretrained.dlib_shape import load_dlib_shape5

CARDS = (DLIB_MMOD, DLIB_SHAPE5, DLIB_RESNET)


def _outputs(image: np.ndarray) -> dict[str, np.ndarray]:
    """Boxes, points and embeddings of `image` with models loaded afresh (no process memo)."""
    from facesphere.detect.mmod import MMODDetector

    weight_cache._MEMO.clear()
    found = MMODDetector().detect_inclusive(image)
    boxes = np.stack([box for box, _ in found])
    points = load_dlib_shape5().predict(image, boxes)
    chip = torch.from_numpy(np.ascontiguousarray(image[50:200, 50:200])).permute(2, 0, 1)
    with torch.inference_mode():
        embedding = load_dlib_resnet()(chip[None].float()).numpy()
    return {"boxes": boxes, "points": points, "embedding": embedding}


def _no_conversion(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*_: object) -> None:
        raise AssertionError("the dlib file was read although the cache is valid")

    monkeypatch.setattr(dlib_format, "_load", refuse)


@pytest.fixture(scope="module")
def image(shared_data: Path) -> np.ndarray:
    path = shared_data / "lfw/images/Colin_Powell/Colin_Powell_0001.jpg"
    return np.asarray(Image.open(path).convert("RGB"))


@pytest.fixture(scope="module")
def reference(
    image: np.ndarray, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, dict[str, np.ndarray]]:
    """A home whose cache this test module filled, and the outputs of the first load."""
    home = tmp_path_factory.mktemp("home")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("FACESPHERE_HOME", str(home))
        outputs = _outputs(image)
    return home, outputs


def _same(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def test_cache_files_are_private_and_reused(
    reference: tuple[Path, dict[str, np.ndarray]],
    image: np.ndarray,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    home, first = reference
    monkeypatch.setenv("FACESPHERE_HOME", str(home))
    folder = weight_cache.weights_cache_dir()
    assert folder == home / "cache" / "weights"
    for path in (home / "cache", folder):
        assert stat.S_IMODE(path.stat().st_mode) == 0o700
    names = sorted(p.name for p in folder.iterdir())
    assert names == sorted(weight_cache.cache_path(card).name for card in CARDS)
    for card in CARDS:
        assert stat.S_IMODE(weight_cache.cache_path(card).stat().st_mode) == 0o600
    assert len(first["boxes"]) == 1 and first["points"].shape == (1, 5, 2)
    _no_conversion(monkeypatch)
    _same(_outputs(image), first)


@pytest.mark.parametrize("damage", ["garbled", "truncated", "foreign", "group-writable"])
def test_bad_cache_file_is_rebuilt(
    damage: str,
    reference: tuple[Path, dict[str, np.ndarray]],
    image: np.ndarray,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    home, first = reference
    folder = tmp_path / "cache" / "weights"
    folder.mkdir(parents=True)
    monkeypatch.setenv("FACESPHERE_HOME", str(tmp_path))
    # every card garbled; the other kinds of damage on the two quickly converted models only
    damaged = CARDS if damage == "garbled" else (DLIB_MMOD, DLIB_RESNET)
    for card in CARDS:
        good = (home / "cache" / "weights" / weight_cache.cache_path(card).name).read_bytes()
        if card not in damaged:
            bad = good
        elif damage == "garbled":
            middle = len(good) // 2
            bad = good[:middle] + bytes(b ^ 0x5A for b in good[middle : middle + 64])
            bad += good[middle + 64 :]
        elif damage == "truncated":
            bad = good[: len(good) // 3]
        elif damage == "foreign":  # another model's (valid) cache file under this name
            other = damaged[(damaged.index(card) + 1) % len(damaged)]
            bad = (home / "cache" / "weights" / weight_cache.cache_path(other).name).read_bytes()
        else:
            bad = good
        path = weight_cache.cache_path(card)
        path.write_bytes(bad)
        path.chmod(0o620 if damage == "group-writable" and card in damaged else 0o600)
    with caplog.at_level(logging.WARNING, logger=weight_cache.__name__):
        _same(_outputs(image), first)
    assert len(caplog.records) == len(damaged)
    for card in CARDS:
        path = weight_cache.cache_path(card)
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        good = home / "cache" / "weights" / path.name
        with np.load(path) as rebuilt, np.load(good) as expected:
            assert sorted(rebuilt.files) == sorted(expected.files)
            for name in expected.files:
                np.testing.assert_array_equal(rebuilt[name], expected[name])
    assert not [p for p in folder.iterdir() if p.name.startswith(".")], "temporary files left"


def test_unwritable_home_converts_in_memory(
    reference: tuple[Path, dict[str, np.ndarray]],
    image: np.ndarray,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    _, first = reference
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the home's parent should be")
    monkeypatch.setenv("FACESPHERE_HOME", str(blocker / "home"))
    with caplog.at_level(logging.WARNING, logger=weight_cache.__name__):
        _same(_outputs(image), first)
    assert any("cannot write the weight cache" in r.getMessage() for r in caplog.records)
    assert not (blocker / "home").exists()


def test_loaded_weights_are_independent_copies(monkeypatch: pytest.MonkeyPatch) -> None:
    """Training one loaded network must not change the next one built from the memo."""
    first = load_dlib_resnet()
    assert all(p.requires_grad for p in first.parameters())
    reference = first.fc.weight.detach().clone()
    with torch.no_grad():
        first.fc.weight.add_(1.0)
    second = load_dlib_resnet()
    assert (second.fc.weight == reference).all()


def test_mmod_layout_round_trips() -> None:
    _, layout = load_dlib_mmod()
    assert type(layout).from_dict(layout.to_dict()) == layout
    assert layout.windows == ((80, 80),) and len(layout.convs) == 7


def test_cache_path_is_keyed_by_source_digest(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FACESPHERE_HOME", "/somewhere")
    path = weight_cache.cache_path(DLIB_RESNET)
    assert path.parent == Path("/somewhere/cache/weights")
    assert DLIB_RESNET.sha256 is not None and DLIB_RESNET.sha256[:16] in path.name
    assert os.path.basename(weight_cache.cache_path(DLIB_MMOD)) != path.name
