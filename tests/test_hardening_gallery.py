"""Issue 13 (gallery part): names and metadata, foreign files, index digests, owner-only files,
outputs that would overwrite inputs, `gallery import`, several faces and duplicate photos.

Enrollment uses a fake analyzer (no face models): each synthetic photo says in its first pixel
how many faces it holds and which embeddings they have.
"""

from __future__ import annotations

import io
import json
import os
import sqlite3
import stat
import unicodedata
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from typer.testing import CliRunner

from facesphere.cli.common import PipelineOptions
from facesphere.cli.main import app as cli_app
from facesphere.errors import ConfigError, DataError
from facesphere.eval.cache import EmbeddingCache
from facesphere.gallery import (
    EnrollImagesError,
    EnrollReport,
    Gallery,
    GalleryError,
    GalleryExistsError,
    GalleryNotFoundError,
    ModelMismatchError,
    SubjectNotFoundError,
    enroll_files,
    enroll_images,
)
from facesphere.gallery.errors import DuplicateFaceError, InvalidSubjectError, NotAGalleryError
from facesphere.gallery.export import import_gallery
from facesphere.gallery.rules import MAX_METADATA_DEPTH, MAX_SUBJECT_NAME, subject_name
from facesphere.gallery.schema import APPLICATION_ID
from facesphere.io.files import check_output
from facesphere.io.image import load_image
from facesphere.pipeline.analyzer import Face
from facesphere.pipeline.executors import LocalPool
from facesphere.pretrained.cards import DLIB_RESNET
from facesphere.serve.app import create_app
from facesphere.serve.config import ServeConfig
from facesphere.serve.keys import KeyStore

DIM = 128
runner = CliRunner()

# Face boxes of the synthetic photos (200 x 100): the largest at the top left, then one at the
# centre, then a small one at the bottom right.
BOXES = [(0, 0, 70, 70), (85, 35, 115, 65), (170, 80, 190, 100)]


def vector(seed: int, face: int) -> np.ndarray:
    v = np.random.default_rng(1000 * seed + face).standard_normal(DIM).astype(np.float32)
    return v / np.linalg.norm(v)


class FakeAnalyzer:
    """Reads pixel (0, 0) of a photo as (number of faces, seed): face i gets box BOXES[i] and
    embedding `vector(seed, i)`. Faces come largest first, like FaceAnalyzer's."""

    card = DLIB_RESNET
    config: ClassVar[dict] = {}  # nothing to build workers from: batch runs stay in-process

    def load(self, image):
        return load_image(image)

    def analyze_many(self, images, fallback: str = "none") -> list[list[Face]]:
        return [self.analyze(image) for image in images]

    def analyze(self, image) -> list[Face]:
        pixels = self.load(image) if not isinstance(image, np.ndarray) else image
        count, seed = int(pixels[0, 0, 0]), int(pixels[0, 0, 1])
        faces = [
            Face(np.array(BOXES[i], np.float32), 0.9, np.zeros((5, 2), np.float32))
            for i in range(count)
        ]
        for i, face in enumerate(faces):
            face.embedding = vector(seed, i)
        return sorted(faces, key=lambda f: -f.area)

    def align(self, image: np.ndarray, faces: list[Face]) -> list[np.ndarray]:
        """Each face's box cut out, as one template's chips (they only make thumbnails)."""
        cuts = [image[int(f.box[1]) : int(f.box[3]), int(f.box[0]) : int(f.box[2])] for f in faces]
        return [np.stack(cuts)]


def photo(path: Path, faces: int, seed: int) -> Path:
    """A PNG (lossless) with `faces` faces of embeddings seeded by `seed`."""
    pixels = np.random.default_rng(seed).integers(0, 256, (100, 200, 3), dtype=np.uint8)
    pixels[0, 0] = (faces, seed, 0)
    Image.fromarray(pixels).save(path)
    return path


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture()
def gallery(gallery_target: str | Path) -> Iterator[Gallery]:
    with Gallery.create(gallery_target) as g:
        yield g


@pytest.fixture()
def fake_pipeline(monkeypatch: pytest.MonkeyPatch) -> FakeAnalyzer:
    """CLI verbs build the fake analyzer instead of the face models."""
    fake = FakeAnalyzer()
    monkeypatch.setattr(PipelineOptions, "build", lambda self, **extra: fake)
    return fake


def cli(*args: str):
    return runner.invoke(cli_app, [str(a) for a in args])


