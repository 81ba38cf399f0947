"""`facesphere serve` in real processes on loopback: a bounded load test with two workers, and
two server processes enrolling into one gallery at the same time."""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from facesphere.gallery import Gallery
from facesphere.serve.keys import KeyStore
from facesphere.serve.process import ServerProcess

pytestmark = pytest.mark.slow

PHOTOS = [
    ("Colin_Powell", 1),
    ("Colin_Powell", 2),
    ("Colin_Powell", 3),
    ("Tony_Blair", 1),
    ("Tony_Blair", 2),
    ("Tony_Blair", 3),
    ("Hugo_Chavez", 1),
    ("Ariel_Sharon", 1),
]


def _photo(shared_data: Path, name: str, number: int) -> bytes:
    return (shared_data / "lfw" / "images" / name / f"{name}_{number:04d}.jpg").read_bytes()


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, str]]:
    home = tmp_path_factory.mktemp("served")
    _, key = KeyStore(home / "keys.sqlite").create("load", "write")
    with ServerProcess(home, workers=2) as server:
        yield server, key


def _client(server: ServerProcess, key: str) -> httpx.Client:
    return httpx.Client(
        base_url=server.url,
        headers={"Authorization": f"Bearer {key}"},
        timeout=60.0,
        trust_env=False,
    )


def test_load_two_workers(served: tuple[ServerProcess, str], shared_data: Path) -> None:
    server, key = served
    powell = [_photo(shared_data, "Colin_Powell", n) for n in (1, 2, 3)]
    blair = [_photo(shared_data, "Tony_Blair", n) for n in (1, 2)]
    with _client(server, key) as client:
        assert client.put("/v1/galleries/load").status_code == 201
        for subject, photos in (("Colin_Powell", powell[:2]), ("Tony_Blair", blair)):
            assert client.post("/v1/galleries/load/subjects", json={"name": subject}).is_success
            response = client.post(
                f"/v1/galleries/load/subjects/{subject}/faces",
                params={"face": "largest"},  # some LFW photos show a second person
                files=[("images", (f"{i}.jpg", p)) for i, p in enumerate(photos)],
            )
            assert response.status_code == 201, response.text

    requests_total, threads, limit_s = 40, 4, 60.0
    started = time.monotonic()

    def one(number: int, client: httpx.Client) -> tuple[int, str]:
        if number % 2:
            response = client.post(
                "/v1/verify",
                files={"image_a": ("a.jpg", powell[0]), "image_b": ("b.jpg", powell[1])},
            )
            ok = response.status_code == 200 and response.json()["same"] is True
        else:
            response = client.post(
                "/v1/galleries/load/identify", files={"image": ("q.jpg", powell[2])}
            )
            ok = (
                response.status_code == 200
                and response.json()["faces"][0]["identity"] == "Colin_Powell"
            )
        return response.status_code, "ok" if ok else response.text[:200]

    def worker(thread: int) -> list[tuple[int, str]]:
        results = []
        with _client(server, key) as client:
            for number in range(thread, requests_total, threads):
                if time.monotonic() - started > limit_s:
                    results.append((0, "time limit"))
                    break
                results.append(one(number, client))
        return results

    with ThreadPoolExecutor(threads) as pool:
        results = [r for batch in pool.map(worker, range(threads)) for r in batch]
    elapsed = time.monotonic() - started
    assert len(results) == requests_total, results
    assert all(r == (200, "ok") for r in results), [r for r in results if r != (200, "ok")]
    assert elapsed < limit_s
    print(f"{requests_total} requests in {elapsed:.1f} s ({requests_total / elapsed:.2f}/s)")


def test_two_server_processes_enroll_into_one_gallery(
    served: tuple[ServerProcess, str], shared_data: Path
) -> None:
    first, key = served
    photos = [_photo(shared_data, name, number) for name, number in PHOTOS]
    subjects = [f"person{i}" for i in range(4)]
    with _client(first, key) as client:
        assert client.put("/v1/galleries/shared").status_code == 201
        for subject in subjects:
            assert client.post("/v1/galleries/shared/subjects", json={"name": subject}).is_success

    # Photo numbers (in PHOTOS) per thread, each photo once per subject (a photo enrolled twice
    # for one subject is skipped as a duplicate): Colin Powell's photos only for person0.
    plan = [[0, 1], [3, 4], [6, 7], [7, 6]]
    per_thread = 2
    with ServerProcess(first.home, workers=1) as second:
        servers = [first, second, first, second]

        def enroll(thread: int) -> list[tuple[int, str]]:
            codes = []
            with _client(servers[thread], key) as client:
                for i in range(per_thread):
                    photo = photos[plan[thread][i]]
                    response = client.post(
                        f"/v1/galleries/shared/subjects/{subjects[thread]}/faces",
                        params={"face": "largest"},  # some LFW photos show a second person
                        files={"images": (f"{thread}-{i}.jpg", photo)},
                    )
                    codes.append((response.status_code, response.text))
            return codes

        with ThreadPoolExecutor(len(servers)) as pool:
            answers = [c for batch in pool.map(enroll, range(len(servers))) for c in batch]
        refused = [text for code, text in answers if code != 201]
        assert not refused, refused

        # Both servers see every face, each through its own (cached) gallery and index.
        for server in (first, second):
            with _client(server, key) as client:
                listed = client.get("/v1/galleries/shared/subjects").json()["subjects"]
                assert {s["name"]: s["faces"] for s in listed} == dict.fromkeys(
                    subjects, per_thread
                )
                found = client.post(
                    "/v1/galleries/shared/identify", files={"image": ("q.jpg", photos[0])}
                ).json()
                assert found["faces"][0]["identity"] == "person0"
    with Gallery(first.home / "galleries" / "shared.sqlite") as gallery:
        assert len(gallery) == len(servers) * per_thread
        assert {s.name: s.face_count for s in gallery.subjects()} == dict.fromkeys(
            subjects, per_thread
        )
