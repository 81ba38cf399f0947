"""Bounded cost per request in the REST service: analysis slots, the bounded queue and the
time budget (503 with Retry-After), and the rate limits per key, per address and for failed
authentications (429 with Retry-After); through the ASGI app with a fake analyzer, and through
a real `facesphere serve` on 127.0.0.1."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import math
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from typer.testing import CliRunner

from facesphere.cli.main import app as cli_app
from facesphere.errors import ConfigError
from facesphere.serve.app import create_app
from facesphere.serve.config import ServeConfig, default_analysis_workers
from facesphere.serve.keys import KeyStore
from facesphere.serve.process import ServerProcess
from facesphere.serve.ratelimit import TokenBuckets
from tests.raw_http import upload_scope

WAIT_S = 10.0  # the longest any step may take before a test fails


def _png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (64, 48), (120, 120, 120)).save(buffer, format="PNG")
    return buffer.getvalue()


PNG = _png()


class GatedAnalyzer:
    """A fake analyzer whose `detect` finds no face once `release` is set; `entered` counts
    the calls that started (a semaphore, to wait for them)."""

    threshold = 0.5

    def __init__(self) -> None:
        self.release = threading.Event()
        self.entered = threading.Semaphore(0)
        self.calls = 0

    def detect(self, image: Any) -> list[Any]:
        self.calls += 1
        self.entered.release()
        self.release.wait(WAIT_S)
        return []

    def wait_entered(self, count: int = 1) -> None:
        for _ in range(count):
            assert self.entered.acquire(timeout=WAIT_S), "the analysis did not start"


def _until(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + WAIT_S
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.01)


@pytest.fixture()
def home(tmp_path: Path) -> Path:
    return tmp_path


@pytest.fixture()
def keys(home: Path) -> dict[str, str]:
    store = KeyStore(home / "keys.sqlite")
    return {"read": store.create("reader", "read")[1], "write": store.create("writer", "write")[1]}


@pytest.fixture()
def make_client(home: Path) -> Iterator[Callable[..., TestClient]]:
    """Open apps on `home` with given settings (and analyzer); all closed at the end."""
    with ExitStack() as stack:

        def make(analyzer: Any = None, **settings: Any) -> TestClient:
            app = create_app(ServeConfig(home=home, **settings), analyzer)
            return stack.enter_context(TestClient(app))

        yield make


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def detect(client: TestClient, key: str) -> httpx.Response:
    return client.post("/v1/detect", files={"image": ("a.png", PNG)}, headers=auth(key))


def retry_after(response: httpx.Response) -> int:
    value = int(response.headers["retry-after"])
    assert value >= 1
    return value


# -- configuration ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("setting", "value"),
    [
        ("analysis_workers", 0),
        ("analysis_workers", 1.5),
        ("queue_size", -1),
        ("queue_size", "8"),
        ("max_images", 0),
        ("request_timeout_s", 0),
        ("request_timeout_s", float("nan")),
        ("key_rate_per_s", -1.0),
        ("address_rate_per_s", float("inf")),
        ("auth_failures_per_min", float("nan")),
        ("key_burst", 0),
        ("address_burst", 2.5),
        ("auth_failure_burst", True),
    ],
)
def test_bad_limits_are_config_errors(setting: str, value: Any) -> None:
    with pytest.raises(ConfigError, match=setting):
        ServeConfig(**{setting: value})
    with pytest.raises(ConfigError, match=setting):
        ServeConfig.from_json(json.dumps({setting: value}))


def test_limit_settings_round_trip_and_defaults() -> None:
    config = ServeConfig(analysis_workers=3, queue_size=0, key_rate_per_s=0, address_burst=7)
    assert ServeConfig.from_json(config.to_json()) == config
    assert config.analysis_slots() == 3
    assert 2 <= ServeConfig().analysis_slots() == default_analysis_workers() <= 8
    assert default_analysis_workers(processes=10_000) == 2


def test_serve_cli_passes_the_limits(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import uvicorn

    monkeypatch.setenv("FACESPHERE_HOME", str(tmp_path))
    monkeypatch.setattr(uvicorn, "run", lambda *args, **kwargs: None)
    options = [
        "serve",
        *("--analysis-workers", "3", "--queue-size", "5", "--request-timeout", "12"),
        *("--key-rate", "7", "--key-burst", "9", "--address-rate", "0", "--address-burst", "4"),
        *("--auth-failures-per-min", "2", "--auth-failure-burst", "1", "--max-images", "4"),
    ]
    result = CliRunner().invoke(cli_app, options)
    assert result.exit_code == 0, result.output
    config = ServeConfig.from_env()
    assert (config.analysis_workers, config.queue_size, config.request_timeout_s) == (3, 5, 12)
    assert (config.key_rate_per_s, config.key_burst) == (7, 9)
    assert (config.address_rate_per_s, config.address_burst) == (0, 4)
    assert (config.auth_failures_per_min, config.auth_failure_burst) == (2, 1)
    assert config.max_images == 4 and ServeConfig().max_images == 16
    assert config.torch_threads >= 1

    refused = CliRunner().invoke(cli_app, ["serve", "--key-rate", "inf"])
    assert refused.exit_code == 2
    assert "key_rate_per_s" in refused.output and "finite" in refused.output


# -- token buckets ----------------------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_token_buckets_refill_at_their_rate() -> None:
    clock = FakeClock()
    buckets = TokenBuckets(rate=2.0, burst=3, clock=clock)
    assert [buckets.take("a") for _ in range(3)] == [0, 0, 0]
    assert buckets.take("a") == 1 and buckets.wait("a") == 1  # half a second to go: 1 s
    assert buckets.take("b") == 0  # another name has its own bucket
    clock.now += 0.5
    assert buckets.wait("a") == 0 and buckets.take("a") == 0 and buckets.take("a") == 1
    # Over 12.5 s at 2/s: 25 more requests pass, whatever the number tried.
    passed = 0
    for _ in range(100):
        clock.now += 0.125
        passed += buckets.take("a") == 0
    assert passed == 25

    slow = TokenBuckets(rate=10 / 60, burst=1, clock=clock)
    assert slow.take("x") == 0 and slow.take("x") == 6  # 10 per minute: one per 6 s
    assert TokenBuckets(rate=0, burst=1, clock=clock).take("x") == 0  # rate 0: no limit


def test_token_buckets_memory_is_bounded() -> None:
    clock = FakeClock()
    buckets = TokenBuckets(rate=1.0, burst=2, max_entries=50, clock=clock)
    for number in range(200):
        buckets.take(f"10.0.{number // 256}.{number % 256}")
    assert len(buckets) == 50  # at most max_entries, the most recent kept
    assert buckets.wait("10.0.0.199") == 0 and buckets.take("10.0.0.199") == 0
    assert buckets.take("10.0.0.199") == 1
    clock.now += 2.0  # long enough for every bucket to be full again: all forgotten
    buckets.take("new")
    assert len(buckets) == 1


# -- rate limits through the app --------------------------------------------------------------


def test_429_after_the_burst_per_key(
    make_client: Callable[..., TestClient], keys: dict[str, str]
) -> None:
    client = make_client(key_rate_per_s=0.1, key_burst=3)
    codes = [client.get("/v1/galleries", headers=auth(keys["read"])).status_code for _ in range(3)]
    assert codes == [200, 200, 200]
    refused = client.get("/v1/galleries", headers=auth(keys["read"]))
    assert refused.status_code == 429
    assert 1 <= retry_after(refused) <= 10  # one token per 10 s
    assert refused.json()["detail"].startswith("rate limit of 0.1 requests/s per key reached")
    # The limit is per key: another key from the same address still passes.
    assert client.get("/v1/galleries", headers=auth(keys["write"])).status_code == 200


def test_429_after_the_burst_per_address(
    make_client: Callable[..., TestClient], keys: dict[str, str]
) -> None:
    client = make_client(address_rate_per_s=0.1, address_burst=4)
    for key in ("read", "write", "read", "write"):
        assert client.get("/v1/galleries", headers=auth(keys[key])).status_code == 200
    refused = client.get("/v1/galleries", headers=auth(keys["write"]))
    assert refused.status_code == 429 and 1 <= retry_after(refused) <= 10
    assert "per address" in refused.json()["detail"]
    assert detect(client, keys["read"]).status_code == 429  # before the upload is looked at
    assert client.get("/health").status_code == 200  # only /v1 is limited
    other = TestClient(client.app, client=("192.0.2.7", 40000))
    assert other.get("/v1/galleries", headers=auth(keys["read"])).status_code == 200


def test_failed_authentications_are_limited_harder(
    make_client: Callable[..., TestClient],
    keys: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    checked: list[str] = []
    authenticate = KeyStore.authenticate

    def counting(store: KeyStore, token: str) -> Any:
        checked.append(token)
        return authenticate(store, token)

    monkeypatch.setattr(KeyStore, "authenticate", counting)
    client = make_client(auth_failures_per_min=1.0, auth_failure_burst=3)
    wrong = auth("fs_000000000000_guess")
    assert [client.get("/v1/galleries", headers=wrong).status_code for _ in range(3)] == [401] * 3
    for headers in (wrong, auth(keys["read"]), {}):
        refused = client.get("/v1/galleries", headers=headers)
        assert refused.status_code == 429
        assert 1 <= retry_after(refused) <= 60  # one failure a minute
        assert refused.json()["detail"].startswith("too many failed authentications")
    assert len(checked) == 3  # locked out before any key is hashed
    # Successful requests never use the failure allowance; other addresses are unaffected.
    other = TestClient(client.app, client=("192.0.2.8", 40000))
    for _ in range(5):
        assert other.get("/v1/galleries", headers=auth(keys["read"])).status_code == 200


# -- the work queue ---------------------------------------------------------------------------


def test_analyses_run_in_parallel_slots(
    make_client: Callable[..., TestClient], keys: dict[str, str]
) -> None:
    analyzer = GatedAnalyzer()
    client = make_client(analyzer, analysis_workers=2, queue_size=0)
    with ThreadPoolExecutor(2) as pool:
        running = [pool.submit(detect, client, keys["read"]) for _ in range(2)]
        try:
            analyzer.wait_entered(2)  # both analyses run at once
        finally:
            analyzer.release.set()
        assert [f.result(WAIT_S).status_code for f in running] == [200, 200]


def test_waiting_requests_leave_threads_for_the_others(
    make_client: Callable[..., TestClient],
) -> None:
    import anyio.to_thread

    client = make_client(analysis_workers=4, queue_size=100)
    assert client.portal is not None
    limiter = client.portal.call(anyio.to_thread.current_default_thread_limiter)
    assert limiter.total_tokens >= 4 + 100 + 16


def _raw_detect(client: TestClient, key: str) -> tuple[list[dict[str, Any]], int]:
    """Call the app directly with a detect request; (what it sent, body reads it made)."""
    reads: list[int] = []
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        reads.append(1)
        return {"type": "http.request", "body": b"--x\r\n" * 20, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = upload_scope("/v1/detect", [(b"authorization", f"Bearer {key}".encode())])
    asyncio.run(client.app(scope, receive, send))
    return sent, len(reads)


def test_503_with_retry_after_when_the_queue_is_full(
    make_client: Callable[..., TestClient], keys: dict[str, str]
) -> None:
    analyzer = GatedAnalyzer()
    client = make_client(analyzer, analysis_workers=1, queue_size=1)
    work = client.app.state.service.work
    with ThreadPoolExecutor(2) as pool:
        admitted: list[Future[httpx.Response]] = []
        try:
            admitted.append(pool.submit(detect, client, keys["read"]))
            analyzer.wait_entered()
            admitted.append(pool.submit(detect, client, keys["read"]))  # waits for the slot
            _until(lambda: work.admitted == 2)
            refused = detect(client, keys["read"])
            assert refused.status_code == 503
            assert retry_after(refused) >= 1
            assert refused.json()["detail"].startswith("the service is busy")
            sent, reads = _raw_detect(client, keys["read"])
            assert sent[0]["status"] == 503 and reads == 0  # refused before its body is read
        finally:
            analyzer.release.set()
        assert [f.result(WAIT_S).status_code for f in admitted] == [200, 200]
    assert analyzer.calls == 2 and work.admitted == 0
    assert detect(client, keys["read"]).status_code == 200


def test_503_when_the_queue_wait_passes_the_budget(
    make_client: Callable[..., TestClient], keys: dict[str, str]
) -> None:
    analyzer = GatedAnalyzer()
    budget = 0.5
    client = make_client(analyzer, analysis_workers=1, queue_size=1, request_timeout_s=budget)
    work = client.app.state.service.work
    with ThreadPoolExecutor(2) as pool:
        try:
            first = pool.submit(detect, client, keys["read"])
            analyzer.wait_entered()
            started = time.monotonic()
            waiting = detect(client, keys["read"])  # queued behind the blocked analysis
            waited = time.monotonic() - started
            # The analysis running past the budget is answered at its deadline too.
            late = first.result(WAIT_S)
        finally:
            analyzer.release.set()
    assert waiting.status_code == 503 and retry_after(waiting) <= math.ceil(budget)
    assert "request budget of 0.5 s" in waiting.json()["detail"]
    assert budget <= waited < WAIT_S
    assert late.status_code == 503 and retry_after(late) >= 1
    assert late.json()["detail"] == "not answered within the request budget of 0.5 s; retry later"
    _until(lambda: work.admitted == 0)
    assert analyzer.calls == 1  # the queued request never ran
    assert detect(client, keys["read"]).status_code == 200


def test_a_slot_freed_after_the_deadline_is_not_taken() -> None:
    """A waiter woken late (as on a loaded machine) finds the slot free only after its
    request's deadline: it gives the slot back and raises rather than running."""
    from facesphere.serve.work import _DEADLINE, ServiceBusyError, WorkQueue

    work = WorkQueue(slots=1, queue_size=1, budget_s=0.05)
    real = work._free

    class LateSemaphore:
        def acquire(self, timeout: float) -> bool:
            time.sleep(timeout + 0.02)  # woken after the deadline, the slot free by then
            return real.acquire(blocking=False)

        def release(self) -> None:
            real.release()

    work._free = LateSemaphore()  # type: ignore[assignment]
    token = _DEADLINE.set(time.monotonic() + 0.05)
    ran = False
    try:
        with pytest.raises(ServiceBusyError, match="request budget"), work.slot():
            ran = True
    finally:
        _DEADLINE.reset(token)
    assert not ran
    assert real.acquire(blocking=False)  # the slot was given back


