"""ASGI middleware that answers before the app reads a request body: 401 for a request to a
keyed path without a valid API key, 413 for a body over the size limit (by Content-Length and
by counting the bytes actually received: chunked uploads declare no length); and the raw JSON
answers the service's middleware share (`ratelimit.py`, `work.py`)."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from starlette.concurrency import run_in_threadpool

from facesphere.errors import FacesphereError

Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[MutableMapping[str, Any], Receive, Send], Awaitable[None]]


class BodyTooLargeError(FacesphereError):
    """Raised from `receive` once a request body passes the limit."""

    http_status = 413


_BEARER = [(b"www-authenticate", b"Bearer")]


def retry_after_header(seconds: int) -> list[tuple[bytes, bytes]]:
    """The Retry-After header of a raw ASGI answer."""
    return [(b"retry-after", str(seconds).encode())]


async def send_json(
    send: Send, status: int, detail: str, headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    """Send a whole `{"detail": ...}` JSON response."""
    body = json.dumps({"detail": detail}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
                *(headers or []),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class KeyGate:
    """Answer 401 to requests under `prefix` whose bearer key `authenticate` rejects, without
    reading their body (FastAPI parses an upload before its dependencies run). An accepted
    key is left in the request state (`request.state.api_key`); the endpoints check its scope
    and gallery themselves.
    """

    def __init__(
        self, app: ASGIApp, authenticate: Callable[[str], object], prefix: str = "/v1/"
    ) -> None:
        self.app = app
        self.authenticate = authenticate
        self.prefix = prefix

    async def __call__(self, scope: MutableMapping[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(self.prefix):
            await self.app(scope, receive, send)
            return
        header = next(
            (v for k, v in scope.get("headers", []) if k.lower() == b"authorization"), b""
        )
        kind, _, token = header.decode("latin-1").partition(" ")
        if kind.lower() != "bearer" or not token.strip():
            await send_json(send, 401, "missing API key (Authorization: Bearer <key>)", _BEARER)
            return
        key = await run_in_threadpool(self.authenticate, token.strip())
        if key is None:
            await send_json(send, 401, "invalid or revoked API key", _BEARER)
            return
        scope.setdefault("state", {})["api_key"] = key  # request.state.api_key in the app
        await self.app(scope, receive, send)


class BodySizeLimit:
    """Answer 413 to requests whose body is (or turns out to be) over `max_bytes`.

    A declared Content-Length over the limit is refused before the app runs; otherwise the
    received bytes are counted and, past the limit, reading fails and whatever the app would
    have answered is replaced by the 413.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = int(max_bytes)

    def _message(self) -> str:
        return f"request body over the limit of {self.max_bytes} bytes"

    async def __call__(self, scope: MutableMapping[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", []):
            if name.lower() == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    await send_json(send, 400, "invalid Content-Length header")
                    return
                if declared > self.max_bytes:
                    await send_json(send, 413, self._message())
                    return
        state = {"received": 0, "exceeded": False, "started": False, "answered": False}

        async def limited_receive() -> Message:
            message = await receive()
            if message["type"] == "http.request":
                state["received"] += len(message.get("body", b""))
                if state["received"] > self.max_bytes:
                    state["exceeded"] = True
                    raise BodyTooLargeError(self._message())
            return message

        async def guarded_send(message: Message) -> None:
            if state["exceeded"]:
                # The app answered after reading failed (e.g. as a parse error): say why.
                if not state["started"] and not state["answered"]:
                    state["answered"] = True
                    await send_json(send, 413, self._message())
                return
            if message["type"] == "http.response.start":
                state["started"] = True
            await send(message)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except Exception:
            if not state["exceeded"]:
                raise
            if not state["started"] and not state["answered"]:
                state["answered"] = True
                await send_json(send, 413, self._message())