def unit(rng: np.random.Generator, n: int) -> np.ndarray:
    v = rng.standard_normal((n, DIM)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


# -- subject names and metadata ----------------------------------------------------------------


NFC = unicodedata.normalize("NFC", "José")
NFD = unicodedata.normalize("NFD", "José")


def test_names_are_nfc_normalised(gallery: Gallery) -> None:
    rng = np.random.default_rng(0)
    assert NFC != NFD
    gallery.enroll(NFD, unit(rng, 1))
    gallery.enroll(NFC, unit(rng, 1))
    assert [s.name for s in gallery.subjects()] == [NFC]  # one subject, stored composed
    assert gallery.subject(NFD).face_count == 2  # found by either form
    assert len(gallery.faces(NFD)) == 2
    assert gallery.remove_subject(NFD) == 2


@pytest.mark.parametrize(
    "name",
    [
        "a/b",
        "",
        "   ",
        "Jo\u200bsé",  # zero-width space
        "\u202eesoJ",  # right-to-left override
        "Ada\u200d",  # zero-width joiner
        "Ada\x00",
        "Ada\nLovelace",
        "Ada\u00a0Lovelace",  # no-break space
        "\ud800",  # lone surrogate
        "\U000e0041",  # tag character (Cf)
        "\u0378",  # unassigned
        " Ada",
        "x" * (MAX_SUBJECT_NAME + 1),
        None,
    ],
)
def test_bad_names_are_refused_everywhere(gallery: Gallery, name) -> None:
    with pytest.raises(InvalidSubjectError):
        subject_name(name)
    with pytest.raises(InvalidSubjectError):
        gallery.add_subject(name)
    with pytest.raises(InvalidSubjectError):
        gallery.enroll(name, unit(np.random.default_rng(0), 1))
    assert gallery.subjects() == []


def nested(depth: int) -> dict:
    value: dict = {"leaf": 1}
    for _ in range(depth - 1):
        value = {"a": value}
    return value


@pytest.mark.parametrize(
    "metadata",
    [
        nested(300),
        nested(MAX_METADATA_DEPTH + 1),
        {"x": float("nan")},
        {"x": [float("inf")]},
        {"x": "\ud800"},
        {"\udfff": 1},
        {1: "non-string key"},
        {"x": {1, 2}},
        {"x": "y" * 70_000},
        {"x": 10**5000},
        [1, 2],
    ],
)
def test_bad_metadata_is_refused_and_nothing_stored(gallery: Gallery, metadata) -> None:
    with pytest.raises(InvalidSubjectError):
        gallery.add_subject("ada", metadata)
    with pytest.raises(InvalidSubjectError):
        gallery.enroll("ada", unit(np.random.default_rng(0), 1), metadata=metadata)
    assert gallery.subjects() == [] and len(gallery) == 0


def test_good_metadata_within_the_limits(gallery: Gallery) -> None:
    deepest = nested(MAX_METADATA_DEPTH)
    assert gallery.add_subject("ada", deepest).metadata == deepest
    gallery.enroll("ada", unit(np.random.default_rng(0), 1), metadata={"team": [1, "x", None]})
    assert gallery.subject("ada").metadata == {**deepest, "team": [1, "x", None]}


# -- the REST service ----------------------------------------------------------------------------


@pytest.fixture()
def service(tmp_path: Path) -> Iterator[tuple[TestClient, dict[str, str], Path]]:
    home = tmp_path / "home"
    key = KeyStore(home / "keys.sqlite").create("writer", "write")[1]
    app = create_app(ServeConfig(home=home), FakeAnalyzer())  # type: ignore[arg-type]
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client, {"Authorization": f"Bearer {key}"}, home


def _post_json(client: TestClient, url: str, text: str, headers: dict[str, str]):
    return client.post(
        url, content=text.encode(), headers={**headers, "content-type": "application/json"}
    )


def test_rest_refuses_bad_subjects_with_422_and_stores_nothing(service) -> None:
    client, headers, _ = service
    base = "/v1/galleries/g"
    assert client.put(base, headers=headers).status_code == 201
    for depth in (300, 5000):
        body = '{"name": "deep", "metadata": ' + '{"a": ' * depth + "1" + "}" * depth + "}"
        answer = _post_json(client, f"{base}/subjects", body, headers)
        assert answer.status_code == 422, answer.text
    form = client.post(
        f"{base}/subjects",
        data={"name": "deep", "metadata": json.dumps(nested(300))},
        headers=headers,
    )
    assert form.status_code == 422, form.text
    for body in ('{"name": "\\ud800"}', '{"name": "a/b"}', '{"name": "x\\u202e"}'):
        answer = _post_json(client, f"{base}/subjects", body, headers)
        assert answer.status_code == 422, (body, answer.text)
    listed = client.get(f"{base}/subjects", headers=headers)
    assert listed.status_code == 200 and listed.json()["subjects"] == []
    # NFD and NFC are one subject; either form addresses it
    assert client.post(f"{base}/subjects", json={"name": NFD}, headers=headers).status_code == 201
    assert client.post(f"{base}/subjects", json={"name": NFC}, headers=headers).status_code == 409
    assert client.get(f"{base}/subjects/{NFD}", headers=headers).json()["name"] == NFC


def test_rest_enrollment_faces_and_duplicates(service, tmp_path: Path) -> None:
    client, headers, _ = service
    base = "/v1/galleries/g"
    client.put(base, headers=headers)
    client.post(f"{base}/subjects", json={"name": "ada"}, headers=headers)
    two = photo(tmp_path / "two.png", 2, 1).read_bytes()
    one = photo(tmp_path / "one.png", 1, 2).read_bytes()
    files = [("images", ("two.png", two, "image/png")), ("images", ("one.png", one, "image/png"))]
    refused = client.post(f"{base}/subjects/ada/faces", files=files, headers=headers)
    assert refused.status_code == 422
    assert refused.json()["detail"]["several_faces"] == ["two.png"]
    assert client.get(f"{base}/subjects/ada", headers=headers).json()["faces"] == 0
    bad = client.post(
        f"{base}/subjects/ada/faces", params={"face": "biggest"}, files=files, headers=headers
    )
    assert bad.status_code == 422
    enrolled = client.post(
        f"{base}/subjects/ada/faces", params={"face": "central"}, files=files, headers=headers
    )
    assert enrolled.status_code == 201, enrolled.text
    assert len(enrolled.json()["face_ids"]) == 2 and enrolled.json()["duplicates"] == []
    again = client.post(f"{base}/subjects/ada/faces", files=files[1:], headers=headers)
    assert again.status_code == 201, again.text
    assert again.json()["face_ids"] == [] and again.json()["duplicates"] == ["one.png"]
    assert client.get(f"{base}/subjects/ada", headers=headers).json()["faces"] == 2


def test_rest_foreign_garbage_and_deleted_galleries(service) -> None:
    client, headers, home = service
    folder = home / "galleries"
    folder.mkdir(parents=True)
    foreign = folder / "foreign.sqlite"
    with sqlite3.connect(foreign) as conn:
        conn.execute("CREATE TABLE orders (id INTEGER PRIMARY KEY, item TEXT)")
    before = foreign.read_bytes()
    for answer in (
        client.put("/v1/galleries/foreign", headers=headers),
        client.get("/v1/galleries/foreign", headers=headers),
        client.post("/v1/galleries/foreign/subjects", json={"name": "x"}, headers=headers),
    ):
        assert answer.status_code == 409, answer.text
        assert "not a facesphere gallery" in answer.json()["detail"]
    assert foreign.read_bytes() == before  # no gallery tables added, journal mode unchanged
    (folder / "junk.sqlite").write_bytes(os.urandom(4096))
    for answer in (
        client.get("/v1/galleries/junk", headers=headers),
        client.get("/v1/galleries/junk/subjects", headers=headers),
        client.put("/v1/galleries/junk", headers=headers),
    ):
        assert answer.status_code == 409, answer.text
    (folder / "trunc.sqlite").write_bytes(b"SQLite format 3\x00" + os.urandom(200))
    assert client.get("/v1/galleries/trunc/subjects", headers=headers).status_code == 409

    assert client.put("/v1/galleries/g", headers=headers).status_code == 201
    assert client.post("/v1/galleries/g/subjects", json={"name": "x"}, headers=headers).is_success
    assert client.get("/v1/galleries/g/subjects", headers=headers).status_code == 200
    (folder / "g.sqlite").unlink()
    assert client.get("/v1/galleries/g/subjects", headers=headers).status_code == 404
    assert client.get("/v1/galleries/g", headers=headers).status_code == 404
    assert client.put("/v1/galleries/g", headers=headers).status_code == 201  # made anew
    assert client.get("/v1/galleries/g/subjects", headers=headers).json()["subjects"] == []


# -- foreign files -------------------------------------------------------------------------------


def test_foreign_databases_are_refused_untouched(tmp_path: Path, fake_pipeline) -> None:
    foreign = tmp_path / "foreign.db"
    with sqlite3.connect(foreign) as conn:
        conn.execute("CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT)")
        conn.execute("INSERT INTO customers (name) VALUES ('ada')")
    before = foreign.read_bytes()
    with pytest.raises(NotAGalleryError, match="customers"):
        Gallery.create(foreign, exist_ok=True)
    with pytest.raises(NotAGalleryError):
        Gallery(foreign)
    for args in (
        ("gallery", "create", foreign, "--exist-ok"),
        ("gallery", "enroll", foreign, "-s", "ada", "--create", photo(tmp_path / "a.png", 1, 1)),
        ("gallery", "list", foreign),
    ):
        result = cli(*args)
        assert result.exit_code == 2, result.output
        assert "not a facesphere gallery" in result.output and "Traceback" not in result.output
    assert foreign.read_bytes() == before
    with sqlite3.connect(foreign) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "delete"

    # a gallery's own tables beside another application's: not a gallery either
    mixed = tmp_path / "mixed.db"
    Gallery.create(mixed).close()
    with sqlite3.connect(mixed) as conn:
        conn.execute("CREATE TABLE extra (x)")
        conn.execute("PRAGMA application_id = 0")
    with pytest.raises(NotAGalleryError, match="extra"):
        Gallery(mixed)
    other_app = tmp_path / "other-app.db"
    with sqlite3.connect(other_app) as conn:
        conn.execute("PRAGMA application_id = 1234")
        conn.execute("CREATE TABLE meta (key TEXT, value TEXT)")
    with pytest.raises(NotAGalleryError, match="another application"):
        Gallery.create(other_app, exist_ok=True)
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"not sqlite at all" * 100)
    for attempt in (lambda: Gallery(garbage), lambda: Gallery.create(garbage, exist_ok=True)):
        with pytest.raises(NotAGalleryError, match="not an SQLite database"):
            attempt()
    assert garbage.read_bytes() == b"not sqlite at all" * 100


