"""Hand-made HTTP inputs for the service tests: PNG headers that declare any size, and ASGI
scopes for driving the app without a client (to see what it reads before answering)."""

from __future__ import annotations

import struct
import zlib
from typing import Any


def png_header(width: int, height: int) -> bytes:
    """A PNG whose header declares `width` x `height` RGB pixels (and holds almost none)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    pixels = zlib.compress(b"\x00" * 16)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")
    )


def upload_scope(path: str, headers: list[tuple[bytes, bytes]]) -> dict[str, Any]:
    """The ASGI scope of a multipart POST to `path` from 127.0.0.1 with extra `headers`."""
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"content-type", b"multipart/form-data; boundary=x"), *headers],
        "client": ("127.0.0.1", 5000),
        "server": ("testserver", 80),
    }