def test_an_analysis_past_its_budget_keeps_its_slot(
    make_client: Callable[..., TestClient], keys: dict[str, str]
) -> None:
    analyzer = GatedAnalyzer()
    client = make_client(analyzer, analysis_workers=1, queue_size=0, request_timeout_s=0.3)
    work = client.app.state.service.work
    try:
        late = detect(client, keys["read"])  # answered at its deadline, still running
        assert late.status_code == 503 and "request budget" in late.json()["detail"]
        analyzer.wait_entered()
        busy = detect(client, keys["read"])
        assert busy.status_code == 503 and busy.json()["detail"].startswith("the service is busy")
    finally:
        analyzer.release.set()
    _until(lambda: work.admitted == 0)
    assert detect(client, keys["read"]).status_code == 200


def test_a_batch_holds_one_slot_and_stops_at_its_deadline(
    make_client: Callable[..., TestClient], keys: dict[str, str]
) -> None:
    analyzer = GatedAnalyzer()
    client = make_client(analyzer, analysis_workers=1, queue_size=0, request_timeout_s=0.3)
    work = client.app.state.service.work
    files = [("images", (f"{n}.png", PNG)) for n in range(5)]
    with ThreadPoolExecutor(1) as pool:
        try:
            batch = pool.submit(
                client.post, "/v1/detect/batch", files=files, headers=auth(keys["read"])
            )
            analyzer.wait_entered()
            assert work.admitted == 1  # admitted like any analysis request
            busy = detect(client, keys["read"])
            assert busy.status_code == 503 and busy.json()["detail"].startswith("the service is")
            late = batch.result(WAIT_S)
        finally:
            analyzer.release.set()
    assert late.status_code == 503 and "request budget" in late.json()["detail"]
    _until(lambda: work.admitted == 0)
    assert analyzer.calls == 1  # the images after the deadline were never analysed
    done = client.post("/v1/detect/batch", files=files, headers=auth(keys["read"]))
    assert done.status_code == 200 and len(done.json()["results"]) == 5


