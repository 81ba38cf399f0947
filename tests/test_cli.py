"""The CLI: outputs and exit codes 0 (ok), 2 (bad input) and 3 (no face)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from facesphere.cli.main import app

runner = CliRunner()


@pytest.fixture(scope="module")
def photos(shared_data: Path) -> dict[str, Path]:
    root = shared_data / "lfw" / "images"
    return {
        "powell1": root / "Colin_Powell" / "Colin_Powell_0001.jpg",
        "powell2": root / "Colin_Powell" / "Colin_Powell_0002.jpg",
        "jolie": root / "Angelina_Jolie" / "Angelina_Jolie_0001.jpg",
    }


def test_detect_json_and_draw(photos: dict[str, Path], tmp_path: Path) -> None:
    drawn = tmp_path / "drawn.jpg"
    result = runner.invoke(app, ["detect", str(photos["jolie"]), "--json", "--draw", str(drawn)])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["width"] == 250 and len(data["faces"]) >= 1
    face = data["faces"][0]
    assert len(face["box"]) == 4 and len(face["landmarks"]) == 5 and face["score"] > 0
    original = np.asarray(Image.open(photos["jolie"]).convert("RGB"), dtype=int)
    with_boxes = np.asarray(Image.open(drawn).convert("RGB"), dtype=int)
    assert with_boxes.shape == original.shape
    assert np.abs(with_boxes - original).max() > 100  # something was drawn


def test_verify_same_and_different(photos: dict[str, Path]) -> None:
    same = runner.invoke(app, ["verify", str(photos["powell1"]), str(photos["powell2"]), "--json"])
    assert same.exit_code == 0, same.output
    data = json.loads(same.stdout)
    assert data["same"] is True and data["similarity"] >= data["threshold"]
    assert data["faces_a"] >= 1 and data["faces_b"] >= 1
    different = runner.invoke(
        app, ["verify", str(photos["powell1"]), str(photos["jolie"]), "--json"]
    )
    assert json.loads(different.stdout)["same"] is False
    text = runner.invoke(app, ["verify", str(photos["powell1"]), str(photos["jolie"])])
    assert text.exit_code == 0 and "DIFFERENT" in text.stdout
    strict = runner.invoke(
        app,
        [
            "verify",
            str(photos["powell1"]),
            str(photos["powell2"]),
            "--json",
            "--threshold",
            "0.9999",
        ],
    )
    assert json.loads(strict.stdout)["same"] is False
    every = runner.invoke(
        app, ["verify", str(photos["powell1"]), str(photos["jolie"]), "--all", "--json"]
    )
    rows = json.loads(every.stdout)["pairs"]
    assert len(rows) == json.loads(every.stdout)["faces_a"] * json.loads(every.stdout)["faces_b"]


def test_verify_far_picks_the_calibrated_operating_point(photos: dict[str, Path]) -> None:
    from facesphere.defaults import DEFAULT_RECOGNIZER
    from facesphere.pipeline.analyzer import recognizer_card

    card = recognizer_card(DEFAULT_RECOGNIZER, {})

    pair = ["verify", str(photos["powell1"]), str(photos["powell2"]), "--json"]
    default = json.loads(runner.invoke(app, pair).stdout)
    assert (default["far"], default["threshold"]) == (
        1e-3,
        card.verification_threshold().value,
    )
    assert "celeba299" in default["calibrated_on"] and default["frr"] is not None
    strict = runner.invoke(app, [*pair, "--far", "1e-5"])
    assert strict.exit_code == 0, strict.output
    data = json.loads(strict.stdout)
    assert data["far"] == 1e-5 and data["threshold"] > default["threshold"]
    assert data["threshold"] == card.verification_threshold(1e-5).value
    both = runner.invoke(app, [*pair, "--far", "1e-5", "--threshold", "0.5"])
    assert both.exit_code == 2 and "not both" in both.output
    outside = runner.invoke(app, [*pair, "--far", "0.5"])
    assert outside.exit_code == 2


def test_exit_code_3_without_a_face(photos: dict[str, Path], blank: Path) -> None:
    result = runner.invoke(app, ["verify", str(blank), str(photos["jolie"])])
    assert result.exit_code == 3
    assert f"{blank}: no face found" in result.stderr
    assert "Traceback" not in result.output


def test_exit_code_2_on_bad_images(photos: dict[str, Path], corrupt: Path, tmp_path: Path) -> None:
    for args in (
        ["verify", str(corrupt), str(photos["jolie"])],
        ["detect", str(corrupt)],
        ["detect", str(tmp_path / "missing.jpg")],
    ):
        result = runner.invoke(app, args)
        assert result.exit_code == 2, (args, result.output)
        assert result.stderr.startswith("error: ") and len(result.stderr.strip().splitlines()) == 1
        assert "Traceback" not in result.output
    bad_detector = runner.invoke(app, ["detect", str(photos["jolie"]), "--detector", "nope"])
    assert bad_detector.exit_code == 2 and "unknown detector" in bad_detector.stderr


def test_embed_lists_faceless_and_broken_files(
    photos: dict[str, Path], blank: Path, corrupt: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "photos"
    (folder / "sub").mkdir(parents=True)
    (folder / "sub" / "a.jpg").write_bytes(photos["powell1"].read_bytes())
    (folder / "b.jpg").write_bytes(photos["jolie"].read_bytes())
    out = tmp_path / "emb.npz"
    result = runner.invoke(
        app,
        [
            "embed",
            str(folder),
            str(blank),
            str(corrupt),
            "--out",
            str(out),
            "--workers",
            "1",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["images"] == 4 and summary["no_face"] == [str(blank)]
    assert len(summary["errors"]) == 1 and str(corrupt) in summary["errors"][0]
    data = np.load(out)
    assert set(data["paths"]) == {str(folder / "sub" / "a.jpg"), str(folder / "b.jpg")}
    assert data["embeddings"].shape == (len(data["paths"]), 256)
    assert data["boxes"].shape == (len(data["paths"]), 4)
    np.testing.assert_allclose(np.linalg.norm(data["embeddings"], axis=1), 1.0, atol=1e-5)
    assert list(data["no_face"]) == [str(blank)]


def test_evaluate_list_protocol(photos: dict[str, Path], tmp_path: Path) -> None:
    root = photos["jolie"].parents[1]
    rows = []
    for i in range(1, 5):
        rows.append(
            f"Colin_Powell/Colin_Powell_000{i}.jpg Colin_Powell/Colin_Powell_000{i + 1}.jpg 1"
        )
        rows.append(
            f"Colin_Powell/Colin_Powell_000{i}.jpg Angelina_Jolie/Angelina_Jolie_000{i}.jpg 0"
        )
    pair_file = tmp_path / "pairs.txt"
    pair_file.write_text("\n".join(rows) + "\n")
    report = tmp_path / "report.json"
    plot = tmp_path / "roc.png"
    result = runner.invoke(
        app,
        [
            "evaluate",
            "pairs",
            "--images",
            str(root),
            "--pairs",
            str(pair_file),
            "--protocol",
            "list",
            "--json",
            str(report),
            "--plot",
            str(plot),
            "--workers",
            "1",
            "--no-cache",
        ],
    )
    assert result.exit_code == 0, result.output
    data = json.loads(report.read_text())
    assert data["pairs"] == 8 and data["accuracy_mean"] == 1.0 and data["auc"] == 1.0
    assert set(data["tar_at_far"]) == {"0.001", "0.01"} and data["no_face"] == 0
    assert plot.stat().st_size > 1000
    bad = tmp_path / "bad.txt"
    bad.write_text("only_one_field\n")
    broken = runner.invoke(
        app, ["evaluate", "pairs", "--images", str(root), "--pairs", str(bad), "--protocol", "list"]
    )
    assert broken.exit_code == 2 and "line 1" in broken.stderr