def test_galleries_are_marked_and_old_ones_adopted(tmp_path: Path) -> None:
    path = tmp_path / "g.db"
    with Gallery.create(path) as g:
        g.enroll("ada", unit(np.random.default_rng(0), 2))
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID
        conn.execute("PRAGMA application_id = 0")  # as made before galleries were marked
        conn.execute("PRAGMA user_version = 0")
    with Gallery(path) as g:
        assert g.subject("ada").face_count == 2
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID
        assert conn.execute("PRAGMA user_version").fetchone()[0] >= 1
    empty_db = tmp_path / "empty.db"
    sqlite3.connect(empty_db).close()
    (tmp_path / "empty-file.db").write_bytes(b"")
    for blank in (empty_db, tmp_path / "empty-file.db"):
        with pytest.raises(NotAGalleryError, match="empty"):
            Gallery(blank)
        Gallery.create(blank).close()  # an empty file or database may become a gallery
        Gallery(blank).close()


def test_deleted_gallery_stops_answering(tmp_path: Path) -> None:
    path = tmp_path / "g.db"
    gallery = Gallery.create(path)
    gallery.enroll("ada", unit(np.random.default_rng(0), 1))
    assert gallery.on_disk()
    path.unlink()
    assert not gallery.on_disk()
    for call in (gallery.subjects, gallery.info, lambda: gallery.subject("ada"), gallery.__len__):
        with pytest.raises(GalleryNotFoundError, match="removed"):
            call()
    gallery.close()
    assert not Path(f"{path}.index").exists()  # nothing saved for a deleted gallery


