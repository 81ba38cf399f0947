"""A real PostgreSQL server with pgvector for the tests: pgserver's binaries, initialised and
started in a temporary folder, stopped at the end of the session."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest


def start_server(folder: Path):
    """Start a server in `folder`; its pgserver handle. Where it cannot start, the tests that
    need it skip with the reason, except under CI (CI=true), where they fail."""
    try:
        import pgserver
        import psycopg

        server = pgserver.get_server(folder, cleanup_mode="stop")
        with psycopg.connect(server.get_uri(), autocommit=True) as conn:
            conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
    except Exception as exc:  # a missing package, binary, or a server refusing to start
        reason = f"PostgreSQL + pgvector (pgserver) cannot start: {type(exc).__name__}: {exc}"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(reason)
        pytest.skip(f"SKIPPED LOUDLY: {reason} (install the dev extra: pip install -e .[dev])")
    return server


def gallery_url(base: str, name: str | None = None) -> str:
    """The URL of gallery `name` (default: a fresh one) in the database at `base`."""
    sep = "&" if "?" in base else "?"
    return f"{base}{sep}gallery={name or 'g' + uuid.uuid4().hex[:12]}"
