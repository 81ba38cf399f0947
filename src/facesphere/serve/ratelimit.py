"""Rate limits: token buckets per client address, per API key and for failed authentications
per address, answered by 429 with Retry-After (ASGI middleware, before a body is read).

Buckets live in the process: with several worker processes each has its own, so a client
gets up to that many times the configured rates.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable, MutableMapping
from typing import Any

from facesphere.serve.limits import (
    ASGIApp,
    Message,
    Receive,
    Send,
    retry_after_header,
    send_json,
)

MAX_BUCKETS = 100_000


class TokenBuckets:
    """One token bucket per name, refilled at `rate` tokens per second up to `burst`; a
    `rate` of 0 limits nothing.

    Memory stays bounded: a bucket idle long enough to be full again is forgotten (a new one
    is the same), and beyond `max_entries` the longest idle ones are dropped.
    """

    def __init__(
        self,
        rate: float,
        burst: int,
        max_entries: int = MAX_BUCKETS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.rate = float(rate)
        self.burst = int(burst)
        self.max_entries = int(max_entries)
        self.clock = clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # tokens, when

    @property
    def enabled(self) -> bool:
        return self.rate > 0

    def __len__(self) -> int:
        return len(self._buckets)

    def _tokens(self, name: str, now: float) -> float:
        tokens, when = self._buckets.get(name, (float(self.burst), now))
        return min(float(self.burst), tokens + (now - when) * self.rate)

    def _wait(self, tokens: float) -> int:
        """Whole seconds (at least 1) until a bucket holding `tokens` has one."""
        return max(1, math.ceil((1.0 - tokens) / self.rate - 1e-9))  # no float fuzz up

    def wait(self, name: str) -> int:
        """0 when `name` has a token now, else the seconds until it has one."""
        if not self.enabled:
            return 0
        tokens = self._tokens(name, self.clock())
        return 0 if tokens >= 1.0 else self._wait(tokens)

    def take(self, name: str) -> int:
        """Take one of `name`'s tokens and return 0; when it has none, take nothing and
        return the seconds until it has one."""
        if not self.enabled:
            return 0
        now = self.clock()
        tokens = self._tokens(name, now)
        if tokens < 1.0:
            return self._wait(tokens)
        self._buckets[name] = (tokens - 1.0, now)
        self._buckets.move_to_end(name)
        self._forget_idle(now)
        return 0

    def _forget_idle(self, now: float) -> None:
        refilled_after = self.burst / self.rate  # an untouched bucket is full by then
        while self._buckets:
            name, (_, when) = next(iter(self._buckets.items()))
            if now - when < refilled_after and len(self._buckets) <= self.max_entries:
                break
            del self._buckets[name]


def client_address(scope: MutableMapping[str, Any]) -> str:
    """The client's address as the server sees it (uvicorn's, after trusted proxy headers)."""
    client = scope.get("client")
    return str(client[0]) if client else "unknown"


async def send_429(send: Send, detail: str, wait: int) -> None:
    """Answer 429 with `detail` and Retry-After `wait` seconds."""
    await send_json(send, 429, f"{detail}; retry in {wait} s", retry_after_header(wait))


class AddressThrottle:
    """Rate limits per client address on paths under `prefix`, outside the key check.

    An address that used up its failed-authentication allowance gets 429 before anything
    else is looked at (no key is hashed); otherwise a request takes a token from the address's
    bucket (429 when empty), and a 401 answer takes one from its failure bucket.
    """

    def __init__(
        self,
        app: ASGIApp,
        requests: TokenBuckets,
        failures: TokenBuckets,
        prefix: str = "/v1/",
    ) -> None:
        self.app = app
        self.requests = requests
        self.failures = failures
        self.prefix = prefix

    async def __call__(self, scope: MutableMapping[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(self.prefix):
            await self.app(scope, receive, send)
            return
        address = client_address(scope)
        wait = self.failures.wait(address)
        if wait:
            await send_429(send, "too many failed authentications from this address", wait)
            return
        wait = self.requests.take(address)
        if wait:
            rate = self.requests.rate
            await send_429(send, f"rate limit of {rate:g} requests/s per address reached", wait)
            return

        async def counting_send(message: Message) -> None:
            if message["type"] == "http.response.start" and message["status"] == 401:
                self.failures.take(address)
            await send(message)

        await self.app(scope, receive, counting_send)


class KeyThrottle:
    """Rate limit per API key (by key id), for requests KeyGate accepted; inside KeyGate."""

    def __init__(self, app: ASGIApp, buckets: TokenBuckets) -> None:
        self.app = app
        self.buckets = buckets

    async def __call__(self, scope: MutableMapping[str, Any], receive: Receive, send: Send) -> None:
        key = scope.get("state", {}).get("api_key") if scope["type"] == "http" else None
        if key is not None:
            wait = self.buckets.take(key.id)
            if wait:
                rate = self.buckets.rate
                await send_429(send, f"rate limit of {rate:g} requests/s per key reached", wait)
                return
        await self.app(scope, receive, send)
