"""`facesphere train` and `facesphere prepare`: build training shards and train a model."""

from __future__ import annotations

import logging
from pathlib import Path

import typer

from facesphere.cli.common import PipelineOptions, pipeline_options, print_json

SET_HELP = "Override a config key: key=value, YAML value, dotted keys for sections (repeatable)."


def train(
    config: Path = typer.Option(..., "--config", "-c", help="YAML training config."),
    overrides: list[str] = typer.Option([], "--set", help=SET_HELP),
    stop_at: int | None = typer.Option(
        None, "--stop-at", min=1, help="Stop (with a checkpoint) after this global step."
    ),
) -> None:
    """Train a face embedding model (single process, or under torchrun for DDP)."""
    from facesphere.io.files import check_output
    from facesphere.train.config import load_config
    from facesphere.train.trainer import main_worker

    settings = load_config(config, overrides)
    check_output(settings.output_dir(), settings.data.source, folder=True)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    result = main_worker(settings, stop_at)
    print_json(
        {
            "output": str(result.output),
            "step": result.step,
            "loss": result.loss,
            "best_accuracy": result.best_accuracy,
        }
    )


@pipeline_options()
def prepare(
    src: Path = typer.Argument(..., help="Folder with one sub-folder of photos per identity."),
    out: Path = typer.Argument(..., help="Output folder for shards and manifest.json."),
    workers: int = typer.Option(1, "--workers", "-j", min=1, help="Worker processes."),
    shard_mb: int = typer.Option(256, "--shard-mb", min=1, help="Target shard size in MiB."),
    limit: int | None = typer.Option(None, "--limit", min=1, help="Only the first N identities."),
    template: str = typer.Option(
        "standard112",
        "--template",
        help="Alignment template: standard112 (112x112) or dlib150 (dlib's 150x150 chip, "
        "for the dlib-resnet backbone).",
    ),
    *,
    pipeline: PipelineOptions,
) -> None:
    """Detect, align (standard 112x112 or dlib150) and pack photos into resumable shards."""
    from facesphere.io.files import check_output
    from facesphere.train.prepare import prepare as run_prepare

    check_output(out, src, folder=True)
    manifest = run_prepare(
        src,
        out,
        workers,
        shard_mb << 20,
        pipeline.analyzer_config(),
        limit_identities=limit,
        template=template,
    )
    print_json({"output": str(out), **manifest["counts"]})


def register(app: typer.Typer) -> None:
    """Add `train` and `prepare` to `app`."""
    app.command("train")(train)
    app.command("prepare")(prepare)
