"""A bounded load test of the REST service over loopback: small detects alone and while one
4000x4000 detect runs, and bursts of listing requests and wrong-key guesses against the rate
limits.

For each configuration it starts `facesphere serve` on 127.0.0.1 (a free port, a temporary
FACESPHERE_HOME with one API key): `before` runs one analysis at a time, with no limits and
images detected at their full size (the service before analysis slots, rate limits and the
detectors' bounded working resolution), `after` runs the defaults. Phases, each bounded
by a request count and `--time-limit` seconds:

1. small: `--small` detects of a 250x250 image from `--clients` threads;
2. with-big: a 4000x4000 flat PNG detect (21 KB) and, while it runs, small detects as in 1;
3. list: `--burst` `GET /v1/galleries` one after another (per-key limit);
4. wrong-key: `--burst` requests with a wrong key (failed-authentication limit).

Every answer's status is counted; a request without an answer counts as lost. The small image
is synthetic (smooth noise) unless `--photo` names one. Usage:

    python bench/serve_load.py --json serve_load.json
"""

from __future__ import annotations

import argparse
import io
import json
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from PIL import Image
from report import write_report  # bench/report.py

from facesphere.serve.config import ServeConfig
from facesphere.serve.keys import KeyStore
from facesphere.serve.process import ServerProcess

CONFIGS = {
    "before": [
        *("--analysis-workers", "1", "--queue-size", "64", "--request-timeout", "600"),
        *("--key-rate", "0", "--address-rate", "0", "--auth-failures-per-min", "0"),
        *("--max-side", "0"),
    ],
    "after": [],
}


