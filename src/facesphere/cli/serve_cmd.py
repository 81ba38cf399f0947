"""`facesphere serve`: run the REST service with uvicorn (loopback only unless told otherwise)."""

from __future__ import annotations

import ipaddress
import os

import typer

from facesphere.cli.common import PipelineOptions, fail, pipeline_options
from facesphere.io.image import DEFAULT_MAX_PIXELS


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
    max_upload_mb: float = typer.Option(
        10.0, "--max-upload-mb", min=0.001, help="Largest request body, in MiB (413 beyond)."
    ),
    max_pixels: int = typer.Option(
        DEFAULT_MAX_PIXELS, "--max-pixels", min=1, help="Largest image accepted, in pixels."
    ),
    torch_threads: int | None = typer.Option(
        None, "--threads", min=1, help="Torch threads per worker (default: cores / workers)."
    ),
    log_level: str = typer.Option("info", "--log-level", help="uvicorn log level."),
    *,
    pipeline: PipelineOptions,
) -> None:
    """Serve detection, embedding, verification and galleries over HTTP (OpenAPI at /docs).

    Requests need an API key from `facesphere keys create`. Keys and galleries live in
    $FACESPHERE_HOME (default ~/.facesphere).
    """
    import uvicorn

    from facesphere.paths import facesphere_home
    from facesphere.serve.config import CONFIG_ENV, ServeConfig

    pipeline.check()  # bad options fail here, before the workers start
    if not _is_loopback(host):
        typer.echo(
            f"warning: binding {host}, reachable from other machines; the service speaks "
            "plain HTTP, so put it behind a TLS proxy",
            err=True,
        )
    if torch_threads is None:
        torch_threads = max(1, (os.cpu_count() or 1) // workers)
    config = ServeConfig(
        home=str(facesphere_home()),
        max_upload_bytes=int(max_upload_mb * 1024 * 1024),
        max_pixels=max_pixels,
        analyzer=pipeline.analyzer_config(),
        torch_threads=torch_threads,
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
