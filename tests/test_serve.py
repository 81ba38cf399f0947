"""The REST service in process (fastapi TestClient) with real LFW photos and one analyzer."""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from typer.testing import CliRunner

from facesphere.cli.main import app as cli_app
from facesphere.cli.serve_cmd import _is_loopback
from facesphere.gallery import Gallery
from facesphere.io.image import DEFAULT_MAX_PIXELS
from facesphere.pipeline.analyzer import FaceAnalyzer
from facesphere.serve.app import CONFIG_ENV, app_from_env, create_app
from facesphere.serve.config import ServeConfig
from facesphere.serve.keys import KeyStore
from tests.raw_http import png_header, upload_scope

GALLERY = "people"


def _photo(shared_data: Path, name: str, number: int) -> bytes:
    return (shared_data / "lfw" / "images" / name / f"{name}_{number:04d}.jpg").read_bytes()


def _png(width: int = 96, height: int = 96, value: int = 128) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (value, value, value)).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def analyzer() -> FaceAnalyzer:
    return FaceAnalyzer()


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("serve_home")


@pytest.fixture(scope="module")
def keys(home: Path) -> dict[str, str]:
    store = KeyStore(home / "keys.sqlite")
    made = {
        "write": store.create("writer", "write")[1],
        "read": store.create("reader", "read")[1],
        "other": store.create("other-gallery", "write", gallery="elsewhere")[1],
        "own": store.create("own-gallery", "read", gallery=GALLERY)[1],
        "revoked": store.create("revoked", "write")[1],
    }
    store.revoke("revoked")
    return made


@pytest.fixture(scope="module")
def client(home: Path, analyzer: FaceAnalyzer) -> Iterator[TestClient]:
    with TestClient(create_app(ServeConfig(home=home), analyzer)) as test_client:
        yield test_client


@pytest.fixture(scope="module")
def photos(shared_data: Path) -> dict[str, bytes]:
    return {
        "powell1": _photo(shared_data, "Colin_Powell", 1),
        "powell2": _photo(shared_data, "Colin_Powell", 2),
        "powell3": _photo(shared_data, "Colin_Powell", 3),
        "blair1": _photo(shared_data, "Tony_Blair", 1),
        "blair2": _photo(shared_data, "Tony_Blair", 2),
        "chavez": _photo(shared_data, "Hugo_Chavez", 1),
        "blank": _png(),
    }


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def upload(data: bytes, name: str = "photo.jpg") -> tuple[str, bytes, str]:
    return (name, data, "application/octet-stream")


# -- service and analysis ---------------------------------------------------------------------


def test_health_and_docs(client: TestClient) -> None:
    assert client.get("/health").json()["status"] == "ok"
    for page, script in (("/docs", "swagger-ui-bundle.js"), ("/redoc", "redoc.standalone.js")):
        html = client.get(page)  # no key needed, and nothing loaded from elsewhere
        assert html.status_code == 200 and f'src="docs/assets/{script}"' in html.text
        assert "http://" not in html.text and "https://" not in html.text
        asset = client.get(f"/docs/assets/{script}")
        assert asset.status_code == 200 and len(asset.content) > 100_000
    paths = client.get("/openapi.json").json()["paths"]
    for path in ("/v1/detect", "/v1/embed", "/v1/verify", "/v1/galleries/{name}/identify"):
        assert path in paths


def test_detect(client: TestClient, keys: dict[str, str], photos: dict[str, bytes]) -> None:
    response = client.post(
        "/v1/detect", files={"image": upload(photos["powell1"])}, headers=auth(keys["read"])
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["width"], body["height"]) == (250, 250)
    assert len(body["faces"]) == 1
    x1, y1, x2, y2 = body["faces"][0]["box"]
    assert 40 < x1 < x2 < 210 and 40 < y1 < y2 < 210
    assert len(body["faces"][0]["landmarks"]) == 5


