"""`facesphere embed` and `gallery enroll` as batch runs: killed in the middle and run again,
with the local pool or on Ray, embed writes what one clean run writes and analyses no photo
twice; enroll on Ray stores and reports what it stores and reports with the local pool."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import facesphere
from facesphere.cli.main import app

PHOTOS = 20  # three chunks of 8: a kill after the first leaves work for the second run


def embed(folder: Path, out: Path, *extra: str, kill_after: int | None = None) -> dict:
    """Run `facesphere embed` in a subprocess of its own process group; with `kill_after`,
    SIGKILL the whole group (the command, its workers, a local Ray cluster: what an
    interrupted job loses) once that many photos are in its progress journal, and return {}."""
    env = dict(os.environ)
    root = str(Path(facesphere.__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join([root, env.get("PYTHONPATH", "")])
    command = [sys.executable, "-m", "facesphere", "embed", str(folder), "-o", str(out)]
    log = out.with_name(out.name + ".log")
    with open(log, "wb") as stdout:
        process = subprocess.Popen(
            [*command, "--json", *extra],
            env=env,
            stdout=stdout,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        if kill_after is None:
            assert process.wait(timeout=900) == 0
            return json.loads(log.read_text())
        progress = out.with_name(out.name + ".progress")
        deadline = time.monotonic() + 900
        while time.monotonic() < deadline and process.poll() is None:
            if progress.exists() and progress.read_bytes().count(b"\n") > kill_after:
                break
            time.sleep(0.2)
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    assert progress.exists() and not out.exists()
    return {}


@pytest.fixture(scope="module")
def photos(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """20 LFW photos and one broken file, in one folder."""
    folder = tmp_path_factory.mktemp("photos")
    people = sorted((shared_data / "lfw" / "images").iterdir())
    for path in [p for person in people[:12] for p in sorted(person.iterdir())][:PHOTOS]:
        shutil.copy(path, folder / path.name)
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    return folder


@pytest.fixture(scope="module")
def clean(photos: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    out = tmp_path_factory.mktemp("clean") / "faces.npz"
    summary = embed(photos, out, "-j", "2")
    assert summary["resumed"] == 0 and len(summary["errors"]) == 1
    return dict(np.load(out))


def assert_same_output(one: dict, two: dict) -> None:
    for key in ("paths", "face_index", "no_face", "errors"):
        assert one[key].tolist() == two[key].tolist(), key
    np.testing.assert_allclose(one["boxes"], two["boxes"], atol=1e-3)
    np.testing.assert_allclose(one["embeddings"], two["embeddings"], atol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("where", [[], ["--ray", "local"]], ids=["local-pool", "ray"])
def test_a_killed_run_resumes_to_the_clean_result(
    photos: Path, clean: dict, tmp_path: Path, where: list[str]
) -> None:
    out = tmp_path / "faces.npz"
    embed(photos, out, "-j", "2", *where, kill_after=8)
    progress = out.with_name("faces.npz.progress")
    complete = progress.read_bytes().split(b"\n")[1:-1]  # after the header, before a cut line
    journaled = [json.loads(line)["path"] for line in complete]
    assert 8 <= len(journaled) < PHOTOS + 1
    summary = embed(photos, out, "-j", "2", *where)
    assert summary["resumed"] == len(journaled)  # what the first run did is not done again
    assert not progress.exists()
    assert_same_output(clean, dict(np.load(out)))


def test_ray_missing_is_named_before_any_work(
    photos: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # as if it were not installed
    out = tmp_path / "faces.npz"
    result = CliRunner().invoke(app, ["embed", str(photos), "-o", str(out), "--ray", "local"])
    assert result.exit_code == 2
    assert "pip install 'facesphere[ray]'" in result.output
    assert not out.exists() and not out.with_name("faces.npz.progress").exists()


@pytest.mark.slow
def test_enroll_on_ray_stores_what_the_local_pool_stores(photos: Path, tmp_path: Path) -> None:
    from facesphere.gallery import Gallery

    lfw = sorted(str(p) for p in photos.glob("*.jpg") if p.name != "broken.jpg")
    files = [*lfw[:3], str(photos / "broken.jpg")]
    stored, reports = {}, {}
    for where in ([], ["--ray", "local"]):
        path = tmp_path / f"{len(where)}.db"
        args = ["gallery", "enroll", str(path), "-s", "someone", *files, "--create", "--skip-bad"]
        result = CliRunner().invoke(app, [*args, "--face", "largest", "--json", *where])
        assert result.exit_code == 0, result.output
        report = json.loads(result.stdout)
        assert [bad["image"] for bad in report["unreadable"]] == [files[-1]]
        reports[len(where)] = {k: v for k, v in report.items() if k != "face_ids"}
        assert not path.with_name(path.name + ".progress").exists()
        with Gallery(path) as gallery:
            stored[len(where)] = gallery.faces("someone", embeddings=True)
    assert reports[0] == reports[2]  # the same photos enrolled, the same one refused, same reason
    local, ray = stored[0], stored[2]
    assert [f.sha256 for f in local] == [f.sha256 for f in ray] and len(local) == 3
    for one, two in zip(local, ray):  # this process runs torch on more threads than an actor
        np.testing.assert_allclose(one.embedding, two.embedding, atol=1e-4)
