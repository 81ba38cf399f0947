"""Gallery storage, index and identification on random unit vectors (no face models)."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest

import facesphere.gallery.index as index_module
from facesphere.gallery import (
    Gallery,
    GalleryError,
    GalleryExistsError,
    GalleryNotFoundError,
    ModelMismatchError,
    SubjectExistsError,
    SubjectNotFoundError,
)
from facesphere.gallery.index import FaceIndex
from facesphere.pretrained.cards import DLIB_RESNET

# dlib-resnet's identification threshold for the 10-subject gallery of test_open_set_threshold
DEFAULT_THRESHOLD = DLIB_RESNET.identification_threshold(10).value

DIM = 128
SRC = str(Path(__file__).resolve().parents[1] / "src")


def unit(rng: np.random.Generator, n: int, dim: int = DIM) -> np.ndarray:
    v = rng.standard_normal((n, dim)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def at_cosine(rng: np.random.Generator, x: np.ndarray, cosine: float) -> np.ndarray:
    """A unit vector whose cosine similarity to unit vector `x` is exactly `cosine`."""
    noise = unit(rng, 1, len(x))[0]
    noise -= (noise @ x) * x
    noise /= np.linalg.norm(noise)
    return (cosine * x + np.sqrt(1 - cosine**2) * noise).astype(np.float32)


def brute_force(
    people: dict[str, np.ndarray], query: np.ndarray, top_k: int
) -> list[tuple[str, float]]:
    """Subjects ranked by their best face's cosine, computed directly."""
    best = {name: float((faces @ query).max()) for name, faces in people.items()}
    return sorted(best.items(), key=lambda kv: -kv[1])[:top_k]


@pytest.fixture()
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


@pytest.fixture()
def gallery(gallery_target: str | Path):
    with Gallery.create(gallery_target) as g:
        yield g


def enroll_people(
    gallery: Gallery, rng: np.random.Generator, count: int, faces: int = 3
) -> dict[str, np.ndarray]:
    people = {}
    for i in range(count):
        vectors = unit(rng, faces)
        gallery.enroll(f"person{i:03d}", vectors)
        people[f"person{i:03d}"] = vectors
    return people


# -- creation and opening ------------------------------------------------------------------------


def test_create_open_and_errors(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "g.db"
    with pytest.raises(GalleryNotFoundError, match="not found"):
        Gallery(path)
    assert not path.exists()  # opening never creates
    Gallery.create(path, model="arcface", model_version="2", dim=512).close()
    with pytest.raises(GalleryExistsError):
        Gallery.create(path)
    with pytest.raises(ModelMismatchError, match="128-d"):
        Gallery.create(path, model="arcface", model_version="2", dim=128, exist_ok=True)
    with Gallery.create(path, model="arcface", model_version="2", dim=512, exist_ok=True) as g:
        assert (g.model, g.model_version, g.dim) == ("arcface", "2", 512)
    with Gallery(path) as g:
        info = g.info()
        assert info["faces"] == 0 and info["dim"] == 512 and info["model"] == "arcface"
        assert g.backend._conn.execute("PRAGMA journal_mode").fetchone()[0].lower() == "wal"
        assert g.backend._conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1
        assert g.backend._conn.execute("PRAGMA busy_timeout").fetchone()[0] > 0
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"this is not a database at all" * 100)
    with pytest.raises(GalleryError):
        Gallery(junk)
    other = tmp_path / "other.db"
    sqlite3.connect(other).execute("CREATE TABLE t (x)").connection.close()
    with pytest.raises(GalleryError, match="not a facesphere gallery"):
        Gallery(other)
    with pytest.raises(GalleryNotFoundError):
        Gallery(tmp_path)  # a folder


# -- enrollment and identification -----------------------------------------------------------------


