"""`facesphere train-detector`, `facesphere train-landmarks` and `facesphere detector-labels`:
the ThunderNet face detector."""

from __future__ import annotations

from pathlib import Path

import typer

from facesphere.cli.train_cmd import SET_HELP


def train_detector_command(
    config: Path = typer.Option(..., "--config", "-c", help="YAML config (configs/thunder.yaml)."),
    overrides: list[str] = typer.Option([], "--set", help=SET_HELP),
) -> None:
    """Train the ThunderNet face detector (resume with --set resume=auto)."""
    from facesphere.train.thunder.config import load_config
    from facesphere.train.thunder.train import train_detector

    result = train_detector(load_config(config, overrides))
    typer.echo(f"trained {result.steps} steps, loss {result.last_loss:.4f}: {result.model_path}")


def train_landmarks_command(
    config: Path = typer.Option(
        ..., "--config", "-c", help="YAML config (configs/thunder_landmarks.yaml)."
    ),
    overrides: list[str] = typer.Option([], "--set", help=SET_HELP),
) -> None:
    """Train thunder's second landmark stage on a trained detector's boxes (landmarks5)."""
    from facesphere.train.thunder.config import load_landmark_config
    from facesphere.train.thunder.landmarks import train_landmarks

    result = train_landmarks(load_landmark_config(config, overrides))
    typer.echo(f"trained on {result.faces} faces, loss {result.last_loss:.4f}: {result.model_path}")


def detector_labels_command(
    out: Path = typer.Option(Path("out/thunder/labels.json"), "--out", help="Label file."),
    limit: int | None = typer.Option(None, "--limit", help="At most this many photos per set."),
    teachers: str = typer.Option(
        "yunet,retinaface", "--teachers", help="Comma list of pretrained detectors as teachers."
    ),
) -> None:
    """Label detector training photos (never LFW): WIDER's training part keeps its boxes,
    celeba299 and ORL get the teachers' faces; landmarks come from the teachers."""
    from facesphere.io.data import data_dir
    from facesphere.io.files import check_output
    from facesphere.train.thunder.labels import label_photos, save_labels

    check_output(out)
    names = tuple(name.strip() for name in teachers.split(",") if name.strip())
    labels = label_photos(data_dir(), limit=limit, teachers=names)
    save_labels(labels, out)
    faces = sum(len(item.faces) for item in labels)
    typer.echo(f"{len(labels)} photos, {faces} faces -> {out}")


def register(app: typer.Typer) -> None:
    """Add the detector commands to the CLI."""
    app.command("train-detector")(train_detector_command)
    app.command("train-landmarks")(train_landmarks_command)
    app.command("detector-labels")(detector_labels_command)
