"""One galleries folder for the CLI and the service: `facesphere gallery VERB NAME` resolves a
bare name in it (`--galleries`, default `$FACESPHERE_HOME/galleries`), and `facesphere serve
--galleries DIR` serves the galleries there by name."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from facesphere.cli.main import app as cli_app
from facesphere.errors import ConfigError
from facesphere.gallery.folder import default_galleries_dir, gallery_names, resolve_gallery
from facesphere.serve.app import CONFIG_ENV, app_from_env
from facesphere.serve.config import ServeConfig
from facesphere.serve.keys import KeyStore
from facesphere.serve.process import ServerProcess

runner = CliRunner()


def lfw(root: Path, name: str, number: int) -> Path:
    return root / "lfw" / "images" / name / f"{name}_{number:04d}.jpg"


def test_gallery_arguments_are_names_or_paths(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FACESPHERE_HOME", str(tmp_path / "home"))
    assert default_galleries_dir() == tmp_path / "home" / "galleries"
    assert resolve_gallery("team") == tmp_path / "home" / "galleries" / "team.sqlite"
    assert resolve_gallery("team.v2", tmp_path) == tmp_path / "team.v2.sqlite"
    for path in ("people.db", "people.sqlite", "old.SQLITE3", "./team", "sub/team", "/x/team"):
        assert resolve_gallery(path, tmp_path) == Path(path), path
    url = "postgresql://app@db.internal/faces?gallery=team"
    assert resolve_gallery(url, tmp_path) == url  # a database URL is kept as it is
    for bad in ("bad name", ".hidden", "-x", "a$b"):
        with pytest.raises(ConfigError, match="invalid gallery name"):
            resolve_gallery(bad, tmp_path)
    refused = runner.invoke(cli_app, ["gallery", "list", "bad name"])
    assert refused.exit_code == 2 and "invalid gallery name" in refused.output


def test_named_galleries_in_the_default_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FACESPHERE_HOME", str(tmp_path))
    options = ["--model", "other-net", "--dim", "8", "--json"]
    created = runner.invoke(cli_app, ["gallery", "create", "team", *options])
    assert created.exit_code == 0, created.output
    assert (tmp_path / "galleries" / "team.sqlite").is_file()
    elsewhere = tmp_path / "elsewhere"
    other = runner.invoke(
        cli_app, ["gallery", "create", "team", "--galleries", str(elsewhere), *options]
    )
    assert other.exit_code == 0, other.output
    assert gallery_names(elsewhere) == ["team"] == gallery_names(tmp_path / "galleries")
    listed = runner.invoke(cli_app, ["gallery", "list", "team", "--json"])
    assert listed.exit_code == 0, listed.output
    assert json.loads(listed.stdout)["gallery"]["model"] == "other-net"
    missing = runner.invoke(cli_app, ["gallery", "list", "nobody"])
    assert missing.exit_code == 2 and "not found" in missing.output


def _serve_config(monkeypatch: pytest.MonkeyPatch, *args: str) -> ServeConfig:
    """The configuration `facesphere serve ARGS` leaves for its workers (uvicorn not run)."""
    import uvicorn

    monkeypatch.setenv(CONFIG_ENV, "")
    monkeypatch.setattr(uvicorn, "run", lambda *a, **k: None)
    result = runner.invoke(cli_app, ["serve", *args])
    assert result.exit_code == 0, result.output
    return ServeConfig.from_env()


def test_a_galleries_folder_or_a_database_of_galleries_not_both(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = "postgresql://app@db.internal/faces"
    with pytest.raises(ConfigError, match="not both"):
        ServeConfig(galleries=str(tmp_path), gallery_url=url)
    monkeypatch.setenv("FACESPHERE_HOME", str(tmp_path / "home"))
    assert _serve_config(monkeypatch, "--gallery-url", url).gallery_url == url
    result = runner.invoke(cli_app, ["serve", "--galleries", str(tmp_path), "--gallery-url", url])
    assert result.exit_code == 2
    assert "--galleries" in result.output and "--gallery-url" in result.output
    assert "not both" in result.output


def _enroll(galleries: Path, shared_data: Path) -> None:
    """`facesphere gallery enroll team --galleries DIR --create ...` for two people."""
    for subject, name in (("Colin Powell", "Colin_Powell"), ("Tony Blair", "Tony_Blair")):
        photos = [str(lfw(shared_data, name, 2)), str(lfw(shared_data, name, 3))]
        args = ["gallery", "enroll", "team", "--galleries", str(galleries), "--create"]
        result = runner.invoke(cli_app, [*args, "-s", subject, *photos, "--face", "central"])
        assert result.exit_code == 0, result.output


def test_serve_finds_the_cli_galleries(
    tmp_path: Path, shared_data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home, galleries = tmp_path / "home", tmp_path / "shared-galleries"
    monkeypatch.setenv("FACESPHERE_HOME", str(home))
    _enroll(galleries, shared_data)
    assert _serve_config(monkeypatch).galleries_path() == home / "galleries"
    config = _serve_config(monkeypatch, "--galleries", str(galleries))
    assert config.galleries_path() == galleries.resolve()
    assert ServeConfig.from_json(config.to_json()) == config
    key = KeyStore(home / "keys.sqlite").create("r", "read")[1]
    with TestClient(app_from_env()) as served:
        headers = {"Authorization": f"Bearer {key}"}
        assert served.get("/v1/galleries", headers=headers).json()["galleries"] == ["team"]
        photo = lfw(shared_data, "Colin_Powell", 1).read_bytes()
        found = served.post(
            "/v1/galleries/team/identify", files={"image": ("a.jpg", photo)}, headers=headers
        )
        assert found.status_code == 200, found.text
        assert found.json()["faces"][0]["identity"] == "Colin Powell"


@pytest.mark.slow
def test_a_real_server_serves_the_cli_galleries(tmp_path: Path, shared_data: Path) -> None:
    home, galleries = tmp_path / "home", tmp_path / "shared-galleries"
    _enroll(galleries, shared_data)
    key = KeyStore(home / "keys.sqlite").create("r", "read")[1]
    with (
        ServerProcess(home, extra_args=["--galleries", str(galleries)]) as server,
        httpx.Client(
            base_url=server.url, headers={"Authorization": f"Bearer {key}"}, timeout=120.0,
            trust_env=False,
        ) as http,
    ):  # fmt: skip
        assert http.get("/v1/galleries").json()["galleries"] == ["team"]
        photo = lfw(shared_data, "Tony_Blair", 1).read_bytes()
        found = http.post("/v1/galleries/team/identify", files={"image": ("a.jpg", photo)})
        assert found.status_code == 200, found.text
        identities = [face["identity"] for face in found.json()["faces"]]
        assert "Tony Blair" in identities
    assert not (home / "galleries").exists()  # nothing went to the home's default folder