def test_identify_matches_brute_force_aggregation(gallery: Gallery, rng) -> None:
    people = enroll_people(gallery, rng, 40, faces=3)
    # one subject with many faces around a point, which would crowd the nearest neighbours
    centre = unit(rng, 1)[0]
    crowd = np.stack([at_cosine(rng, centre, 0.95) for _ in range(60)])
    gallery.enroll("crowd", crowd)
    people["crowd"] = crowd
    queries = np.concatenate([unit(rng, 20), centre[None], people["person007"][1:2]])
    results = gallery.identify(queries, top_k=5)
    assert len(results) == len(queries)
    for query, result in zip(queries, results):
        expected = brute_force(people, query / np.linalg.norm(query), 5)
        assert [m.subject for m in result.matches] == [name for name, _ in expected]
        np.testing.assert_allclose(
            [m.score for m in result.matches], [s for _, s in expected], atol=1e-5
        )
        assert len({m.subject for m in result.matches}) == 5
    assert results[-2].matches[0].subject == "crowd"
    assert results[-1].identity == "person007" and results[-1].score == pytest.approx(1, abs=1e-5)
    counts = {s.name: s.face_count for s in gallery.subjects()}
    assert counts["crowd"] == 60 and counts["person000"] == 3 and len(counts) == 41


def test_rebuilt_index_answers_as_before(gallery: Gallery, rng) -> None:
    people = enroll_people(gallery, rng, 30, faces=2)
    queries = np.stack([at_cosine(rng, people[f"person{i:03d}"][0], 0.9) for i in range(30)])
    before = [(r.matches[0].subject, r.matches[0].score) for r in gallery.identify(queries)]
    gallery.rebuild_index()
    after = [(r.matches[0].subject, r.matches[0].score) for r in gallery.identify(queries)]
    assert [name for name, _ in after] == [f"person{i:03d}" for i in range(30)]
    assert [name for name, _ in after] == [name for name, _ in before]
    np.testing.assert_allclose([s for _, s in after], [s for _, s in before], atol=1e-5)


def test_open_set_threshold(gallery: Gallery, rng) -> None:
    people = enroll_people(gallery, rng, 10)
    face = people["person003"][0]
    above = at_cosine(rng, face, DEFAULT_THRESHOLD + 0.01)
    below = at_cosine(rng, face, DEFAULT_THRESHOLD - 0.01)
    hit, miss = gallery.identify(np.stack([above, below]))
    assert hit.identity == "person003" and hit.threshold == DEFAULT_THRESHOLD
    assert miss.identity is None and miss.matches[0].subject == "person003"
    assert miss.score == pytest.approx(DEFAULT_THRESHOLD - 0.01, abs=1e-4)
    assert gallery.identify(below, threshold=DEFAULT_THRESHOLD - 0.02)[0].identity == "person003"
    stranger = gallery.identify(unit(rng, 1))[0]
    assert stranger.identity is None and len(stranger.matches) == 5
    assert stranger.to_dict()["identity"] is None
    assert gallery.identify(unit(rng, 1), top_k=50)[0].matches.__len__() == 10
    # the threshold follows the number of subjects with faces
    assert gallery.identification_threshold().gallery_size == 10
    gallery.add_subject("nobody-yet")
    assert gallery.identification_threshold().gallery_size == 10
    enroll_people(gallery, rng, 40)
    assert gallery.identification_threshold().value > DEFAULT_THRESHOLD


def test_empty_gallery_identifies_nobody(gallery: Gallery, rng) -> None:
    result = gallery.identify(unit(rng, 1))[0]
    assert result.identity is None and result.matches == [] and result.score is None


