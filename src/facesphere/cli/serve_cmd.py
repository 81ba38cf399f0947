"""`facesphere serve`: run the REST service with uvicorn (loopback only unless told otherwise)."""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path

import typer

from facesphere.cli.common import PipelineOptions, fail, pipeline_options
from facesphere.serve.config import ServeConfig

# The options' defaults are ServeConfig's, so that the CLI and `create_app` agree.
DEFAULTS = ServeConfig()


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@pipeline_options("verify")
def serve(
    host: str = typer.Option(
        "127.0.0.1", "--host", help="Address to bind (default loopback only)."
    ),
    port: int = typer.Option(8000, "--port", min=0, max=65535, help="TCP port."),
    workers: int = typer.Option(
        1, "--workers", min=1, max=64, help="Worker processes (one analyzer each)."
    ),
    galleries: Path | None = typer.Option(
        None,
        "--galleries",
        help="Folder of the galleries served, by name (default: $FACESPHERE_HOME/galleries, "
        "where `facesphere gallery` verbs put named galleries). Not with --gallery-url.",
    ),
    max_upload_mb: float = typer.Option(
        DEFAULTS.max_upload_bytes / 2**20,
        "--max-upload-mb",
        min=0.001,
        help="Largest request body, in MiB (413 beyond).",
    ),
    max_pixels: int = typer.Option(
        DEFAULTS.max_pixels, "--max-pixels", min=1, help="Largest image accepted, in pixels."
    ),
    max_images: int = typer.Option(
        DEFAULTS.max_images,
        "--max-images",
        min=1,
        help="Images per request to a batch endpoint or an enrollment (413 beyond).",
    ),
    torch_threads: int | None = typer.Option(
        None,
        "--threads",
        min=1,
        help="Torch threads per worker (default: cores / workers / analysis workers, >= 1).",
    ),
    analysis_workers: int | None = typer.Option(
        None,
        "--analysis-workers",
        min=1,
        help="Analyses run at once per worker (default: cores / workers, 2 to 8).",
    ),
    queue_size: int = typer.Option(
        DEFAULTS.queue_size,
        "--queue-size",
        min=0,
        help="Analysis requests waiting per worker (503 beyond).",
    ),
    request_timeout: float = typer.Option(
        DEFAULTS.request_timeout_s,
        "--request-timeout",
        min=0.001,
        help="Seconds an analysis request may take, queue included (503 beyond).",
    ),
    key_rate: float = typer.Option(
        DEFAULTS.key_rate_per_s,
        "--key-rate",
        min=0.0,
        help="Requests/s per API key (0: no limit; 429 beyond).",
    ),
    key_burst: int = typer.Option(
        DEFAULTS.key_burst, "--key-burst", min=1, help="Burst per API key."
    ),
    address_rate: float = typer.Option(
        DEFAULTS.address_rate_per_s,
        "--address-rate",
        min=0.0,
        help="Requests/s per client address (0: no limit).",
    ),
    address_burst: int = typer.Option(
        DEFAULTS.address_burst, "--address-burst", min=1, help="Burst per client address."
    ),
    auth_failures: float = typer.Option(
        DEFAULTS.auth_failures_per_min,
        "--auth-failures-per-min",
        min=0.0,
        help="Failed authentications/minute per address before it gets 429 (0: no limit).",
    ),
    auth_failure_burst: int = typer.Option(
        DEFAULTS.auth_failure_burst,
        "--auth-failure-burst",
        min=1,
        help="Failed authentications allowed at once.",
    ),
    gallery_url: str | None = typer.Option(
        DEFAULTS.gallery_url,
        "--gallery-url",
        help="Serve the galleries of this database (postgresql://user@host/db) instead of a "
        "galleries folder: every replica pointed at it serves the same galleries. Not with "
        "--galleries.",
    ),
    log_level: str = typer.Option("info", "--log-level", help="uvicorn log level."),
    *,
    pipeline: PipelineOptions,
) -> None:
    """Serve detection, embedding, verification and galleries over HTTP (OpenAPI at /docs).

    Requests need an API key from `facesphere keys create`. Keys live in $FACESPHERE_HOME
    (default ~/.facesphere); galleries in --galleries (default $FACESPHERE_HOME/galleries),
    or, instead, in the database of --gallery-url.
    """
    import uvicorn

    from facesphere.paths import facesphere_home
    from facesphere.serve.config import CONFIG_ENV, default_analysis_workers

    if galleries is not None and gallery_url is not None:
        fail(
            "give --galleries (a folder of galleries) or --gallery-url (a database of "
            "galleries), not both"
        )
    pipeline.check()  # bad options fail here, before the workers start
    if not _is_loopback(host):
        typer.echo(
            f"warning: binding {host}, reachable from other machines; the service speaks "
            "plain HTTP, so put it behind a TLS proxy",
            err=True,
        )
    if analysis_workers is None:
        analysis_workers = default_analysis_workers(workers)
    if torch_threads is None:
        torch_threads = max(1, (os.cpu_count() or 1) // workers // analysis_workers)
    config = ServeConfig(  # ConfigError (exit 2) for a non-finite number
        home=str(facesphere_home()),
        galleries=None if galleries is None else str(galleries.expanduser().resolve()),
        gallery_url=gallery_url,
        max_upload_bytes=int(max_upload_mb * 1024 * 1024),
        max_pixels=max_pixels,
        max_images=max_images,
        analyzer=pipeline.analyzer_config(),
        torch_threads=torch_threads,
        analysis_workers=analysis_workers,
        queue_size=queue_size,
        request_timeout_s=request_timeout,
        key_rate_per_s=key_rate,
        key_burst=key_burst,
        address_rate_per_s=address_rate,
        address_burst=address_burst,
        auth_failures_per_min=auth_failures,
        auth_failure_burst=auth_failure_burst,
    )
    # Worker processes read their configuration from the environment they inherit.
    os.environ[CONFIG_ENV] = config.to_json()
    try:
        uvicorn.run(
            "facesphere.serve.app:app_from_env",
            factory=True,
            host=host,
            port=port,
            workers=workers,
            log_level=log_level,
        )
    except (OSError, ValueError) as exc:
        fail(str(exc), 1)


def register(app: typer.Typer) -> None:
    """Add the `serve` command to the CLI."""
    app.command("serve")(serve)
