"""API keys: hashed storage, scopes, revocation and the `facesphere keys` commands."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
from typer.testing import CliRunner

from facesphere.cli.main import app as cli_app
from facesphere.gallery.folder import valid_gallery_name
from facesphere.serve.keys import KeyNotFoundError, KeyStore, KeyStoreError


@pytest.fixture
def store(tmp_path: Path) -> KeyStore:
    return KeyStore(tmp_path / "keys.sqlite")


def test_create_authenticate_and_scopes(store: KeyStore) -> None:
    key, secret = store.create("alice", "read")
    assert secret.startswith(f"fs_{key.id}_")
    found = store.authenticate(secret)
    assert found is not None and found.id == key.id and found.scope == "read"
    assert found.allows("read") and not found.allows("write")
    writer, writer_secret = store.create("bob", "write", gallery="team-a")
    found = store.authenticate(writer_secret)
    assert found is not None
    assert found.allows("write", "team-a") and found.allows("read", "team-a")
    assert not found.allows("read", "team-b") and not found.allows("write", "team-b")
    assert writer.gallery == "team-a"


def test_wrong_secrets_are_refused(store: KeyStore) -> None:
    key, secret = store.create("alice", "write")
    flipped = secret[:-1] + ("A" if secret[-1] != "A" else "B")
    assert store.authenticate(flipped) is None
    other_id = "0" * 12 if key.id != "0" * 12 else "1" * 12
    assert store.authenticate(secret.replace(key.id, other_id)) is None
    for bad in ("", "fs_", "Bearer " + secret, secret + " ", "fs_zz_" + "a" * 40):
        assert store.authenticate(bad) is None


def test_secret_is_not_stored(store: KeyStore) -> None:
    _, secret = store.create("alice", "write")
    secret_part = secret.split("_", 2)[2]
    raw = b"".join(p.read_bytes() for p in store.path.parent.glob("keys.sqlite*"))
    assert secret_part.encode() not in raw
    assert secret.encode() not in raw
    assert len(raw) > 0
    assert stat.S_IMODE(os.stat(store.path).st_mode) & 0o077 == 0


def test_revoke_by_id_or_name(store: KeyStore) -> None:
    first, first_secret = store.create("alice", "read")
    second, second_secret = store.create("bob", "write")
    assert store.revoke(first.id).id == first.id
    assert store.authenticate(first_secret) is None
    assert store.revoke("bob").id == second.id
    assert store.authenticate(second_secret) is None
    with pytest.raises(KeyNotFoundError):
        store.revoke("bob")
    assert store.list_keys() == []
    assert [k.name for k in store.list_keys(include_revoked=True)] == ["alice", "bob"]
    # A revoked key's name can be used again.
    _, again = store.create("alice", "read")
    assert store.authenticate(again) is not None


def test_bad_key_requests(store: KeyStore) -> None:
    store.create("alice", "read")
    with pytest.raises(KeyStoreError, match="already named"):
        store.create("alice", "write")
    with pytest.raises(KeyStoreError, match="scope"):
        store.create("carol", "admin")
    with pytest.raises(KeyStoreError, match="gallery"):
        store.create("carol", "read", gallery="../etc")
    with pytest.raises(KeyStoreError, match="name"):
        store.create("  ", "read")


def test_missing_file_means_no_keys(tmp_path: Path) -> None:
    store = KeyStore(tmp_path / "nowhere" / "keys.sqlite")
    assert store.list_keys() == []
    assert store.authenticate("fs_" + "a" * 12 + "_" + "b" * 43) is None
    assert not store.path.exists()


@pytest.mark.parametrize(
    ("name", "ok"),
    [
        ("people", True),
        ("team-a_1.v2", True),
        ("", False),
        ("..", False),
        ("a/b", False),
        ("a b", False),
        (".hidden", False),
        ("x" * 129, False),
    ],
)
def test_gallery_names(name: str, ok: bool) -> None:
    assert valid_gallery_name(name) is ok


def test_keys_cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FACESPHERE_HOME", str(tmp_path))
    runner = CliRunner()
    result = runner.invoke(
        cli_app,
        ["keys", "create", "--name", "ci", "--scope", "write", "--gallery", "g1", "--json"],
    )
    assert result.exit_code == 0, result.output
    made = json.loads(result.stdout)
    assert made["key"].startswith("fs_") and made["scope"] == "write" and made["gallery"] == "g1"
    assert KeyStore(tmp_path / "keys.sqlite").authenticate(made["key"]) is not None

    listed = runner.invoke(cli_app, ["keys", "list", "--json"])
    assert listed.exit_code == 0, listed.output
    rows = json.loads(listed.stdout)
    assert [r["id"] for r in rows] == [made["id"]]
    assert made["key"] not in listed.stdout and "key" not in rows[0]
    table = runner.invoke(cli_app, ["keys", "list"])
    assert made["id"] in table.stdout and made["key"] not in table.stdout

    duplicate = runner.invoke(cli_app, ["keys", "create", "--name", "ci", "--scope", "read"])
    assert duplicate.exit_code == 2
    bad_scope = runner.invoke(cli_app, ["keys", "create", "--name", "x", "--scope", "admin"])
    assert bad_scope.exit_code != 0

    revoked = runner.invoke(cli_app, ["keys", "revoke", "ci"])
    assert revoked.exit_code == 0, revoked.output
    assert KeyStore(tmp_path / "keys.sqlite").authenticate(made["key"]) is None
    again = runner.invoke(cli_app, ["keys", "revoke", made["id"]])
    assert again.exit_code == 2 and "no active key" in again.output


def test_keys_cli_broken_key_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FACESPHERE_HOME", str(tmp_path))
    (tmp_path / "keys.sqlite").write_bytes(b"not a database, " * 100)
    runner = CliRunner()
    for args in (["list"], ["create", "--name", "x"], ["revoke", "x"]):
        result = runner.invoke(cli_app, ["keys", *args])
        assert result.exit_code == 1, (args, result.output)
        assert result.stderr.startswith("error: ") and "key file" in result.stderr
        assert "Traceback" not in result.output