def test_enroll_validation_and_metadata(gallery: Gallery, rng) -> None:
    ids = gallery.enroll(
        "ada",
        unit(rng, 2) * 3.0,  # not unit length: normalised on the way in
        sources=[{"sha256": "ab" * 32, "box": [1, 2, 30, 40], "score": 0.9}, None],
        metadata={"team": "red"},
    )
    assert len(ids) == 2 and ids[1] > ids[0]
    gallery.enroll("ada", unit(rng, 1), metadata={"age": 36})
    ada = gallery.subject("ada")
    assert ada.metadata == {"team": "red", "age": 36} and ada.face_count == 3
    faces = gallery.faces("ada", embeddings=True)
    assert faces[0].box == [1, 2, 30, 40] and faces[0].sha256 == "ab" * 32
    assert faces[1].box is None and faces[0].model == "dlib-resnet"
    np.testing.assert_allclose(np.linalg.norm(faces[0].embedding), 1, atol=1e-6)
    bad = [
        ({"subject": "", "embeddings": unit(rng, 1)}, "non-empty"),
        ({"subject": "x", "embeddings": np.zeros((1, DIM))}, "zero"),
        ({"subject": "x", "embeddings": np.full((1, DIM), np.nan)}, "NaN"),
        ({"subject": "x", "embeddings": np.zeros((0, DIM))}, "no embeddings"),
        ({"subject": "x", "embeddings": unit(rng, 2), "sources": [None]}, "1 sources"),
        ({"subject": "x", "embeddings": unit(rng, 1), "sources": [{"box": [1, 2]}]}, "4 finite"),
        ({"subject": "x", "embeddings": unit(rng, 1), "metadata": {"f": object()}}, "JSON"),
        ({"subject": "x", "embeddings": unit(rng, 1), "create_subject": False}, "no subject"),
    ]
    for kwargs, message in bad:
        with pytest.raises(GalleryError, match=message):
            gallery.enroll(**kwargs)
    assert [s.name for s in gallery.subjects()] == ["ada"] and len(gallery) == 3
    bob = gallery.add_subject("bob", {"x": 1})
    assert (bob.name, bob.metadata, bob.face_count) == ("bob", {"x": 1}, 0)
    with pytest.raises(SubjectExistsError):
        gallery.add_subject("ada")
    gallery.enroll("bob", unit(rng, 1), create_subject=False)
    assert gallery.subject("bob").face_count == 1 and gallery.subject("ada").face_count == 3


def test_model_mismatch_refused(gallery: Gallery, rng) -> None:
    with pytest.raises(ModelMismatchError, match="512-d"):
        gallery.enroll("x", unit(rng, 1, 512))
    with pytest.raises(ModelMismatchError, match="arcface"):
        gallery.enroll("x", unit(rng, 1), model="arcface")
    with pytest.raises(ModelMismatchError, match="version 2"):
        gallery.enroll("x", unit(rng, 1), model="dlib-resnet", model_version="2")
    with pytest.raises(ModelMismatchError):
        gallery.identify(unit(rng, 1, 64))
    with pytest.raises(ModelMismatchError):
        gallery.identify(unit(rng, 1), model="facenet")
    assert len(gallery) == 0
    gallery.enroll("x", unit(rng, 1), model="dlib-resnet", model_version="1")
    assert len(gallery) == 1


def test_remove_subject_db_then_index(gallery: Gallery, rng, gallery_target) -> None:
    people = enroll_people(gallery, rng, 6)
    gallery.identify(unit(rng, 1))  # index loaded
    assert gallery.remove_subject("person002") == 3
    with pytest.raises(SubjectNotFoundError):
        gallery.remove_subject("person002")
    with pytest.raises(SubjectNotFoundError):
        gallery.subject("person002")
    result = gallery.identify(people["person002"][0], top_k=10)[0]
    assert result.identity is None
    assert "person002" not in {m.subject for m in result.matches} and len(result.matches) == 5
    assert gallery.sync_index()["faces"] == 15
    assert gallery.remove_faces([]) == 0
    removed = gallery.remove_faces([f.id for f in gallery.faces("person004")[:2]] + [99999])
    assert removed == 2 and gallery.subject("person004").face_count == 1
    gallery.close()
    with Gallery(gallery_target) as again:
        assert again.sync_index()["faces"] == 13
        top = again.identify(people["person004"][2])[0]
        assert top.identity == "person004"


