"""`facesphere gallery ...` on a few real LFW photos: outputs, exit codes, nothing half-done."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from facesphere.cli.common import EXIT_BAD_INPUT, EXIT_NO_FACE
from facesphere.cli.main import app

runner = CliRunner()


@pytest.fixture(scope="module", autouse=True)
def shared_analyzer():
    """Build the face models once for this module instead of once per command."""
    from facesphere.cli.common import PipelineOptions

    cache = {}
    real = PipelineOptions.build

    def cached(self, **extra):
        key = repr((self, extra))
        if key not in cache:
            cache[key] = real(self, **extra)
        return cache[key]

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(PipelineOptions, "build", cached)
        yield


def lfw(root: Path, name: str, number: int) -> str:
    return str(root / "lfw" / "images" / name / f"{name}_{number:04d}.jpg")


@pytest.fixture(scope="module")
def enrolled(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A gallery with Colin Powell (2 photos) and Angelina Jolie and Serena Williams (1 each)."""
    path = tmp_path_factory.mktemp("gallery") / "people.db"
    created = runner.invoke(app, ["gallery", "create", str(path), "--json"])
    assert created.exit_code == 0, created.output
    assert json.loads(created.stdout)["dim"] == 256  # the default recognizer, fused
    for subject, photos in {
        "Colin Powell": [lfw(shared_data, "Colin_Powell", 1), lfw(shared_data, "Colin_Powell", 2)],
        "Angelina Jolie": [lfw(shared_data, "Angelina_Jolie", 1)],
        "Serena Williams": [lfw(shared_data, "Serena_Williams", 1)],
    }.items():
        args = ["gallery", "enroll", str(path), "--subject", subject, *photos, "--json"]
        result = runner.invoke(app, [*args, "--metadata", '{"source": "lfw"}'])
        assert result.exit_code == 0, result.output
        report = json.loads(result.stdout)
        assert len(report["face_ids"]) == len(photos) and report["no_face"] == []
    return path


def identify(gallery: Path, image: str, *extra: str) -> dict:
    result = runner.invoke(app, ["gallery", "identify", str(gallery), image, "--json", *extra])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_identify_known_and_unknown(enrolled: Path, shared_data: Path) -> None:
    powell = identify(enrolled, lfw(shared_data, "Colin_Powell", 3))
    face = powell["faces"][0]
    assert face["identity"] == "Colin Powell" and len(face["box"]) == 4
    assert len(face["matches"]) == 3 and face["matches"][0]["score"] >= powell["threshold"]
    assert face["score"] == face["matches"][0]["score"] and "detection_score" in face
    scores = [m["score"] for m in face["matches"]]
    assert scores == sorted(scores, reverse=True)
    jolie = identify(enrolled, lfw(shared_data, "Angelina_Jolie", 2), "--top-k", "1")
    assert jolie["faces"][0]["identity"] == "Angelina Jolie"
    assert len(jolie["faces"][0]["matches"]) == 1
    stranger = identify(enrolled, lfw(shared_data, "George_W_Bush", 1))["faces"][0]
    assert stranger["identity"] is None
    assert stranger["matches"][0]["score"] < powell["threshold"]
    # the threshold for a gallery of 3 subjects at the card's FPIR, and says so
    assert (powell["fpir"], powell["gallery_size"]) == (0.01, 3) and powell["far"] < 0.01
    loose = identify(enrolled, lfw(shared_data, "Colin_Powell", 3), "--fpir", "0.2")
    assert loose["fpir"] == 0.2 and loose["threshold"] < powell["threshold"]
    lenient = identify(enrolled, lfw(shared_data, "George_W_Bush", 1), "--threshold", "0.5")
    assert lenient["faces"][0]["identity"] == stranger["matches"][0]["subject"]
    text = runner.invoke(
        app, ["gallery", "identify", str(enrolled), lfw(shared_data, "Colin_Powell", 3)]
    )
    assert text.exit_code == 0 and "Colin Powell" in text.stdout