def test_too_many_images_are_refused_before_any_analysis(
    make_client: Callable[..., TestClient], keys: dict[str, str], home: Path
) -> None:
    from facesphere.gallery import Gallery

    analyzer = GatedAnalyzer()
    analyzer.release.set()
    client = make_client(analyzer, max_images=2)
    encoded = base64.b64encode(PNG).decode()
    Gallery.create(home / "galleries" / "g.sqlite", model="fake", dim=4).close()
    for path in ("/v1/detect/batch", "/v1/embed/batch", "/v1/galleries/g/identify/batch"):
        multipart = client.post(
            path, files=[("images", ("a.png", PNG))] * 3, headers=auth(keys["read"])
        )
        assert multipart.status_code == 413, multipart.text
        assert multipart.json()["detail"] == "images: 3 images, over the limit of 2 per request"
        posted = client.post(path, json={"images": [encoded] * 3}, headers=auth(keys["read"]))
        assert posted.status_code == 413, posted.text
    enroll = client.post(
        "/v1/galleries/g/subjects/x/faces",
        files=[("images", ("a.png", PNG))] * 3,
        headers=auth(keys["write"]),
    )
    assert enroll.status_code == 413
    assert analyzer.calls == 0
    two = client.post(
        "/v1/detect/batch", json={"images": [encoded] * 2}, headers=auth(keys["read"])
    )
    assert two.status_code == 200 and analyzer.calls == 2