def test_thumbnails_stored_with_faces(gallery: Gallery, rng) -> None:
    jpegs = [b"\xff\xd8 first", None, b"\xff\xd8 third"]
    ids = gallery.enroll("ada", unit(rng, 3), thumbnails=jpegs)
    assert [gallery.face_thumbnail(i) for i in ids] == jpegs
    assert gallery.face_thumbnail(max(ids) + 1) is None
    for impossible in (0, -1, 2**63, 2**70):  # no face has such an id (not a database error)
        assert gallery.face_thumbnail(impossible) is None
    assert gallery.remove_faces([0, 2**70]) == 0 and len(gallery) == 3
    assert gallery.subject("ada").first_face_id == ids[0]
    gallery.add_subject("bob")
    listed = {s.name: s.to_dict()["first_face_id"] for s in gallery.subjects()}
    assert listed == {"ada": ids[0], "bob": None}
    gallery.remove_faces(ids[:1])
    assert gallery.subject("ada").first_face_id == ids[1]
    for wrong, message in (([b"x"], "1 thumbnails for 2"), (["text", None], "must be bytes")):
        with pytest.raises(GalleryError, match=message):
            gallery.enroll("ada", unit(rng, 2), thumbnails=wrong)
    assert gallery.subject("ada").face_count == 2


def test_schema_1_gallery_gets_the_thumbnail_column(tmp_path: Path, rng) -> None:
    path = tmp_path / "old.db"
    with Gallery.create(path) as g:
        (old,) = g.enroll("ada", unit(rng, 1))
    with sqlite3.connect(path) as conn:  # as a gallery of schema version 1 was
        conn.execute("ALTER TABLE faces DROP COLUMN thumbnail")
        conn.execute("UPDATE meta SET value = '1' WHERE key = 'schema_version'")
        conn.execute("PRAGMA user_version = 1")
    with Gallery(path) as g:
        assert g.info()["schema_version"] == 2 and g.face_thumbnail(old) is None
        (new,) = g.enroll("ada", unit(rng, 1), thumbnails=[b"jpeg"])
        assert g.face_thumbnail(new) == b"jpeg" and g.subject("ada").face_count == 2
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 2
        meta = dict(conn.execute("SELECT key, value FROM meta"))
        assert meta["schema_version"] == "2"