def test_embed(client: TestClient, keys: dict[str, str], photos: dict[str, bytes]) -> None:
    response = client.post(
        "/v1/embed", files={"image": upload(photos["blair1"])}, headers=auth(keys["read"])
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model"] == "dlib-resnet+sface" and body["dim"] == 256
    vector = np.array(body["faces"][0]["embedding"])
    assert vector.shape == (256,)
    assert abs(float(np.linalg.norm(vector)) - 1.0) < 1e-4


def test_no_face_is_an_empty_list(
    client: TestClient, keys: dict[str, str], photos: dict[str, bytes]
) -> None:
    for path in ("/v1/detect", "/v1/embed"):
        response = client.post(
            path, files={"image": upload(photos["blank"], "blank.png")}, headers=auth(keys["read"])
        )
        assert response.status_code == 200, response.text
        assert response.json()["faces"] == []


def test_verify(
    client: TestClient, analyzer: FaceAnalyzer, keys: dict[str, str], photos: dict[str, bytes]
) -> None:
    same = client.post(
        "/v1/verify",
        files={"image_a": upload(photos["powell1"]), "image_b": upload(photos["powell2"])},
        headers=auth(keys["read"]),
    )
    assert same.status_code == 200, same.text
    body = same.json()
    assert body["same"] is True and body["similarity"] >= body["threshold"]
    assert body["faces_a"] == 1 and body["faces_b"] == 1
    calibrated = analyzer.card.verification_threshold()
    assert (body["threshold"], body["far"]) == (calibrated.value, calibrated.far)
    assert body["model"] == analyzer.card.name and body["far"] is not None
    pair = {"image_a": upload(photos["powell1"]), "image_b": upload(photos["powell2"])}
    strict = client.post("/v1/verify", params={"far": 1e-5}, files=pair, headers=auth(keys["read"]))
    assert strict.status_code == 200, strict.text
    assert strict.json()["far"] == 1e-5
    assert strict.json()["threshold"] == analyzer.card.verification_threshold(1e-5).value
    for params in ({"far": 0.5}, {"far": 1e-3, "threshold": 0.5}):
        pair = {"image_a": upload(photos["powell1"]), "image_b": upload(photos["powell2"])}
        refused = client.post("/v1/verify", params=params, files=pair, headers=auth(keys["read"]))
        assert refused.status_code == 422, refused.text
    other = client.post(
        "/v1/verify",
        files={"image_a": upload(photos["powell1"]), "image_b": upload(photos["chavez"])},
        headers=auth(keys["read"]),
    ).json()
    assert other["same"] is False and other["similarity"] < other["threshold"]


def test_verify_errors_name_the_field(
    client: TestClient, keys: dict[str, str], photos: dict[str, bytes]
) -> None:
    no_face = client.post(
        "/v1/verify",
        files={"image_a": upload(photos["powell1"]), "image_b": upload(photos["blank"])},
        headers=auth(keys["read"]),
    )
    assert no_face.status_code == 422
    assert no_face.json()["detail"] == "image_b: no face found"
    broken = client.post(
        "/v1/verify",
        files={"image_a": upload(b"not an image"), "image_b": upload(photos["powell1"])},
        headers=auth(keys["read"]),
    )
    assert broken.status_code == 422
    assert broken.json()["detail"].startswith("image_a: not a recognised image format")
    missing = client.post(
        "/v1/verify", files={"image_a": upload(photos["powell1"])}, headers=auth(keys["read"])
    )
    assert missing.status_code == 422
    assert "image_b" in str(missing.json()["detail"])


# -- galleries ----------------------------------------------------------------------------------


def test_gallery_flow(
    client: TestClient, keys: dict[str, str], photos: dict[str, bytes], home: Path
) -> None:
    write, read = auth(keys["write"]), auth(keys["read"])
    base = f"/v1/galleries/{GALLERY}"
    assert client.put(base, headers=write).status_code == 201
    assert client.put(base, headers=write).status_code == 200
    assert GALLERY in client.get("/v1/galleries", headers=read).json()["galleries"]

    created = client.post(
        f"{base}/subjects",
        json={"name": "Colin_Powell", "metadata": {"role": "SoS"}},
        headers=write,
    )
    assert created.status_code == 201, created.text
    assert created.json()["metadata"] == {"role": "SoS"}
    form = client.post(f"{base}/subjects", data={"name": "Tony_Blair"}, headers=write)
    assert form.status_code == 201, form.text
    duplicate = client.post(f"{base}/subjects", json={"name": "Tony_Blair"}, headers=write)
    assert duplicate.status_code == 409

    # Tony_Blair_0001 shows a second person behind him: refused unless a face is chosen.
    several = client.post(
        f"{base}/subjects/Tony_Blair/faces",
        files=[("images", upload(photos["blair1"], "blair1.jpg"))],
        headers=write,
    )
    assert several.status_code == 422, several.text
    assert several.json()["detail"]["several_faces"] == ["blair1.jpg"]
    for subject, first, second in (
        ("Colin_Powell", "powell1", "powell2"),
        ("Tony_Blair", "blair1", "blair2"),
    ):
        enrolled = client.post(
            f"{base}/subjects/{subject}/faces",
            params={"face": "central"},
            files=[
                ("images", upload(photos[first], f"{first}.jpg")),
                ("images", upload(photos[second], f"{second}.jpg")),
            ],
            headers=write,
        )
        assert enrolled.status_code == 201, enrolled.text
        assert len(enrolled.json()["face_ids"]) == 2
    again = client.post(
        f"{base}/subjects/Colin_Powell/faces",
        files=[("images", upload(photos["powell1"], "again.jpg"))],
        headers=write,
    )
    assert again.status_code == 201, again.text
    assert again.json()["face_ids"] == [] and again.json()["duplicates"] == ["again.jpg"]

    # One bad photo fails the whole request: nothing of it is stored.
    refused = client.post(
        f"{base}/subjects/Tony_Blair/faces",
        files=[
            ("images", upload(photos["powell3"], "ok.jpg")),
            ("images", upload(photos["blank"], "blank.png")),
            ("images", upload(b"\xff\xd8junk", "junk.jpg")),
        ],
        headers=write,
    )
    assert refused.status_code == 422
    detail = refused.json()["detail"]
    assert detail["no_face"] == ["blank.png"]
    assert [u["image"] for u in detail["unreadable"]] == ["junk.jpg"]

    subjects = client.get(f"{base}/subjects", headers=read).json()["subjects"]
    assert {s["name"]: s["faces"] for s in subjects} == {"Colin_Powell": 2, "Tony_Blair": 2}
    one = client.get(f"{base}/subjects/Colin_Powell", headers=read).json()
    assert one["faces"] == 2 and len(one["face_list"]) == 2

    found = client.post(
        f"{base}/identify", files={"image": upload(photos["powell3"])}, headers=read
    )
    assert found.status_code == 200, found.text
    face = found.json()["faces"][0]
    assert face["identity"] == "Colin_Powell"
    assert face["matches"][0]["subject"] == "Colin_Powell" and len(face["box"]) == 4
    assert 0.5 < face["detection_score"] <= 1.0
    with Gallery(home / "galleries" / f"{GALLERY}.sqlite") as stored:
        card = stored.card
        assert card is not None
        decided = stored.identification_threshold()
        assert found.json()["threshold"] == decided.value and decided.gallery_size == 2
        assert (found.json()["fpir"], found.json()["gallery_size"]) == (0.01, 2)
        assert found.json()["far"] == decided.far and found.json()["far"] is not None
        assert found.json()["model"] == card.name
    loose = client.post(
        f"{base}/identify", params={"fpir": 0.2}, files={"image": upload(photos["powell3"])},
        headers=read,
    ).json()  # fmt: skip
    assert loose["fpir"] == 0.2 and loose["threshold"] < found.json()["threshold"]
    strict = client.post(
        f"{base}/identify",
        params={"threshold": 0.999},
        files={"image": upload(photos["powell3"])},
        headers=read,
    ).json()
    assert (strict["threshold"], strict["far"]) == (0.999, None)
    assert strict["faces"][0]["identity"] is None
    assert strict["faces"][0]["matches"][0]["subject"] == "Colin_Powell"
    stranger = client.post(
        f"{base}/identify", files={"image": upload(photos["chavez"])}, headers=auth(keys["own"])
    ).json()
    assert stranger["faces"][0]["identity"] is None
    assert stranger["faces"][0]["matches"]  # still ranked, only under the threshold
    nobody = client.post(f"{base}/identify", files={"image": upload(photos["blank"])}, headers=read)
    assert nobody.status_code == 200 and nobody.json()["faces"] == []

    # Each enrolled face has a thumbnail: its aligned chip as a small JPEG.
    listed = {s["name"]: s for s in client.get(f"{base}/subjects", headers=read).json()["subjects"]}
    blair_ids = [
        f["id"] for f in client.get(f"{base}/subjects/Tony_Blair", headers=read).json()["face_list"]
    ]
    assert listed["Tony_Blair"]["first_face_id"] == blair_ids[0]
    thumbnail = client.get(f"{base}/faces/{blair_ids[0]}/thumbnail", headers=read)
    assert thumbnail.status_code == 200 and thumbnail.headers["content-type"] == "image/jpeg"
    assert Image.open(io.BytesIO(thumbnail.content)).size == (112, 112)
    missing = client.get(f"{base}/faces/{max(blair_ids) + 100}/thumbnail", headers=read)
    assert missing.status_code == 404
    # Removing one face: a write key's; the subject stays with the other.
    assert client.delete(f"{base}/faces/{blair_ids[0]}", headers=read).status_code == 403
    gone = client.delete(f"{base}/faces/{blair_ids[0]}", headers=write)
    assert gone.status_code == 200 and gone.json() == {"face_id": blair_ids[0], "removed": True}
    assert client.delete(f"{base}/faces/{blair_ids[0]}", headers=write).status_code == 404
    left = client.get(f"{base}/subjects/Tony_Blair", headers=read).json()
    assert left["faces"] == 1 and left["first_face_id"] == blair_ids[1]

    removed = client.delete(f"{base}/subjects/Tony_Blair", headers=write)
    assert removed.status_code == 200 and removed.json()["faces_removed"] == 1
    assert client.get(f"{base}/subjects/Tony_Blair", headers=read).status_code == 404
    with Gallery(home / "galleries" / f"{GALLERY}.sqlite") as gallery:
        assert len(gallery) == 2


def test_web_ui_is_served_without_a_key(client: TestClient) -> None:
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "default-src 'self'" in page.headers["content-security-policy"]
    for asset in ("ui/app.js", "ui/style.css"):
        assert f'"{asset}"' in page.text
        assert client.get(f"/{asset}").status_code == 200
    assert client.get("/ui/missing.js").status_code == 404
    assert client.get("/v1/galleries").status_code == 401  # the API itself still needs one


# -- refusals -----------------------------------------------------------------------------------


def test_authentication(client: TestClient, keys: dict[str, str]) -> None:
    files = {"image": upload(b"x")}
    assert client.post("/v1/detect", files=files).status_code == 401
    for header in ("Bearer fs_000000000000_nope", "Basic abc", f"Bearer {keys['revoked']}"):
        response = client.post("/v1/detect", files=files, headers={"Authorization": header})
        assert response.status_code == 401, header
        assert response.headers["www-authenticate"] == "Bearer"
    assert client.get("/v1/galleries/people/subjects").status_code == 401


def test_unauthenticated_upload_is_refused_before_its_body_is_read(client: TestClient) -> None:
    import asyncio

    reads: list[int] = []
    sent: list[dict] = []

    async def receive() -> dict:
        reads.append(1)
        return {"type": "http.request", "body": b"--x\r\n" * 200, "more_body": False}

    async def send(message: dict) -> None:
        sent.append(message)

    for headers in ([], [(b"authorization", b"Bearer fs_000000000000_nope")]):
        scope = upload_scope("/v1/detect", headers)
        sent.clear()
        asyncio.run(client.app(scope, receive, send))
        assert sent[0]["status"] == 401 and (b"www-authenticate", b"Bearer") in sent[0]["headers"]
    assert reads == []


def test_scopes(client: TestClient, keys: dict[str, str]) -> None:
    read = auth(keys["read"])
    assert client.put("/v1/galleries/g2", headers=read).status_code == 403
    assert (
        client.post(
            f"/v1/galleries/{GALLERY}/subjects", json={"name": "x"}, headers=read
        ).status_code
        == 403
    )
    assert client.delete(f"/v1/galleries/{GALLERY}/subjects/x", headers=read).status_code == 403
    other = auth(keys["other"])
    assert client.get(f"/v1/galleries/{GALLERY}/subjects", headers=other).status_code == 403
    assert client.put(f"/v1/galleries/{GALLERY}", headers=other).status_code == 403
    own = auth(keys["own"])
    assert client.put(f"/v1/galleries/{GALLERY}", headers=own).status_code == 403
    assert client.get("/v1/galleries", headers=other).json()["galleries"] == []


def test_delete_gallery(
    client: TestClient, home: Path, keys: dict[str, str], photos: dict[str, bytes]
) -> None:
    write = auth(keys["write"])
    assert client.put("/v1/galleries/doomed", headers=write).status_code == 201
    assert client.post(
        "/v1/galleries/doomed/subjects", json={"name": "Colin"}, headers=write
    ).is_success
    enrolled = client.post(
        "/v1/galleries/doomed/subjects/Colin/faces",
        files={"images": upload(photos["powell1"])},
        headers=write,
    )
    assert enrolled.status_code == 201, enrolled.text
    assert client.delete("/v1/galleries/doomed", headers=auth(keys["read"])).status_code == 403
    assert client.delete("/v1/galleries/doomed", headers=auth(keys["other"])).status_code == 403
    assert client.get("/v1/galleries/doomed", headers=write).status_code == 200

    deleted = client.delete("/v1/galleries/doomed", headers=write)
    assert deleted.status_code == 200, deleted.text
    assert deleted.json() == {"deleted": "doomed"}
    assert not list((home / "galleries").glob("doomed*"))
    assert "doomed" not in client.get("/v1/galleries", headers=write).json()["galleries"]
    assert client.get("/v1/galleries/doomed/subjects", headers=write).status_code == 404
    assert client.delete("/v1/galleries/doomed", headers=write).status_code == 404
    # the name can be used again, for a new, empty gallery
    assert client.put("/v1/galleries/doomed", headers=write).status_code == 201
    assert client.get("/v1/galleries/doomed", headers=write).json()["subjects"] == 0


def test_not_found_and_bad_names(
    client: TestClient, keys: dict[str, str], photos: dict[str, bytes]
) -> None:
    write = auth(keys["write"])
    assert client.get("/v1/galleries/missing/subjects", headers=write).status_code == 404
    response = client.post(
        "/v1/galleries/missing/identify", files={"image": upload(b"x")}, headers=write
    )
    assert response.status_code == 404
    assert "/" not in response.json()["detail"]  # no server paths in messages
    client.put("/v1/galleries/empty", headers=write)
    empty = client.post(
        "/v1/galleries/empty/identify", files={"image": upload(photos["powell1"])}, headers=write
    )
    assert empty.status_code == 200, empty.text
    assert empty.json()["faces"][0]["identity"] is None
    assert empty.json()["faces"][0]["matches"] == []
    assert client.get("/v1/galleries/empty/subjects/nobody", headers=write).status_code == 404
    assert client.delete("/v1/galleries/empty/subjects/nobody", headers=write).status_code == 404
    unreadable = client.post(
        "/v1/galleries/empty/subjects/nobody/faces", files={"images": upload(b"x")}, headers=write
    )
    assert unreadable.status_code == 422, unreadable.text
    assert client.get("/v1/galleries/empty/subjects/nobody", headers=write).status_code == 404
    for bad in ("bad name", "a$b", ".hidden", "..."):
        response = client.get(f"/v1/galleries/{bad}/subjects", headers=write)
        assert response.status_code == 422, bad
    for body in ({"name": ""}, {"name": "a/b"}, {"name": "x", "metadata": [1]}, ["x"]):
        response = client.post("/v1/galleries/empty/subjects", json=body, headers=write)
        assert response.status_code == 422, body


def test_enroll_creates_the_subject(
    client: TestClient, keys: dict[str, str], photos: dict[str, bytes]
) -> None:
    write, read = auth(keys["write"]), auth(keys["read"])
    base = "/v1/galleries/onestep"
    assert client.put(base, headers=write).status_code == 201
    faces = f"{base}/subjects/Colin_Powell/faces"
    refused = client.post(
        faces, files={"images": upload(photos["powell1"])}, data={"metadata": "{}"}, headers=read
    )
    assert refused.status_code == 403
    bad_meta = client.post(
        faces, files={"images": upload(photos["powell1"])}, data={"metadata": "[1]"}, headers=write
    )
    assert bad_meta.status_code == 422, bad_meta.text
    no_face = client.post(faces, files={"images": upload(photos["blank"])}, headers=write)
    assert no_face.status_code == 422
    for bad in ("%20lead", "a%E2%80%8Bb"):  # a leading space, a zero-width space
        named = client.post(
            f"{base}/subjects/{bad}/faces", files={"images": upload(photos["powell1"])},
            headers=write,
        )  # fmt: skip
        assert named.status_code == 422, (bad, named.text)
    assert client.get(f"{base}/subjects", headers=read).json()["subjects"] == []

    created = client.post(
        faces,
        files={"images": upload(photos["powell1"], "p1.jpg")},
        data={"metadata": '{"role": "SoS"}'},
        headers=write,
    )
    assert created.status_code == 201, created.text
    assert created.json()["subject_created"] is True
    assert created.json()["enrolled"] == ["p1.jpg"] and len(created.json()["face_ids"]) == 1
    subject = client.get(f"{base}/subjects/Colin_Powell", headers=read).json()
    assert subject["metadata"] == {"role": "SoS"} and subject["faces"] == 1

    more = client.post(
        faces,
        files={"images": upload(photos["powell2"], "p2.jpg")},
        data={"metadata": '{"term": 1}'},
        headers=write,
    )
    assert more.status_code == 201, more.text
    assert more.json()["subject_created"] is False and len(more.json()["face_ids"]) == 1
    subject = client.get(f"{base}/subjects/Colin_Powell", headers=read).json()
    assert subject["metadata"] == {"role": "SoS", "term": 1} and subject["faces"] == 2


def test_gallery_of_another_model(
    client: TestClient, keys: dict[str, str], photos: dict[str, bytes], home: Path
) -> None:
    write = auth(keys["write"])
    with Gallery.create(home / "galleries" / "foreign.sqlite", model="other-net", dim=128):
        pass
    base = "/v1/galleries/foreign"
    assert client.post(f"{base}/subjects", json={"name": "x"}, headers=write).status_code == 201
    answers = [
        client.put(base, headers=write),
        client.post(
            f"{base}/subjects/x/faces", files={"images": upload(photos["powell1"])}, headers=write
        ),
        client.post(f"{base}/identify", files={"image": upload(photos["powell1"])}, headers=write),
    ]
    for response in answers:
        assert response.status_code == 409, response.text
        detail = response.json()["detail"]
        assert "'foreign'" in detail and "other-net" in detail
        assert str(home) not in detail and "/" not in detail


def test_upload_limit(home: Path, analyzer: FaceAnalyzer, keys: dict[str, str]) -> None:
    small = TestClient(create_app(ServeConfig(home=home, max_upload_bytes=2000), analyzer))
    big = b"\x00" * 5000
    declared = small.post("/v1/detect", files={"image": upload(big)}, headers=auth(keys["read"]))
    assert declared.status_code == 413
    assert "2000 bytes" in declared.json()["detail"]

    def chunks() -> Iterator[bytes]:
        yield b'--b\r\nContent-Disposition: form-data; name="image"; filename="a"\r\n\r\n'
        for _ in range(10):
            yield b"\x00" * 500

    streamed = small.post(
        "/v1/detect",
        content=chunks(),
        headers={**auth(keys["read"]), "Content-Type": "multipart/form-data; boundary=b"},
    )
    assert streamed.status_code == 413
    json_streamed = small.post(
        f"/v1/galleries/{GALLERY}/subjects",
        content=(b'{"name": "' + b"a" * 500 + b'"' for _ in range(6)),
        headers={**auth(keys["write"]), "Content-Type": "application/json"},
    )
    assert json_streamed.status_code == 413
    assert small.get("/health").status_code == 200


def test_app_from_env_config(
    home: Path, keys: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(CONFIG_ENV, json.dumps({"home": str(home), "max_upload_bytes": 100}))
    configured = TestClient(app_from_env())  # no lifespan: the analyzer is not built
    response = configured.post(
        "/v1/detect", files={"image": upload(b"x" * 200)}, headers=auth(keys["read"])
    )
    assert response.status_code == 413
    assert configured.get("/health").json() == {"status": "ok", "analyzer_loaded": False}
    # Keys come from the configured home.
    no_key = configured.get("/v1/galleries", headers=auth(keys["read"]))
    assert no_key.status_code == 200


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("localhost", True),
        ("::1", True),
        ("0.0.0.0", False),
        ("10.1.2.3", False),
        ("example.org", False),
    ],
)
def test_serve_host_check(host: str, loopback: bool) -> None:
    assert _is_loopback(host) is loopback