def test_list_export_and_remove(enrolled: Path, shared_data: Path, tmp_path: Path) -> None:
    copy = tmp_path / "copy.db"
    listed = runner.invoke(app, ["gallery", "list", str(enrolled), "--json"])
    assert listed.exit_code == 0, listed.output
    data = json.loads(listed.stdout)
    counts = {s["name"]: s["faces"] for s in data["subjects"]}
    assert counts == {"Colin Powell": 2, "Angelina Jolie": 1, "Serena Williams": 1}
    assert data["subjects"][0]["metadata"] == {"source": "lfw"}
    out = tmp_path / "export.npz"
    exported = runner.invoke(app, ["gallery", "export", str(enrolled), str(out), "--json"])
    assert exported.exit_code == 0 and json.loads(exported.stdout)["faces"] == 4
    npz = np.load(out)
    assert npz["embeddings"].shape == (4, 256) and sorted(npz["subjects"]) == sorted(counts)
    # work on a copy for the removal, made through the export/enroll-free path: a fresh gallery
    runner.invoke(app, ["gallery", "create", str(copy)])
    for subject, photo in [("Colin Powell", 1), ("Serena Williams", 1)]:
        name = subject.replace(" ", "_")
        result = runner.invoke(
            app, ["gallery", "enroll", str(copy), "-s", subject, lfw(shared_data, name, photo)]
        )
        assert result.exit_code == 0, result.output
    removed = runner.invoke(app, ["gallery", "remove", str(copy), "Colin Powell", "--json"])
    assert removed.exit_code == 0 and json.loads(removed.stdout)["faces_removed"] == 1
    after = identify(copy, lfw(shared_data, "Colin_Powell", 3))["faces"][0]
    assert after["identity"] is None and {m["subject"] for m in after["matches"]} == {
        "Serena Williams"
    }
    again = runner.invoke(app, ["gallery", "remove", str(copy), "Colin Powell"])
    assert again.exit_code == EXIT_BAD_INPUT and "no subject" in again.stderr


def assert_one_line_error(result, code: int, text: str) -> None:
    assert result.exit_code == code, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and text in lines[0]
    assert "Traceback" not in result.output


def test_errors_exit_codes_and_no_partial_enroll(
    enrolled: Path, shared_data: Path, blank: Path, corrupt: Path, tmp_path: Path
) -> None:
    missing = tmp_path / "missing.db"
    good = lfw(shared_data, "Serena_Williams", 2)
    assert_one_line_error(
        runner.invoke(app, ["gallery", "identify", str(missing), good]), 2, "not found"
    )
    assert_one_line_error(runner.invoke(app, ["gallery", "list", str(missing)]), 2, "not found")
    assert not missing.exists()
    assert_one_line_error(
        runner.invoke(app, ["gallery", "identify", str(enrolled), str(corrupt)]), 2, "corrupt"
    )
    assert_one_line_error(
        runner.invoke(app, ["gallery", "identify", str(enrolled), str(blank)]),
        EXIT_NO_FACE,
        "no face",
    )
    # one bad photo fails the whole request; nothing of it is stored
    before = runner.invoke(app, ["gallery", "list", str(enrolled), "--json"]).stdout
    enroll = ["gallery", "enroll", str(enrolled), "-s", "Serena Williams", good]
    assert_one_line_error(runner.invoke(app, [*enroll, str(blank)]), EXIT_NO_FACE, "blank.png")
    assert_one_line_error(runner.invoke(app, [*enroll, str(corrupt)]), 2, "corrupt.jpg")
    assert_one_line_error(runner.invoke(app, [*enroll, "--metadata", "[1]"]), 2, "JSON object")
    assert runner.invoke(app, ["gallery", "list", str(enrolled), "--json"]).stdout == before
    assert_one_line_error(runner.invoke(app, ["gallery", "create", str(enrolled)]), 2, "exists")
    # with --skip-bad the usable photos go in
    skipped = tmp_path / "skip.db"
    result = runner.invoke(
        app,
        [
            "gallery",
            "enroll",
            str(skipped),
            "--create",
            "-s",
            "Serena",
            good,
            str(blank),
            "--skip-bad",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["no_face"] == [str(blank)]
    assert "no face" in result.stderr
    other = tmp_path / "other.db"
    runner.invoke(app, ["gallery", "create", str(other), "--model", "arcface", "--dim", "512"])
    assert_one_line_error(
        runner.invoke(app, ["gallery", "identify", str(other), good]), 2, "arcface"
    )