def test_transaction_all_or_nothing(gallery: Gallery, rng, monkeypatch) -> None:
    enroll_people(gallery, rng, 3)
    before = (len(gallery), gallery.generation(), [s.name for s in gallery.subjects()])
    gallery.identify(unit(rng, 1))
    backend = type(gallery.backend)
    real_insert = backend._insert_face
    calls = []

    def failing_insert(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("disk on fire")
        return real_insert(self, *args, **kwargs)

    monkeypatch.setattr(backend, "_insert_face", failing_insert)
    request = unit(rng, 5)
    with pytest.raises(RuntimeError, match="disk on fire"):
        gallery.enroll("newcomer", request, metadata={"a": 1})
    assert len(calls) == 3  # two faces were inserted before the failure
    assert (len(gallery), gallery.generation(), [s.name for s in gallery.subjects()]) == before
    assert gallery.identify(request[0])[0].identity is None
    assert gallery.sync_index()["faces"] == 9
    monkeypatch.setattr(backend, "_insert_face", real_insert)
    gallery.enroll("newcomer", request)
    assert gallery.identify(request[4])[0].identity == "newcomer"


# -- the index: persistence, staleness, kinds ------------------------------------------------------


def test_index_saved_and_rebuilt_when_deleted_or_corrupt(tmp_path: Path, rng) -> None:
    path = tmp_path / "g.db"
    with Gallery.create(path) as g:
        people = enroll_people(g, rng, 8)
        g.identify(unit(rng, 1))
    folder = Path(f"{path}.index")
    state = json.loads((folder / "state.json").read_text())
    assert state["ntotal"] == 24
    with Gallery(path) as g:
        assert g.generation() == state["generation"]
        assert g.identify(people["person005"][1])[0].identity == "person005"
    for damage in ("delete", "corrupt", "truncate"):
        if damage == "delete":
            for f in folder.iterdir():
                f.unlink()
        elif damage == "corrupt":
            (folder / "ids.npy").write_bytes(b"garbage")
        else:
            data = (folder / "vectors.faiss").read_bytes()
            (folder / "vectors.faiss").write_bytes(data[: len(data) // 2])
        with Gallery(path) as g:
            assert g.identify(people["person006"][0])[0].identity == "person006"
            assert g.sync_index()["faces"] == 24
        assert FaceIndex.load(folder, g.gallery_id, DIM) is not None  # rewritten whole


def test_stale_index_synced_from_other_instance(tmp_path: Path, rng) -> None:
    path = tmp_path / "g.db"
    first = Gallery.create(path)
    second = Gallery(path)
    people = enroll_people(first, rng, 5)
    assert first.identify(people["person001"][0])[0].identity == "person001"
    assert second.identify(people["person001"][0])[0].identity == "person001"
    late = unit(rng, 2)
    second.enroll("late", late)  # `first` learns of it only through the database
    second.remove_subject("person001")
    assert first.identify(late[1])[0].identity == "late"
    assert first.identify(people["person001"][0])[0].identity is None
    assert first.sync_index()["faces"] == 14
    first.close()
    # the saved index matches no longer once a third instance changes the database
    with Gallery(path) as third:
        third.enroll("later", unit(rng, 1))
    with Gallery(path) as fourth:
        assert fourth.sync_index()["faces"] == 15
        assert {m.subject for m in fourth.identify(late[0], top_k=10)[0].matches} >= {"later"}
    second.close()


def test_external_database_edit_is_noticed(tmp_path: Path, rng) -> None:
    path = tmp_path / "g.db"
    with Gallery.create(path) as g:
        people = enroll_people(g, rng, 4)
        g.identify(unit(rng, 1))
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA foreign_keys = ON")
    conn.execute("DELETE FROM subjects WHERE name = 'person000'")  # cascades to faces
    conn.commit()
    conn.close()
    with Gallery(path) as g:
        assert g.sync_index()["faces"] == 9
        assert g.identify(people["person000"][0])[0].identity is None


def test_switch_to_hnsw_and_back(tmp_path: Path, rng, monkeypatch) -> None:
    monkeypatch.setattr(index_module, "HNSW_MIN_FACES", 60)
    with Gallery.create(tmp_path / "g.db") as g:
        people = enroll_people(g, rng, 15, faces=3)
        assert g.sync_index()["kind"] == "flat"
        people.update({f"more{i}": unit(rng, 3) for i in range(10)})
        for i in range(10):
            g.enroll(f"more{i}", people[f"more{i}"])
        assert g.sync_index()["kind"] == "hnsw"
        g.remove_subject("more3")
        del people["more3"]
        queries = [faces[1] for faces in people.values()]
        for name, result in zip(people, g.identify(np.stack(queries))):
            assert result.identity == name
    with Gallery(tmp_path / "g.db") as g:
        assert g.sync_index()["kind"] == "hnsw"  # loaded from disk as saved
        for i in range(15):
            g.remove_subject(f"person{i:03d}")
        info = g.sync_index()
        assert info["kind"] == "flat" and info["faces"] == 27 and info["removed_marks"] == 0


@pytest.mark.parametrize("kind", ["flat", "hnsw"])
def test_face_index_removal_marks(kind: str, rng) -> None:
    vectors = unit(rng, 200)
    ids = np.arange(1000, 1200)
    index = FaceIndex.build(DIM, ids, vectors, kind=kind)
    index.remove(ids[:150:2])
    scores, found = index.search(vectors[:10], 20)
    assert not set(found.ravel()) & set(ids[:150:2])
    assert found[1, 0] == 1001 and scores[1, 0] == pytest.approx(1, abs=1e-5)
    assert index.live == 125 and index.dead == 75 and index.needs_rebuild()
    compact = index.compacted()
    assert compact.dead == 0 and np.array_equal(compact.live_ids(), index.live_ids())


# -- reliability: crashes and concurrency ---------------------------------------------------------

CHILD_ENROLL = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    import numpy as np
    from facesphere.gallery import Gallery

    path, marker, faces_per_request, stop_at = sys.argv[1], Path(sys.argv[2]), 10, 12
    rng = np.random.default_rng(7)
    gallery = Gallery(path)
    gallery.identify(rng.standard_normal(128))  # load the index; saved now and then below
    backend = type(gallery.backend)
    real_insert = backend._insert_face
    count = {"n": 0}

    def insert(self, *args):
        count["n"] += 1
        if count["n"] == stop_at * faces_per_request + 4:
            marker.write_text("inside")  # four faces of request `stop_at` inserted
            time.sleep(120)
        return real_insert(self, *args)

    backend._insert_face = insert
    for i in range(1000):
        v = rng.standard_normal((faces_per_request, 128))
        gallery.enroll(f"s{i:04d}", v)
        if i % 5 == 0:
            gallery.save_index()
    """
)


def test_sigkill_mid_enrollment_leaves_gallery_consistent(tmp_path: Path, gallery_target) -> None:
    path = gallery_target
    Gallery.create(path).close()
    marker = tmp_path / "inside"
    env = {**os.environ, "PYTHONPATH": SRC}
    child = subprocess.Popen([sys.executable, "-c", CHILD_ENROLL, str(path), str(marker)], env=env)
    try:
        deadline = time.monotonic() + 60
        while not marker.exists():
            assert child.poll() is None, "the enrolling child died early"
            assert time.monotonic() < deadline, "the child never reached request 12"
            time.sleep(0.02)
        child.send_signal(signal.SIGKILL)
        child.wait(10)
    finally:
        if child.poll() is None:
            child.kill()
    assert child.returncode == -signal.SIGKILL
    rng = np.random.default_rng(7)
    rng.standard_normal(128)
    expected = {f"s{i:04d}": rng.standard_normal((10, 128)) for i in range(12)}
    with Gallery(path) as g:
        counts = {s.name: s.face_count for s in g.subjects()}
        assert counts == dict.fromkeys(expected, 10)  # s0012, interrupted, is absent
        if isinstance(path, Path):  # the SQLite back end's FAISS index, saved now and then
            saved = json.loads(Path(f"{path}.index/state.json").read_text())
            assert saved["ntotal"] < 120  # the saved index was stale ...
        assert g.sync_index()["faces"] == 120  # ... and is brought up to date on open
        queries = np.stack([v[3] for v in expected.values()])
        assert [r.identity for r in g.identify(queries)] == list(expected)
        if isinstance(path, Path):
            assert sqlite3.connect(path).execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_threads_enroll_and_identify_concurrently(gallery_target, rng) -> None:
    path = gallery_target
    shared = Gallery.create(path)
    enroll_people(shared, rng, 5)
    errors: list[BaseException] = []
    plans = {t: list(unit(np.random.default_rng(t), 30).reshape(15, 2, DIM)) for t in range(4)}

    def enroller(t: int) -> None:
        try:
            own = Gallery(path) if t % 2 else None  # half share one instance, half their own
            target = own or shared
            for j, vectors in enumerate(plans[t]):
                target.enroll(f"t{t}-{j}", vectors)
            if own is not None:
                own.close()
        except BaseException as exc:
            errors.append(exc)

    def identifier(stop: threading.Event, use_own: bool) -> None:
        try:
            target = Gallery(path) if use_own else shared
            while not stop.is_set():
                for result in target.identify(unit(np.random.default_rng(), 3), top_k=3):
                    assert len(result.matches) == 3
            if use_own:
                target.close()
        except BaseException as exc:
            errors.append(exc)

    stop = threading.Event()
    readers = [threading.Thread(target=identifier, args=(stop, o)) for o in (False, True)]
    writers = [threading.Thread(target=enroller, args=(t,)) for t in plans]
    for thread in readers + writers:
        thread.start()
    for thread in writers:
        thread.join(60)
    stop.set()
    for thread in readers:
        thread.join(60)
    assert not errors, errors
    assert len(shared) == 15 + 4 * 15 * 2
    for t, requests in plans.items():
        names = [r.identity for r in shared.identify(np.stack([v[0] for v in requests]))]
        assert names == [f"t{t}-{j}" for j in range(15)]
    shared.close()


CHILD_WORKER = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    from facesphere.gallery import Gallery

    path, role, seed = sys.argv[1], sys.argv[2], int(sys.argv[3])
    rng = np.random.default_rng(seed)
    done = []
    with Gallery(path) as gallery:
        for j in range(20):
            if role == "enroll":
                done += gallery.enroll(f"p{seed}-{j}", rng.standard_normal((3, 128)))
            elif role == "crowd":  # every crowd writer adds to one subject, made by the first
                vector = rng.standard_normal((1, 128))
                done += gallery.enroll("crowd", vector, metadata={f"w{seed}": j})
            else:
                for result in gallery.identify(rng.standard_normal((4, 128)), top_k=2):
                    assert len(result.matches) <= 2
                    done.append(result.matches[0].subject if result.matches else None)
    print(json.dumps(done))
    """
)


def test_processes_enroll_and_identify_concurrently(gallery_target) -> None:
    path = gallery_target
    with Gallery.create(path) as g:
        g.enroll("seed", np.random.default_rng(0).standard_normal((2, DIM)))
    env = {**os.environ, "PYTHONPATH": SRC}
    roles = [("enroll", 1), ("enroll", 2), ("enroll", 3), ("identify", 4), ("identify", 5)]
    roles += [("crowd", 6), ("crowd", 7)]
    children = [
        subprocess.Popen(
            [sys.executable, "-c", CHILD_WORKER, str(path), role, str(seed)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for role, seed in roles
    ]
    outputs = []
    for child in children:
        out, err = child.communicate(timeout=120)
        assert child.returncode == 0, err
        outputs.append(json.loads(out))
    face_ids = [i for out in outputs[:3] + outputs[5:] for i in out]
    assert len(face_ids) == len(set(face_ids)) == 3 * 20 * 3 + 2 * 20
    with Gallery(path) as g:
        assert len(g) == 2 + 180 + 40
        assert g.sync_index()["faces"] == 222
        crowd = g.subject("crowd")
        assert crowd.face_count == 40 and crowd.metadata == {"w6": 19, "w7": 19}
        for seed in (1, 2, 3):
            rng = np.random.default_rng(seed)
            requests = [rng.standard_normal((3, DIM)) for _ in range(20)]
            names = [r.identity for r in g.identify(np.stack([v[2] for v in requests]))]
            assert names == [f"p{seed}-{j}" for j in range(20)]


# -- export ----------------------------------------------------------------------------------


def test_export_json_and_npz(gallery: Gallery, rng, tmp_path: Path) -> None:
    people = enroll_people(gallery, rng, 3, faces=2)
    gallery.enroll("person001", unit(rng, 1), metadata={"k": "v"})
    counts = gallery.export(tmp_path / "out.json")
    assert counts == {"subjects": 3, "faces": 7}
    doc = json.loads((tmp_path / "out.json").read_text())
    assert doc["gallery"]["model"] == "dlib-resnet" and doc["gallery"]["dim"] == DIM
    by_name = {s["name"]: s for s in doc["subjects"]}
    assert (
        by_name["person001"]["metadata"] == {"k": "v"} and len(by_name["person001"]["faces"]) == 3
    )
    np.testing.assert_allclose(
        np.array([f["embedding"] for f in by_name["person000"]["faces"]]),
        people["person000"],
        atol=1e-6,
    )
    gallery.export(tmp_path / "out.bin", fmt="npz")
    data = np.load(tmp_path / "out.bin", allow_pickle=False)
    names = list(data["subjects"])
    rows = data["face_subject"] == names.index("person002")
    np.testing.assert_allclose(data["embeddings"][rows], people["person002"], atol=1e-6)
    assert json.loads(str(data["header"]))["gallery"]["faces"] == 7
    with pytest.raises(GalleryError, match="export format"):
        gallery.export(tmp_path / "out.txt")