def test_serve_cli_help() -> None:
    result = CliRunner().invoke(cli_app, ["serve", "--help"])
    assert result.exit_code == 0
    assert "--workers" in result.output and "127.0.0.1" in result.output


class _BrokenAnalyzer:
    """Fails inside detection, as an unexpected bug would."""

    threshold = 0.9

    def detect(self, image: Any) -> list[Any]:
        raise RuntimeError("secret internal state /srv/models")


def test_internal_errors_hide_details(home: Path, keys: dict[str, str]) -> None:
    broken = create_app(ServeConfig(home=home), _BrokenAnalyzer())  # type: ignore[arg-type]
    with TestClient(broken, raise_server_exceptions=False) as test_client:
        response = test_client.post(
            "/v1/detect", files={"image": upload(_png())}, headers=auth(keys["read"])
        )
    assert response.status_code == 500
    assert response.json() == {"detail": "internal server error"}
    assert "secret" not in response.text and "Traceback" not in response.text


# -- malformed uploads ------------------------------------------------------------------------


def _noise_png() -> bytes:
    """A PNG of random pixels: its pixel data is nearly all of the file."""
    pixels = np.random.default_rng(0).integers(0, 256, (48, 48, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def _jpeg(shared_data: Path) -> bytes:
    return _photo(shared_data, "Colin_Powell", 1)


def test_huge_declared_dimensions(client: TestClient, keys: dict[str, str]) -> None:
    for width, height in ((100_000, 100_000), (2**31 - 1, 1), (8000, 8000)):
        response = client.post(
            "/v1/detect",
            files={"image": upload(png_header(width, height), "huge.png")},
            headers=auth(keys["read"]),
        )
        assert response.status_code == 422, (width, height, response.text)
        assert response.json()["detail"].startswith("image: ")
    assert f"over the limit of {DEFAULT_MAX_PIXELS / 1e6:.1f} MP" in response.json()["detail"]
    assert ServeConfig().max_pixels == DEFAULT_MAX_PIXELS


_SETTINGS = settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@_SETTINGS
@given(data=st.binary(min_size=0, max_size=3000))
def test_random_bytes_are_refused(client: TestClient, keys: dict[str, str], data: bytes) -> None:
    response = client.post("/v1/detect", files={"image": upload(data)}, headers=auth(keys["read"]))
    assert response.status_code == 422, response.text
    assert response.json()["detail"].startswith("image: ")


@_SETTINGS
@given(cut=st.floats(min_value=0.0, max_value=0.97), kind=st.sampled_from(["jpeg", "png"]))
def test_truncated_images_are_refused(
    client: TestClient, keys: dict[str, str], shared_data: Path, cut: float, kind: str
) -> None:
    whole = _jpeg(shared_data) if kind == "jpeg" else _noise_png()
    data = whole[: int(len(whole) * cut)]
    response = client.post("/v1/detect", files={"image": upload(data)}, headers=auth(keys["read"]))
    assert response.status_code == 422, (kind, cut, response.text)


@_SETTINGS
@given(
    position=st.integers(min_value=0, max_value=400),
    junk=st.binary(min_size=1, max_size=16),
)
def test_corrupted_headers_never_fail_the_server(
    client: TestClient, keys: dict[str, str], position: int, junk: bytes
) -> None:
    whole = bytearray(_png(32, 32, 90))
    whole[position : position + len(junk)] = junk
    response = client.post(
        "/v1/detect", files={"image": upload(bytes(whole))}, headers=auth(keys["read"])
    )
    assert 200 <= response.status_code < 500, response.text
    if response.status_code == 200:
        assert response.json()["faces"] == []


# -- an exported recognizer -------------------------------------------------------------------

TINY_DIM = 24


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny trained backbone, exported to ONNX with its card (no thresholds)."""
    import torch

    from facesphere.export import export_model
    from facesphere.models.backbones import create_backbone
    from facesphere.models.checkpoint import save_backbone, trained_card

    torch.manual_seed(0)
    model = create_backbone("shufflenetv2_x0_5", embedding_dim=TINY_DIM).eval()
    folder = tmp_path_factory.mktemp("tiny")
    card = trained_card("shufflenetv2_x0_5", TINY_DIM, "standard112", 1, "x")
    save_backbone(folder / "model.pt", model, card, "shufflenetv2_x0_5", {}, step=1)
    return export_model(folder / "model.pt", folder / "tiny.onnx", "onnx", name="tiny")


def test_serve_with_an_exported_recognizer(
    tiny_model: Path,
    photos: dict[str, bytes],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import torch
    import uvicorn

    from facesphere.recognize.exported import read_card

    # `facesphere serve --recognizer PATH` as far as uvicorn: the configuration it leaves for
    # the workers, then a worker's app built from it.
    monkeypatch.setenv("FACESPHERE_HOME", str(tmp_path))
    monkeypatch.setenv(CONFIG_ENV, "")
    monkeypatch.setattr(uvicorn, "run", lambda *args, **kwargs: None)
    threads = str(torch.get_num_threads())
    result = CliRunner().invoke(
        cli_app, ["serve", "--recognizer", str(tiny_model), "--threads", threads]
    )
    assert result.exit_code == 0, result.output
    config = ServeConfig.from_env()
    assert config.analyzer["recognizer"] == str(tiny_model)
    assert config.max_pixels == DEFAULT_MAX_PIXELS

    write = auth(KeyStore(tmp_path / "keys.sqlite").create("w", "write")[1])
    with TestClient(app_from_env()) as served:
        embedded = served.post(
            "/v1/embed", files={"image": upload(photos["powell1"])}, headers=write
        )
        assert embedded.status_code == 200, embedded.text
        body = embedded.json()
        assert (body["model"], body["dim"]) == ("tiny", TINY_DIM)
        assert len(body["faces"]) == 1 and len(body["faces"][0]["embedding"]) == TINY_DIM

        assert served.put("/v1/galleries/tiny", headers=write).status_code == 201
        assert Gallery(tmp_path / "galleries" / "tiny.sqlite").card == read_card(tiny_model)
        assert served.post(
            "/v1/galleries/tiny/subjects", json={"name": "Colin_Powell"}, headers=write
        ).is_success
        enrolled = served.post(
            "/v1/galleries/tiny/subjects/Colin_Powell/faces",
            files={"images": upload(photos["powell1"])},
            headers=write,
        )
        assert enrolled.status_code == 201, enrolled.text

        # No calibrated threshold: verify and identify (422) say so until the request
        # gives one.
        pair = {"image_a": upload(photos["powell1"]), "image_b": upload(photos["powell2"])}
        verified = served.post("/v1/verify", files=pair, headers=write)
        assert verified.status_code == 422
        assert "'tiny' has no calibrated verify threshold" in verified.json()["detail"]
        pair = {"image_a": upload(photos["powell1"]), "image_b": upload(photos["powell2"])}
        verified = served.post("/v1/verify", params={"threshold": 0.5}, files=pair, headers=write)
        assert verified.status_code == 200, verified.text
        assert verified.json()["threshold"] == 0.5 and verified.json()["model"] == "tiny"
        query = {"image": upload(photos["powell2"])}
        unset = served.post("/v1/galleries/tiny/identify", files=query, headers=write)
        assert unset.status_code == 422
        assert "no calibrated identify threshold" in unset.json()["detail"]
        given = served.post(
            "/v1/galleries/tiny/identify", params={"threshold": -1.0}, files=query, headers=write
        )
        assert given.status_code == 200, given.text
        assert (given.json()["threshold"], given.json()["far"]) == (-1.0, None)
        assert given.json()["faces"][0]["identity"] == "Colin_Powell"


# -- base64 JSON and batches ------------------------------------------------------------------


def b64(data: bytes, data_url: bool = False) -> str:
    text = base64.b64encode(data).decode()
    return f"data:image/jpeg;base64,{text}" if data_url else text


def test_base64_json_answers_as_multipart(
    client: TestClient, keys: dict[str, str], photos: dict[str, bytes]
) -> None:
    read = auth(keys["read"])
    for path in ("/v1/detect", "/v1/embed"):
        sent = client.post(path, files={"image": upload(photos["powell1"])}, headers=read)
        for encoded in (b64(photos["powell1"]), b64(photos["powell1"], data_url=True)):
            posted = client.post(path, json={"image": encoded}, headers=read)
            assert posted.status_code == 200, posted.text
            assert posted.json() == sent.json()
    pair = {"image_a": b64(photos["powell1"]), "image_b": b64(photos["powell2"], True)}
    verified = client.post("/v1/verify", json=pair, headers=read)
    assert verified.status_code == 200, verified.text
    assert verified.json()["same"] is True
    # base64 wrapped over lines, as MIME writes it
    wrapped = base64.encodebytes(photos["powell1"]).decode()
    assert client.post("/v1/detect", json={"image": wrapped}, headers=read).status_code == 200


def test_bad_json_images_are_422_naming_the_field(
    client: TestClient, keys: dict[str, str], photos: dict[str, bytes]
) -> None:
    read = auth(keys["read"])
    cases = [
        ("/v1/detect", {"image": "not base64!"}, "image: not valid base64"),
        ("/v1/detect", {"image": 12}, "image: must be a base64 string"),
        ("/v1/detect", {"picture": b64(photos["powell1"])}, "image: no image given"),
        ("/v1/detect", {"image": b64(b"just text")}, "image: not a recognised image format"),
        ("/v1/verify", {"image_a": b64(photos["powell1"]), "image_b": "%%"}, "image_b: not valid"),
        ("/v1/detect/batch", {"images": b64(photos["powell1"])}, "images: must be a list"),
        ("/v1/detect/batch", {"images": []}, "images: no image given"),
    ]
    for path, body, detail in cases:
        response = client.post(path, json=body, headers=read)
        assert response.status_code == 422, (body, response.text)
        assert response.json()["detail"].startswith(detail), response.text
    twice = client.post(
        "/v1/detect",
        files=[("image", upload(photos["powell1"])), ("image", upload(photos["powell2"]))],
        headers=read,
    )
    assert twice.status_code == 422 and twice.json()["detail"] == "image: give one image"
    as_text = client.post(
        "/v1/detect/batch", data={"images": "abc"}, files={"x": upload(b"1")}, headers=read
    )
    assert as_text.status_code == 422
    assert as_text.json()["detail"] == "images[0]: must be a file part"
    not_object = client.post("/v1/detect", json=[b64(photos["powell1"])], headers=read)
    assert not_object.status_code == 422
    text = client.post("/v1/detect", content=b"x", headers={**read, "Content-Type": "text/plain"})
    assert text.status_code == 415


def test_enroll_and_identify_from_json(
    client: TestClient, keys: dict[str, str], photos: dict[str, bytes]
) -> None:
    write, read = auth(keys["write"]), auth(keys["read"])
    base = "/v1/galleries/json"
    assert client.put(base, headers=write).status_code == 201
    refused = client.post(
        f"{base}/subjects/Colin_Powell/faces",
        json={"images": [b64(photos["powell1"]), "@@"]},
        headers=write,
    )
    assert refused.status_code == 422 and "images[1]: not valid base64" in refused.text
    enrolled = client.post(
        f"{base}/subjects/Colin_Powell/faces",
        json={
            "images": [b64(photos["powell1"]), b64(photos["powell2"], True)],
            "metadata": {"role": "SoS"},
        },
        headers=write,
    )
    assert enrolled.status_code == 201, enrolled.text
    assert enrolled.json()["subject_created"] is True
    assert enrolled.json()["enrolled"] == ["images[0]", "images[1]"]
    subject = client.get(f"{base}/subjects/Colin_Powell", headers=read).json()
    assert subject["metadata"] == {"role": "SoS"} and subject["faces"] == 2
    found = client.post(f"{base}/identify", json={"image": b64(photos["powell3"])}, headers=read)
    assert found.status_code == 200, found.text
    assert found.json()["faces"][0]["identity"] == "Colin_Powell"


def test_batch_detect(client: TestClient, keys: dict[str, str], photos: dict[str, bytes]) -> None:
    read = auth(keys["read"])
    images = [photos["powell1"], b"\xff\xd8junk", photos["blank"], photos["blair1"]]
    answer = client.post(
        "/v1/detect/batch",
        files=[("images", upload(data, f"{n}.jpg")) for n, data in enumerate(images)],
        headers=read,
    )
    assert answer.status_code == 200, answer.text
    results = answer.json()["results"]
    assert [r["index"] for r in results] == [0, 1, 2, 3]
    for index in (0, 3):
        single = client.post("/v1/detect", files={"image": upload(images[index])}, headers=read)
        assert {k: v for k, v in results[index].items() if k != "index"} == single.json()
    assert results[1]["error"]["status"] == 422
    assert results[1]["error"]["detail"].startswith("images[1]: ")
    assert "faces" not in results[1]
    assert results[2]["faces"] == [] and (results[2]["width"], results[2]["height"]) == (96, 96)
    assert len(results[3]["faces"]) == 2  # Tony_Blair_0001 has a second person


def test_batch_embed_matches_single_embeds(
    client: TestClient, keys: dict[str, str], photos: dict[str, bytes]
) -> None:
    read = auth(keys["read"])
    names = ["powell1", "blair2", "chavez"]
    body = {"images": [b64(photos[n]) for n in names[:2]] + ["@@", b64(photos["chavez"])]}
    answer = client.post("/v1/embed/batch", json=body, headers=read)
    assert answer.status_code == 200, answer.text
    batch = answer.json()
    assert (batch["model"], batch["dim"]) == ("dlib-resnet+sface", 256)
    results = batch["results"]
    assert results[2] == {
        "index": 2,
        "error": {"status": 422, "detail": "images[2]: not valid base64"},
    }
    for result, name in zip([results[0], results[1], results[3]], names):
        single = client.post("/v1/embed", files={"image": upload(photos[name])}, headers=read)
        expected = single.json()["faces"]
        assert len(result["faces"]) == len(expected) >= 1
        for got, want in zip(result["faces"], expected):
            assert got["box"] == pytest.approx(want["box"])
            assert np.allclose(got["embedding"], want["embedding"], atol=1e-4)


def test_batch_identify(client: TestClient, keys: dict[str, str], photos: dict[str, bytes]) -> None:
    write, read = auth(keys["write"]), auth(keys["read"])
    base = "/v1/galleries/batch"
    assert client.put(base, headers=write).status_code == 201
    for subject, image in (("Colin_Powell", "powell1"), ("Hugo_Chavez", "chavez")):
        enrolled = client.post(
            f"{base}/subjects/{subject}/faces", files={"images": upload(photos[image])},
            headers=write,
        )  # fmt: skip
        assert enrolled.status_code == 201, enrolled.text
    images = [photos["powell3"], photos["blank"], b"junk", photos["blair2"]]
    answer = client.post(
        f"{base}/identify/batch",
        params={"top_k": 1},
        files=[("images", upload(data)) for data in images],
        headers=read,
    )
    assert answer.status_code == 200, answer.text
    body = answer.json()
    single = client.post(f"{base}/identify", files={"image": upload(images[0])}, headers=read)
    assert body["threshold"] == single.json()["threshold"] and body["gallery_size"] == 2
    results = body["results"]
    assert results[0]["faces"][0]["identity"] == "Colin_Powell"
    assert len(results[0]["faces"][0]["matches"]) == 1
    assert results[1] == {"index": 1, "faces": []}
    assert results[2]["error"]["detail"].startswith("images[2]: ")
    assert results[3]["faces"][0]["identity"] is None
    other = client.post(
        f"{base}/identify/batch", files={"images": upload(images[0])}, headers=auth(keys["other"])
    )
    assert other.status_code == 403


def test_batch_schemas_in_openapi(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    paths = spec["paths"]
    for path in ("/v1/detect/batch", "/v1/embed/batch", "/v1/galleries/{name}/identify/batch"):
        post = paths[path]["post"]
        content = post["requestBody"]["content"]
        assert content["multipart/form-data"]["schema"]["properties"]["images"]["type"] == "array"
        images = content["application/json"]["schema"]["properties"]["images"]
        assert images["items"]["format"] == "byte"
        answer = post["responses"]["200"]["content"]["application/json"]["schema"]
        item = answer["properties"]["results"]["items"]
        assert {"index", "faces", "error"} <= set(item["properties"])
    for path, field in (("/v1/detect", "image"), ("/v1/verify", "image_b")):
        content = paths[path]["post"]["requestBody"]["content"]
        assert content["application/json"]["schema"]["properties"][field]["format"] == "byte"
        assert content["multipart/form-data"]["schema"]["properties"][field]["format"] == "binary"
    enroll = paths["/v1/galleries/{name}/subjects/{subject}/faces"]["post"]["requestBody"]
    assert "metadata" in enroll["content"]["application/json"]["schema"]["properties"]
