"""Verification requests per second through the REST service over loopback.

Starts `facesphere serve` on 127.0.0.1 (a free port, a temporary FACESPHERE_HOME with one API
key) for each worker count asked for, sends a fixed number of `POST /v1/verify` requests (two
250x250 LFW photos each) from a few client threads, stops the server, and prints requests/s
with latency percentiles. A run stops by itself at `--time-limit` seconds per configuration.
Usage:

    python bench/serve.py --requests 60 --clients 4 --workers 1 2 --json serve.json
"""

from __future__ import annotations

import argparse
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from report import write_report  # bench/report.py

from facesphere.io.data import data_dir
from facesphere.serve.keys import KeyStore
from facesphere.serve.process import ServerProcess

PAIRS = [
    (("Colin_Powell", 1), ("Colin_Powell", 2)),
    (("Tony_Blair", 1), ("Tony_Blair", 2)),
    (("Colin_Powell", 3), ("Hugo_Chavez", 1)),
    (("Ariel_Sharon", 1), ("Tony_Blair", 3)),
]


def _photo(name: str, number: int) -> bytes:
    return (data_dir() / "lfw" / "images" / name / f"{name}_{number:04d}.jpg").read_bytes()


def run_one(
    workers: int, requests: int, clients: int, time_limit: float, warmup: int
) -> dict[str, Any]:
    """Start a server with `workers` processes, time `requests` verifications, stop it."""
    pairs = [(_photo(*a), _photo(*b)) for a, b in PAIRS]
    with tempfile.TemporaryDirectory(prefix="fs-bench-serve-") as tmp:
        home = Path(tmp)
        _, key = KeyStore(home / "keys.sqlite").create("bench", "read")
        started_at = time.monotonic()
        with ServerProcess(home, workers=workers) as server:
            startup_s = time.monotonic() - started_at
            headers = {"Authorization": f"Bearer {key}"}

            def send(client: httpx.Client, number: int) -> tuple[bool, float]:
                a, b = pairs[number % len(pairs)]
                begin = time.perf_counter()
                try:
                    response = client.post(
                        "/v1/verify", files={"image_a": ("a.jpg", a), "image_b": ("b.jpg", b)}
                    )
                    ok = response.status_code == 200
                except httpx.HTTPError:
                    ok = False
                return ok, time.perf_counter() - begin

            def make_client() -> httpx.Client:
                return httpx.Client(
                    base_url=server.url, headers=headers, timeout=time_limit, trust_env=False
                )

            # Warm-up: every worker's first requests are slower (lazy torch initialisation).
            with make_client() as client:
                for number in range(warmup):
                    send(client, number)

            deadline = time.monotonic() + time_limit
            begin = time.perf_counter()

            def client_loop(index: int) -> list[tuple[bool, float]]:
                results = []
                with make_client() as client:
                    for number in range(index, requests, clients):
                        if time.monotonic() > deadline:
                            break
                        results.append(send(client, number))
                return results

            with ThreadPoolExecutor(clients) as pool:
                results = [r for batch in pool.map(client_loop, range(clients)) for r in batch]
            elapsed = time.perf_counter() - begin
    latencies = np.array([t for ok, t in results if ok]) * 1000
    done = int(sum(ok for ok, _ in results))
    return {
        "workers": workers,
        "clients": clients,
        "requests": requests,
        "completed": done,
        "errors": len(results) - done,
        "timed_out": len(results) < requests,
        "seconds": round(elapsed, 3),
        "requests_per_s": round(done / elapsed, 3) if elapsed > 0 else 0.0,
        "p50_ms": round(float(np.percentile(latencies, 50)), 1) if done else None,
        "p95_ms": round(float(np.percentile(latencies, 95)), 1) if done else None,
        "startup_s": round(startup_s, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=60, help="Timed requests per run.")
    parser.add_argument("--clients", type=int, default=4, help="Concurrent client threads.")
    parser.add_argument(
        "--workers", type=int, nargs="+", default=[1, 2], help="Server worker counts to run."
    )
    parser.add_argument("--warmup", type=int, default=4, help="Untimed requests first.")
    parser.add_argument(
        "--time-limit", type=float, default=120.0, help="Seconds per run before it stops."
    )
    parser.add_argument("--json", type=Path, default=None, help="Write the results here.")
    args = parser.parse_args()

    rows = [
        run_one(w, args.requests, args.clients, args.time_limit, args.warmup) for w in args.workers
    ]
    print(f"verify over loopback, {args.clients} clients, 2 x 250x250 JPEG per request")
    print(f"{'workers':>7} {'done':>6} {'errors':>6} {'req/s':>7} {'p50 ms':>8} {'p95 ms':>8}")
    for r in rows:
        print(
            f"{r['workers']:>7} {r['completed']:>6} {r['errors']:>6} {r['requests_per_s']:>7.2f}"
            f" {r['p50_ms'] or 0:>8.0f} {r['p95_ms'] or 0:>8.0f}"
            + ("  (stopped at the time limit)" if r["timed_out"] else "")
        )
    if args.json:
        write_report(args.json, "serve-verify", rows)


if __name__ == "__main__":
    main()
