"""Issue 13's REST defects through a real `facesphere serve` on 127.0.0.1 (the ASGI-level tests
are beside the code they test): no request answers 500, and nothing bad is stored."""

from __future__ import annotations

import io
import shutil
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from facesphere.serve.keys import KeyStore
from facesphere.serve.process import ServerProcess


def _png(height: int, width: int) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.full((height, width, 3), 128, np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, str]]:
    home = tmp_path_factory.mktemp("hardened")
    _, key = KeyStore(home / "keys.sqlite").create("attack", "write")
    with ServerProcess(home) as process:
        yield process, key


@pytest.fixture
def client(server: tuple[ServerProcess, str]) -> Iterator[httpx.Client]:
    process, key = server
    with httpx.Client(
        base_url=process.url,
        headers={"Authorization": f"Bearer {key}"},
        timeout=120.0,
        trust_env=False,
    ) as http:
        yield http


@pytest.fixture(scope="module")
def cnn_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, str]]:
    """A server on dlib's MMOD detector, the one a 1x1 photo used to crash."""
    home = tmp_path_factory.mktemp("hardened-cnn")
    _, key = KeyStore(home / "keys.sqlite").create("attack", "write")
    with ServerProcess(home, extra_args=["--detector", "cnn"]) as process:
        yield process, key


@pytest.mark.parametrize("shape", [(1, 1), (5, 5), (4, 4000)])
@pytest.mark.parametrize("which", ["server", "cnn_server"])
def test_tiny_images_have_no_face(
    request: pytest.FixtureRequest, which: str, shape: tuple[int, int]
) -> None:
    process, key = request.getfixturevalue(which)
    tiny = _png(*shape)
    with httpx.Client(
        base_url=process.url, headers={"Authorization": f"Bearer {key}"}, trust_env=False
    ) as http:
        detected = http.post("/v1/detect", files={"image": ("tiny.png", tiny)})
        assert detected.status_code == 200, detected.text
        assert detected.json()["faces"] == []
        verified = http.post(
            "/v1/verify", files={"image_a": ("a.png", tiny), "image_b": ("b.png", tiny)}
        )
        assert verified.status_code == 422, verified.text
        assert "image_a" in verified.text
        assert http.put("/v1/galleries/tiny").status_code in (200, 201)
        identified = http.post("/v1/galleries/tiny/identify", files={"image": ("t.png", tiny)})
        assert identified.status_code == 200, identified.text
        assert identified.json()["faces"] == []


def _nested(depth: int) -> str:
    """JSON text of a mapping nested `depth` deep (too deep for `json.dumps` to write)."""
    return '{"k": ' * depth + '"leaf"' + "}" * depth


@pytest.mark.parametrize("depth", [300, 5000])
def test_deep_metadata_is_refused_and_not_stored(client: httpx.Client, depth: int) -> None:
    assert client.put("/v1/galleries/deep").status_code in (200, 201)
    body = f'{{"name": "nested{depth}", "metadata": {_nested(depth)}}}'
    answer = client.post(
        "/v1/galleries/deep/subjects",
        content=body,
        headers={"content-type": "application/json"},
    )
    assert answer.status_code == 422, answer.text
    listed = client.get("/v1/galleries/deep/subjects")
    assert listed.status_code == 200, listed.text
    assert f"nested{depth}" not in listed.text


def test_lone_surrogate_name_is_refused(client: httpx.Client) -> None:
    assert client.put("/v1/galleries/names").status_code in (200, 201)
    answer = client.post(
        "/v1/galleries/names/subjects",
        content=b'{"name": "a\\ud800b"}',
        headers={"content-type": "application/json"},
    )
    assert answer.status_code == 422, answer.text
    assert client.get("/v1/galleries/names/subjects").status_code == 200


def test_foreign_and_garbage_databases_are_not_taken_over(
    client: httpx.Client, server: tuple[ServerProcess, str]
) -> None:
    folder = server[0].home / "galleries"
    folder.mkdir(exist_ok=True)
    foreign = folder / "foreign.sqlite"
    with sqlite3.connect(foreign) as db:
        db.execute("CREATE TABLE invoices (id INTEGER PRIMARY KEY, total REAL)")
        db.execute("INSERT INTO invoices (total) VALUES (12.5)")
    (folder / "garbage.sqlite").write_bytes(b"this is not a database" * 100)

    for name in ("foreign", "garbage"):
        for answer in (client.put(f"/v1/galleries/{name}"), client.get(f"/v1/galleries/{name}")):
            assert answer.status_code in (409, 422), answer.text
    with sqlite3.connect(foreign) as db:
        tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master")}
        mode = db.execute("PRAGMA journal_mode").fetchone()[0]
    assert tables == {"invoices"}
    assert mode != "wal"


def test_a_deleted_gallery_stops_answering(
    client: httpx.Client, server: tuple[ServerProcess, str]
) -> None:
    assert client.put("/v1/galleries/doomed").status_code in (200, 201)
    assert client.get("/v1/galleries/doomed").status_code == 200
    folder = server[0].home / "galleries"
    for path in folder.glob("doomed*"):
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    assert client.get("/v1/galleries/doomed").status_code == 404
    assert client.get("/v1/galleries/doomed/subjects").status_code == 404
    assert not Path(folder / "doomed.sqlite").exists()