# -- the vector index ----------------------------------------------------------------------------


def test_index_edited_in_place_is_rebuilt(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    path = tmp_path / "g.db"
    people = {f"p{i}": unit(rng, 2) for i in range(5)}
    outsider = unit(rng, 1)[0]
    with Gallery.create(path) as g:
        for name, vectors in people.items():
            g.enroll(name, vectors)
        assert g.identify(outsider, threshold=0.9)[0].identity is None
        target = g.faces("p3", embeddings=True)[1].embedding
    vectors_file = Path(f"{path}.index") / "vectors.faiss"
    data = vectors_file.read_bytes()
    stored = target.astype("<f4").tobytes()
    assert data.count(stored) == 1
    vectors_file.write_bytes(data.replace(stored, outsider.astype("<f4").tobytes()))
    assert len(vectors_file.read_bytes()) == len(data)  # same size, other content
    with Gallery(path) as g:
        result = g.identify(outsider, threshold=0.9)[0]
        assert result.identity is None and result.score < 0.9
        assert g.identify(target)[0].identity == "p3"
    assert vectors_file.read_bytes() == data  # rebuilt from the database
    state = json.loads((Path(f"{path}.index") / "state.json").read_text())
    assert set(state) >= {"vectors_sha256", "ids_sha256"}


# -- owner-only files ----------------------------------------------------------------------------


@pytest.fixture()
def umask_022() -> Iterator[None]:
    previous = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(previous)


def test_gallery_files_are_owner_only(tmp_path: Path, umask_022) -> None:
    path = tmp_path / "new" / "people.db"
    gallery = Gallery.create(path)
    gallery.enroll("ada", unit(np.random.default_rng(0), 2))
    gallery.identify(unit(np.random.default_rng(1), 1), threshold=0.5)
    gallery.save_index()
    side = [Path(f"{path}-wal"), Path(f"{path}-shm")]
    assert all(p.exists() for p in side)
    for file in [path, *side]:
        assert mode(file) == 0o600, file
    assert mode(path.parent) == 0o700
    index = Path(f"{path}.index")
    assert mode(index) == 0o700
    assert {p.name: mode(p) for p in index.iterdir()} == {
        name: 0o600 for name in ("vectors.faiss", "ids.npy", "state.json", ".lock")
    }
    for out in (tmp_path / "exports" / "g.json", tmp_path / "exports" / "g.npz"):
        gallery.export(out)
        assert mode(out) == 0o600
    assert mode(tmp_path / "exports") == 0o700
    gallery.close()


def test_embedding_cache_is_owner_only(tmp_path: Path, umask_022) -> None:
    path = tmp_path / "cache" / "embeddings.sqlite"
    cache = EmbeddingCache(path)
    face = Face(np.zeros(4, np.float32), 0.9, np.zeros((5, 2), np.float32))
    face.embedding = vector(0, 0)
    cache.put("0" * 64, "pipe", face)
    cache.commit()
    assert mode(path) == 0o600 and mode(Path(f"{path}-wal")) == 0o600
    assert mode(path.parent) == 0o700
    cache.close()


# -- outputs never overwrite inputs --------------------------------------------------------------


def test_check_output(tmp_path: Path) -> None:
    source = tmp_path / "in.db"
    source.write_bytes(b"data")
    (tmp_path / "hard.db").hardlink_to(source)
    (tmp_path / "soft.db").symlink_to(source)
    (tmp_path / "dir-link").symlink_to(tmp_path)
    for out in (
        source,
        tmp_path / "hard.db",
        tmp_path / "soft.db",
        tmp_path / "dir-link" / "in.db",
        tmp_path / "sub" / ".." / "in.db",
    ):
        with pytest.raises(ConfigError, match="is the input"):
            check_output(out, tmp_path / "other", source)
    check_output(tmp_path / "out.json", source, None)
    check_output(tmp_path / "new" / "in.db", source)
    with pytest.raises(ConfigError, match="holds the input"):
        check_output(tmp_path, source, folder=True)
    check_output(tmp_path / "runs", source, folder=True)


def test_cli_verbs_refuse_to_overwrite_inputs(tmp_path: Path, fake_pipeline) -> None:
    gallery_path = tmp_path / "G.db"
    with Gallery.create(gallery_path) as g:
        g.enroll("ada", unit(np.random.default_rng(0), 1))
    video = tmp_path / "V.mp4"
    video.write_bytes(b"not really a video, but it must stay as it is")
    (tmp_path / "photos").mkdir()
    image = photo(tmp_path / "photos" / "a.png", 1, 1)
    pairs = tmp_path / "pairs.txt"
    pairs.write_text("a.png a.png 1\n")
    checkpoint = tmp_path / "model.pt"
    checkpoint.write_bytes(b"weights")
    (tmp_path / "G-link.db").symlink_to(gallery_path)
    before = {p: p.read_bytes() for p in (gallery_path, video, image, pairs, checkpoint)}
    attempts = [
        ("gallery", "export", gallery_path, gallery_path, "--format", "json"),
        ("gallery", "export", gallery_path, tmp_path / "G-link.db", "--format", "npz"),
        ("gallery", "export", gallery_path, f"{gallery_path}-wal", "--format", "json"),
        ("video", video, "--json", video),
        ("video", video, "--out", video),
        ("video", video, "--gallery", gallery_path, "--json", gallery_path),
        ("video", video, "--out", tmp_path / "o.mp4", "--json", tmp_path / "o.mp4"),
        ("detect", image, "--draw", image),
        ("embed", tmp_path / "photos", "--out", image),
        ("cluster", tmp_path / "photos", "--json", image),
        (
            "evaluate",
            "pairs",
            "--images",
            tmp_path / "photos",
            "--pairs",
            pairs,
            "--protocol",
            "list",
            "--json",
            pairs,
        ),
        ("export", checkpoint, checkpoint),
        ("prepare", tmp_path / "photos", tmp_path / "photos"),
        ("gallery", "import", gallery_path, gallery_path, "--format", "json"),
    ]
    for args in attempts:
        result = cli(*args)
        assert result.exit_code == 2, (args, result.output)
        assert "input" in result.output and "Traceback" not in result.output, result.output
    assert {p: p.read_bytes() for p in before} == before
    with Gallery(gallery_path) as g:
        assert g.subject("ada").face_count == 1


def test_train_output_folder_must_not_hold_its_data(tmp_path: Path) -> None:
    config = tmp_path / "train.yaml"
    config.write_text(
        f"data:\n  source: {tmp_path / 'runs' / 'shards'}\noutput: {tmp_path}\nsteps: 1\n"
    )
    result = cli("train", "--config", config)
    assert result.exit_code == 2, result.output
    assert "holds the input" in result.output


# -- gallery import ------------------------------------------------------------------------------


def _enrolled_gallery(path: Path) -> Gallery:
    rng = np.random.default_rng(7)
    gallery = Gallery.create(path, card=DLIB_RESNET)
    gallery.add_subject("nobody yet", {"note": "no faces"})
    gallery.enroll(
        NFC,
        unit(rng, 2),
        [
            {"sha256": "a" * 64, "box": [1.5, 2, 30, 40], "score": 0.75},
            {"sha256": None, "box": None, "score": None},
        ],
        metadata={"team": {"name": "x", "ids": [1, 2.5, None, True]}},
    )
    gallery.enroll("Ada Lovelace", unit(rng, 3), metadata={"born": 1815})
    return gallery


def _content(gallery: Gallery) -> tuple:
    subjects = [(s.name, s.metadata, s.face_count) for s in gallery.subjects()]
    faces = [
        (f.subject, f.model, f.model_version, f.sha256, f.box, f.score, f.embedding.tobytes())
        for f in gallery.faces(embeddings=True)
    ]
    faces.sort(key=lambda face: (face[0], face[-1]))
    return subjects, faces, (gallery.model, gallery.model_version, gallery.dim)


@pytest.mark.parametrize("fmt", ["json", "npz"])
def test_export_import_round_trip(tmp_path: Path, fmt: str) -> None:
    with _enrolled_gallery(tmp_path / "g.db") as original:
        original.export(tmp_path / f"g.{fmt}")
        expected = _content(original)
        card = original.card
    counts = import_gallery(tmp_path / f"g.{fmt}", tmp_path / "copy.db")
    assert counts == {"subjects": 3, "faces": 5, "duplicates": 0}
    with Gallery(tmp_path / "copy.db") as copy:
        assert _content(copy) == expected
        assert copy.card == card
        assert copy.identify(copy.faces(NFC, embeddings=True)[0].embedding)[0].identity == NFC


def test_cli_import(tmp_path: Path) -> None:
    with _enrolled_gallery(tmp_path / "g.db") as original:
        expected = _content(original)
    assert cli("gallery", "export", tmp_path / "g.db", tmp_path / "g.npz").exit_code == 0
    result = cli("gallery", "import", tmp_path / "g.npz", tmp_path / "copy.db", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["faces"] == 5
    with Gallery(tmp_path / "copy.db") as copy:
        assert _content(copy) == expected
    again = cli("gallery", "import", tmp_path / "g.npz", tmp_path / "copy.db")
    assert again.exit_code == 2 and "already holds subjects" in again.output
    junk = tmp_path / "junk.json"
    junk.write_text('{"format": "something else"}')
    refused = cli("gallery", "import", junk, tmp_path / "new.db")
    assert refused.exit_code == 2 and "not a facesphere gallery export" in refused.output
    assert not (tmp_path / "new.db").exists()


def test_cli_moves_a_gallery_between_back_ends(tmp_path: Path, postgres_url: str) -> None:
    from postgres import gallery_url

    with _enrolled_gallery(tmp_path / "g.db") as original:
        expected = _content(original)
        card = original.card
    url = gallery_url(postgres_url)
    steps = [
        ("gallery", "export", tmp_path / "g.db", tmp_path / "g.npz"),
        ("gallery", "import", tmp_path / "g.npz", url),  # SQLite -> PostgreSQL
        ("gallery", "export", url, tmp_path / "pg.json"),
        ("gallery", "import", tmp_path / "pg.json", tmp_path / "back.db"),  # -> SQLite
    ]
    for step in steps:
        result = cli(*step)
        assert result.exit_code == 0, (step, result.output)
    listed = cli("gallery", "list", url, "--json")
    assert listed.exit_code == 0 and json.loads(listed.stdout)["gallery"]["faces"] == 5
    for target in (url, tmp_path / "back.db"):
        with Gallery(target) as copy:
            assert _content(copy) == expected
            assert copy.card == card
    again = cli("gallery", "import", tmp_path / "g.npz", url)
    assert again.exit_code == 2 and "already holds subjects" in again.output


def test_import_refuses_what_does_not_match(tmp_path: Path) -> None:
    with _enrolled_gallery(tmp_path / "g.db") as original:
        original.export(tmp_path / "g.json")
    document = json.loads((tmp_path / "g.json").read_text())

    def variant(name: str, change) -> Path:
        doc = json.loads(json.dumps(document))
        change(doc)
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps(doc))
        return path

    bad_files = {
        "gallery db": (tmp_path / "g.db", DataError),
        "version": (variant("version", lambda d: d.update(version=99)), DataError),
        "dim": (
            variant("dim", lambda d: d["subjects"][1]["faces"][0].update(embedding=[0.5] * 3)),
            DataError,
        ),
        "name": (variant("name", lambda d: d["subjects"][0].update(name="a/b")), DataError),
        "model": (
            variant("model", lambda d: d["subjects"][1]["faces"][0].update(model="other")),
            ModelMismatchError,
        ),
        "card": (variant("card", lambda d: d["card"].update(embedding_dim=512)), DataError),
        "deep": (
            variant("deep", lambda d: d["subjects"][0].update(metadata=nested(100))),
            DataError,
        ),
    }
    deep = tmp_path / "deep-file.json"
    deep.write_text("[" * 100_000 + "]" * 100_000)
    bad_files["deep file"] = (deep, DataError)
    bad_files["shape"] = (variant("shape", lambda d: d.update(subjects=["x", 1])), DataError)
    for name, (source, error) in bad_files.items():
        target = tmp_path / f"target-{name.replace(' ', '-')}.db"
        with pytest.raises(error):
            import_gallery(source, target, "json")
        assert not target.exists(), name
    other_model = tmp_path / "other.db"
    Gallery.create(other_model, model="arcface", dim=512).close()
    with pytest.raises(ModelMismatchError):
        import_gallery(tmp_path / "g.json", other_model)
    with Gallery(other_model) as g:
        assert g.subjects() == []
    empty = tmp_path / "empty.db"
    empty.write_bytes(b"")
    assert import_gallery(tmp_path / "g.json", empty)["subjects"] == 3
    full = tmp_path / "full.db"
    with Gallery.create(full) as g:
        g.add_subject("someone")
    with pytest.raises(GalleryExistsError):
        import_gallery(tmp_path / "g.json", full)


# -- enrollment: several faces and duplicates ---------------------------------------------------


def enroll_through_the_runner(gallery, analyzer, subject, images, **options) -> EnrollReport:
    """`enroll_files` (the CLI's way: files analysed by an executor) in this process."""
    return enroll_files(gallery, analyzer, subject, images, executor=LocalPool(1), **options)


both_ways = pytest.mark.parametrize("enroll", [enroll_images, enroll_through_the_runner])


@both_ways
def test_several_faces_are_refused_unless_one_is_chosen(
    gallery: Gallery, tmp_path: Path, enroll
) -> None:
    analyzer = FakeAnalyzer()
    group = photo(tmp_path / "group.png", 3, 5)
    single = photo(tmp_path / "single.png", 1, 6)
    with pytest.raises(EnrollImagesError) as refused:
        enroll(gallery, analyzer, "ada", [single, group])  # type: ignore[arg-type]
    assert refused.value.several_faces == [str(group)] and str(group) in str(refused.value)
    assert len(gallery) == 0
    report = enroll(gallery, analyzer, "ada", [single, group], skip_bad=True)  # type: ignore[arg-type]
    assert report.several_faces == [str(group)] and report.enrolled == [str(single)]
    for choice, expected in (("largest", 0), ("central", 1)):
        report = enroll(gallery, analyzer, choice, [group], face=choice)  # type: ignore[arg-type]
        (face,) = gallery.faces(choice, embeddings=True)
        np.testing.assert_allclose(face.embedding, vector(5, expected), atol=1e-6)
        assert face.box == list(BOXES[expected])
    with pytest.raises(ConfigError):
        enroll(gallery, analyzer, "ada", [group], face="left")  # type: ignore[arg-type]


@both_ways
def test_duplicate_photos_are_reported_not_stored_twice(
    gallery: Gallery, tmp_path: Path, enroll
) -> None:
    analyzer = FakeAnalyzer()
    first = photo(tmp_path / "first.png", 1, 1)
    copy = tmp_path / "copy.png"
    copy.write_bytes(first.read_bytes())
    report = enroll(gallery, analyzer, "ada", [first, copy])  # type: ignore[arg-type]
    assert len(report.face_ids) == 1 and report.duplicates == [str(copy)]
    report = enroll(gallery, analyzer, "ada", [first], metadata={"k": 1})  # type: ignore[arg-type]
    assert report.face_ids == [] and report.duplicates == [str(first)]
    assert report.to_dict()["duplicates"] == [str(first)]
    assert gallery.subject("ada").face_count == 1 and gallery.subject("ada").metadata == {"k": 1}
    # another subject may hold the same photo (a wrong enrollment is fixed by removing it)
    assert len(enroll(gallery, analyzer, "bob", [first]).face_ids) == 1  # type: ignore[arg-type]
    sha = gallery.faces("ada")[0].sha256
    with pytest.raises(DuplicateFaceError):
        gallery.enroll("ada", unit(np.random.default_rng(0), 1), [{"sha256": sha}])
    with pytest.raises(DuplicateFaceError):
        gallery.enroll("carol", unit(np.random.default_rng(0), 2), [{"sha256": "f" * 64}] * 2)
    with pytest.raises(SubjectNotFoundError):
        gallery.subject("carol")  # nothing of a refused request is stored
    assert gallery.subject("ada").face_count == 1


def test_cli_enroll_faces_duplicates_and_names(tmp_path: Path, fake_pipeline) -> None:
    path = tmp_path / "g.db"
    group = photo(tmp_path / "group.png", 2, 3)
    single = photo(tmp_path / "single.png", 1, 4)
    assert cli("gallery", "create", path, "--model", "dlib-resnet").exit_code == 0
    refused = cli("gallery", "enroll", path, "-s", "ada", single, group)
    assert refused.exit_code == 2, refused.output
    assert "several faces" in refused.output and str(group) in refused.output
    enrolled = cli("gallery", "enroll", path, "-s", "ada", single, group, "--face", "largest")
    assert enrolled.exit_code == 0, enrolled.output
    again = cli("gallery", "enroll", path, "-s", "ada", single, "--json")
    assert again.exit_code == 0, again.output
    assert json.loads(again.stdout)["duplicates"] == [str(single)]
    assert "already enrolled" in again.stderr
    for name in ("a/b", "x\u200b", "  "):
        bad = cli("gallery", "enroll", path, "-s", name, single)
        assert bad.exit_code == 2 and "error:" in bad.output, (name, bad.output)
    deep = cli("gallery", "enroll", path, "-s", "bob", single, "--metadata", "[" * 5000)
    assert deep.exit_code == 2 and "Traceback" not in deep.output, deep.output
    with Gallery(path) as g:
        assert [(s.name, s.face_count) for s in g.subjects()] == [("ada", 2)]
        for face in g.faces("ada"):  # stored with a 112x112 JPEG of the chip
            thumbnail = g.face_thumbnail(face.id)
            assert thumbnail is not None
            assert Image.open(io.BytesIO(thumbnail)).size == (112, 112)
    assert cli("gallery", "remove", path, "ada").exit_code == 0


def test_gallery_errors_are_gallery_errors() -> None:
    for error in (InvalidSubjectError, NotAGalleryError, DuplicateFaceError):
        assert issubclass(error, GalleryError)
    assert InvalidSubjectError.http_status == 422 and NotAGalleryError.http_status == 409
