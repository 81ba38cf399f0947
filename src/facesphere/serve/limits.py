"""ASGI middleware refusing request bodies over a size limit with 413, by Content-Length and by
counting the bytes actually received (chunked uploads declare no length)."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[MutableMapping[str, Any], Receive, Send], Awaitable[None]]


class BodyTooLargeError(Exception):
    """Raised from `receive` once a request body passes the limit."""


async def send_json(send: Send, status: int, detail: str) -> None:
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
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


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
