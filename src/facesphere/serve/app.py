"""The REST service: detection, embedding, verification and gallery identification over HTTP.

Build it with `create_app()` (or run `facesphere serve`). Every `/v1` endpoint needs an API key
(`Authorization: Bearer fs_...`, see `facesphere keys`): a `read` key may analyse images and
query galleries, a `write` key may also change them; a key limited to a gallery gets 403 on
others. Galleries live in the galleries folder (`--galleries`, default
`<home>/galleries`) as `<name>.sqlite`, the folder the `facesphere gallery` verbs use by name,
or, instead, in the database of galleries at `ServeConfig.gallery_url` (`--gallery-url`,
docs/scale.md).

Images come as multipart file parts or as base64 strings in a JSON object (the same field
names); the `/batch` forms of detect, embed and identify take several (`images`) and answer
one result per image, in order, each with its own error where one cannot be used.

What a photo without a face gives, per endpoint: detect, embed and identify answer 200 with an
empty `faces` list; verify answers 422 naming the field (`image_a` or `image_b`); enrolling
answers 422 listing the files (and enrolls nothing).

Cost is bounded per process: analyses run in a fixed number of slots with a bounded queue
before them and a time budget each (503 with Retry-After beyond), and requests are rate
limited per client address, per key and, more strictly, per address after failed
authentications (429 with Retry-After).

A browser needs no key to open the web UI at `/` (it asks for one and keeps it in the tab's
session storage) or this explorer at `/docs` (and `/redoc`), which work without a network.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from typing import TYPE_CHECKING

import anyio.to_thread
from fastapi import FastAPI
from fastapi.concurrency import run_in_threadpool

from facesphere.serve.config import CONFIG_ENV, ServeConfig
from facesphere.serve.handlers import install_error_handlers
from facesphere.serve.limits import BodySizeLimit, KeyGate
from facesphere.serve.pages import install_pages
from facesphere.serve.ratelimit import AddressThrottle, KeyThrottle, TokenBuckets
from facesphere.serve.routes import analysis, galleries, system
from facesphere.serve.state import ServiceState
from facesphere.serve.work import AnalysisGate

if TYPE_CHECKING:
    from facesphere.pipeline.analyzer import FaceAnalyzer

__all__ = ["CONFIG_ENV", "app_from_env", "create_app"]


def create_app(config: ServeConfig | None = None, analyzer: FaceAnalyzer | None = None) -> FastAPI:
    """The service as a FastAPI app, configured by `config` (default `ServeConfig()`).

    analyzer: a ready FaceAnalyzer to share (it keeps its own options); else the service builds
    one from `config.analyzer`, at startup when `config.preload`, otherwise on first use.
    """
    state = ServiceState(config or ServeConfig(), analyzer)
    config = state.config

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        # Admitted analysis requests wait for a slot in threads: leave room for the others.
        threads = anyio.to_thread.current_default_thread_limiter()
        threads.total_tokens = max(threads.total_tokens, state.work.capacity + 16)
        if config.preload:
            await run_in_threadpool(state.analyzer)
        try:
            yield
        finally:
            state.close()

    app = FastAPI(
        title="facesphere",
        summary="Face detection, embedding, verification and identification.",
        description=__doc__,
        version="1",
        lifespan=lifespan,
        docs_url=None,  # served offline by install_pages, with the web UI
        redoc_url=None,
    )
    app.state.service = state
    # The last added runs first: address limits, key check, key limits, body size, queue.
    app.add_middleware(AnalysisGate, work=state.work)
    app.add_middleware(BodySizeLimit, max_bytes=state.max_upload_bytes)
    app.add_middleware(KeyThrottle, buckets=TokenBuckets(config.key_rate_per_s, config.key_burst))
    app.add_middleware(KeyGate, authenticate=state.keys.authenticate)
    app.add_middleware(
        AddressThrottle,
        requests=TokenBuckets(config.address_rate_per_s, config.address_burst),
        failures=TokenBuckets(config.auth_failures_per_min / 60.0, config.auth_failure_burst),
    )
    install_error_handlers(app)
    for routes in (system, analysis, galleries):
        app.include_router(routes.router)
    install_pages(app)
    return app


def app_from_env() -> FastAPI:
    """An app configured by `$FACESPHERE_SERVE_CONFIG` (set by `facesphere serve`), for
    `uvicorn --factory`: each worker process builds its own analyzer at startup."""
    return create_app(replace(ServeConfig.from_env(), preload=True))
