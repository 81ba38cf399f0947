"""Two `facesphere serve` processes on 127.0.0.1 pointed at one PostgreSQL database of
galleries (`--gallery-url`): what one changes, the other sees at its next request."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from facesphere.serve.keys import KeyStore
from facesphere.serve.process import ServerProcess

# Two servers each load the face models (about 50 s in all on 2 busy cores): in the default
# suite all the same, since consistent replicas are what the PostgreSQL back end is for.


def _photo(shared_data: Path, name: str, number: int) -> tuple[str, bytes]:
    path = shared_data / "lfw" / "images" / name / f"{name}_{number:04d}.jpg"
    return path.name, path.read_bytes()


@pytest.fixture(scope="module")
def replicas(
    tmp_path_factory: pytest.TempPathFactory, postgres_url: str
) -> Iterator[tuple[httpx.Client, httpx.Client]]:
    """Clients of two server processes sharing one database of galleries (and one key)."""
    home = tmp_path_factory.mktemp("replicas")
    _, key = KeyStore(home / "keys.sqlite").create("replicas", "write")
    args = ["--gallery-url", postgres_url]
    with ServerProcess(home, extra_args=args) as a, ServerProcess(home, extra_args=args) as b:
        headers = {"Authorization": f"Bearer {key}"}
        clients = [
            httpx.Client(base_url=s.url, headers=headers, timeout=120.0, trust_env=False)
            for s in (a, b)
        ]
        yield clients[0], clients[1]
        for client in clients:
            client.close()


def _identify(client: httpx.Client, photo: tuple[str, bytes]) -> dict:
    response = client.post("/v1/galleries/replicas/identify", files={"image": photo})
    assert response.status_code == 200, response.text
    return response.json()["faces"][0]


def test_replicas_share_one_gallery(replicas, shared_data: Path) -> None:
    a, b = replicas
    assert a.put("/v1/galleries/replicas").status_code == 201
    assert b.put("/v1/galleries/replicas").status_code == 200  # made by A already
    for name in ("Colin_Powell", "Hugo_Chavez"):
        assert b.post("/v1/galleries/replicas/subjects", json={"name": name}).is_success
        response = a.post(
            f"/v1/galleries/replicas/subjects/{name}/faces",
            files=[("images", _photo(shared_data, name, 1))],
        )
        assert response.status_code == 201, response.text
    listed = b.get("/v1/galleries")
    assert listed.status_code == 200 and "replicas" in listed.text
    subjects = b.get("/v1/galleries/replicas/subjects").json()
    assert sorted(s["name"] for s in subjects["subjects"]) == ["Colin_Powell", "Hugo_Chavez"]
    powell = _photo(shared_data, "Colin_Powell", 2)
    assert _identify(b, powell)["identity"] == "Colin_Powell"  # enrolled via A, found via B
    assert _identify(a, powell)["identity"] == "Colin_Powell"
    assert b.delete("/v1/galleries/replicas/subjects/Colin_Powell").status_code == 200
    after = _identify(a, powell)  # deleted via B: A no longer matches it
    assert after["identity"] is None
    assert "Colin_Powell" not in {m["subject"] for m in after["matches"]}
    assert b.delete("/v1/galleries/replicas").status_code == 200
    assert a.get("/v1/galleries/replicas").status_code == 404