def test_decoded_images_count_against_the_upload_limit() -> None:
    from types import SimpleNamespace

    from facesphere.serve.limits import BodyTooLargeError
    from facesphere.serve.uploads import ImageBody, ImagePart

    state = SimpleNamespace(config=SimpleNamespace(max_images=4), max_upload_bytes=10)
    body = ImageBody(many="images")
    body._check({"images": [ImagePart("images[0]", "a", b"12345")] * 2}, state)  # type: ignore[arg-type]
    with pytest.raises(BodyTooLargeError, match="images of 15 bytes, over the limit of 10"):
        body._check({"images": [ImagePart("images[0]", "a", b"12345")] * 3}, state)  # type: ignore[arg-type]


# -- a real server ----------------------------------------------------------------------------


def test_real_server_answers_429_at_the_configured_rate(home: Path, keys: dict[str, str]) -> None:
    rate, burst = 5.0, 3
    limits = ["--key-rate", str(rate), "--key-burst", str(burst)]
    failures = ["--auth-failures-per-min", "6", "--auth-failure-burst", "2"]
    with (
        ServerProcess(home, extra_args=[*limits, *failures]) as server,
        httpx.Client(base_url=server.url, timeout=30.0, trust_env=False) as client,
    ):
        started = time.monotonic()
        answers = [client.get("/v1/galleries", headers=auth(keys["read"])) for _ in range(40)]
        elapsed = time.monotonic() - started
        codes = [a.status_code for a in answers]
        assert set(codes) == {200, 429}, codes
        assert codes[:burst] == [200] * burst
        assert codes.count(200) <= burst + math.ceil(rate * elapsed), (codes, elapsed)
        for answer in answers:
            if answer.status_code == 429:
                assert retry_after(answer) == 1 and "per key" in answer.json()["detail"]

        wrong = auth("fs_000000000000_guess")
        guesses = [client.get("/v1/galleries", headers=wrong) for _ in range(5)]
        assert [g.status_code for g in guesses] == [401, 401, 429, 429, 429]
        assert 1 <= retry_after(guesses[-1]) <= 10  # 6 a minute: one per 10 s
        assert client.get("/v1/galleries", headers=auth(keys["write"])).status_code == 429