def small_image(photo: Path | None) -> bytes:
    """The small request's image: `photo`, else 250x250 smooth noise as JPEG."""
    if photo is not None:
        return photo.read_bytes()
    noise = np.random.default_rng(0).integers(0, 256, (25, 25, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(noise).resize((250, 250), Image.BILINEAR).save(buffer, format="JPEG")
    return buffer.getvalue()


def big_image(side: int) -> bytes:
    """A flat grey `side` x `side` PNG (a few KB for millions of pixels)."""
    buffer = io.BytesIO()
    Image.new("RGB", (side, side), (128, 128, 128)).save(buffer, format="PNG")
    return buffer.getvalue()


class Tally:
    """Statuses, latencies and Retry-After values of one phase (thread-safe)."""

    def __init__(self) -> None:
        self.statuses: Counter[str] = Counter()
        self.latencies: list[float] = []
        self.retry_after: list[int] = []
        self.sent = 0
        self._lock = threading.Lock()

    def send(self, client: httpx.Client, method: str, path: str, **kwargs: Any) -> int:
        """Send one request and count its answer; the status (0 when none came)."""
        with self._lock:
            self.sent += 1
        begin = time.perf_counter()
        try:
            response = client.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            with self._lock:
                self.statuses[f"lost ({type(exc).__name__})"] += 1
            return 0
        elapsed = time.perf_counter() - begin
        with self._lock:
            self.statuses[str(response.status_code)] += 1
            self.latencies.append(elapsed)
            if "retry-after" in response.headers:
                self.retry_after.append(int(response.headers["retry-after"]))
        return response.status_code

    def row(self, config: str, phase: str, seconds: float) -> dict[str, Any]:
        ms = np.array(self.latencies) * 1000
        answered = len(self.latencies)
        return {
            "config": config,
            "phase": phase,
            "sent": self.sent,
            "answered": answered,
            "lost": self.sent - answered,
            "statuses": dict(sorted(self.statuses.items())),
            "seconds": round(seconds, 2),
            "p50_ms": round(float(np.percentile(ms, 50)), 1) if answered else None,
            "p95_ms": round(float(np.percentile(ms, 95)), 1) if answered else None,
            "max_ms": round(float(ms.max()), 1) if answered else None,
            "retry_after_s": [min(self.retry_after), max(self.retry_after)]
            if self.retry_after
            else None,
        }


def small_detects(
    client_of: Any, image: bytes, count: int, clients: int, until: Any, tally: Tally
) -> None:
    """`count` small detects from `clients` threads, while `until()` is false."""

    def loop(index: int) -> None:
        with client_of() as client:
            for _ in range(index, count, clients):
                if until():
                    return
                tally.send(client, "POST", "/v1/detect", files={"image": ("s.jpg", image)})

    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(loop, range(clients)))


def run_config(name: str, args: argparse.Namespace) -> list[dict[str, Any]]:
    """Start a server with configuration `name`, run the phases, stop it."""
    small, big = small_image(args.photo), big_image(args.big)
    rows = []
    with tempfile.TemporaryDirectory(prefix="fs-bench-load-") as tmp:
        home = Path(tmp)
        _, key = KeyStore(home / "keys.sqlite").create("bench", "read")
        with ServerProcess(home, extra_args=CONFIGS[name]) as server:

            def client_of(token: str = key) -> httpx.Client:
                return httpx.Client(
                    base_url=server.url,
                    headers={"Authorization": f"Bearer {token}"},
                    timeout=args.time_limit + 60,
                    trust_env=False,
                )

            with client_of() as client:  # warm-up: the first requests load the models
                for _ in range(3):
                    client.post("/v1/detect", files={"image": ("s.jpg", small)})

            tally, begin = Tally(), time.monotonic()
            deadline = begin + args.time_limit

            def past_deadline() -> bool:
                return time.monotonic() > deadline

            small_detects(client_of, small, args.small, args.clients, past_deadline, tally)
            rows.append(tally.row(name, "small", time.monotonic() - begin))

            big_tally, tally = Tally(), Tally()
            done = threading.Event()

            def big_detect() -> None:
                with client_of() as client:
                    big_tally.send(client, "POST", "/v1/detect", files={"image": ("b.png", big)})
                done.set()

            begin = time.monotonic()
            deadline = begin + args.time_limit
            runner = threading.Thread(target=big_detect)
            runner.start()
            time.sleep(0.5)  # let the big upload reach its analysis first
            small_detects(
                client_of,
                small,
                args.small,
                args.clients,
                lambda: done.is_set() or time.monotonic() > deadline,
                tally,
            )
            small_seconds = time.monotonic() - begin
            runner.join()
            rows.append(tally.row(name, "small, with big", small_seconds))
            rows.append(big_tally.row(name, f"big {args.big}x{args.big}", time.monotonic() - begin))

            for phase, token in (("list", key), ("wrong key", "fs_000000000000_guess")):
                time.sleep(args.pause)  # the address bucket refills between the bursts
                tally, begin = Tally(), time.monotonic()
                with client_of(token) as client:
                    for _ in range(args.burst):
                        if time.monotonic() > begin + args.time_limit:
                            break
                        tally.send(client, "GET", "/v1/galleries")
                rows.append(tally.row(name, f"{phase} x{args.burst}", time.monotonic() - begin))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", type=int, default=30, help="Small detects per phase.")
    parser.add_argument("--clients", type=int, default=2, help="Client threads of small ones.")
    parser.add_argument("--big", type=int, default=4000, help="Side of the big image, pixels.")
    parser.add_argument("--burst", type=int, default=300, help="Requests per rate-limit burst.")
    parser.add_argument("--photo", type=Path, default=None, help="Small image (default noise).")
    parser.add_argument(
        "--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS), help="What to run."
    )
    parser.add_argument("--time-limit", type=float, default=90.0, help="Seconds per phase.")
    parser.add_argument("--pause", type=float, default=None, help="Seconds between bursts.")
    parser.add_argument("--json", type=Path, default=None, help="Write the results here.")
    args = parser.parse_args()
    defaults = ServeConfig()
    if args.pause is None:
        args.pause = defaults.address_burst / defaults.address_rate_per_s

    rows = [row for name in args.configs for row in run_config(name, args)]
    print(
        f"loopback, {args.clients} clients of 250x250 detects; after: {defaults.analysis_slots()}"
        f" analysis slots, queue {defaults.queue_size}, budget {defaults.request_timeout_s:g} s,"
        f" key {defaults.key_rate_per_s:g}/s burst {defaults.key_burst}, auth failures"
        f" {defaults.auth_failures_per_min:g}/min burst {defaults.auth_failure_burst}"
    )
    header = f"{'config':<7} {'phase':<17} {'sent':>5} {'lost':>4} {'p50 ms':>8} {'p95 ms':>8}"
    print(f"{header} {'max ms':>8} {'s':>6}  statuses")
    for r in rows:
        statuses = " ".join(f"{k}:{v}" for k, v in r["statuses"].items())
        print(
            f"{r['config']:<7} {r['phase']:<17} {r['sent']:>5} {r['lost']:>4}"
            f" {r['p50_ms'] or 0:>8.0f} {r['p95_ms'] or 0:>8.0f} {r['max_ms'] or 0:>8.0f}"
            f" {r['seconds']:>6.1f}  {statuses}"
        )
    if args.json:
        write_report(
            args.json,
            "serve-load",
            rows,
            settings=vars(args) | {"photo": str(args.photo), "json": str(args.json)},
            after_defaults=json.loads(defaults.to_json()) | {"slots": defaults.analysis_slots()},
        )


if __name__ == "__main__":
    main()
