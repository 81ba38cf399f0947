"""`facesphere export`: write a model as ONNX or TorchScript.

Usage: ``facesphere export CHECKPOINT --format onnx|torchscript OUT`` for a trained facesphere
checkpoint (a run's checkpoint folder, a ``rank-0.pt`` file, ``best.pt`` or ``model.pt``), or
``facesphere export --model dlib-resnet|dlib-mmod --format onnx|torchscript OUT`` for the
bundled dlib networks. A checkpoint export records its preprocessing inside the file, so
``FaceAnalyzer(recognizer=OUT)`` can use it.
"""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path

import typer

from facesphere.cli.common import EXIT_FAILURE, fail


def _export_checkpoint(checkpoint: Path, out: Path, fmt: str) -> Path:
    """Export a trained checkpoint; a missing or unreadable one is a one-line exit 2."""
    from facesphere.train.export import export_checkpoint

    if not checkpoint.exists():
        fail(f"checkpoint {checkpoint} not found")
    if checkpoint.is_dir() and not (checkpoint / "rank-0.pt").is_file():
        fail(f"{checkpoint} is a folder without rank-0.pt (not a checkpoint folder)")
    try:
        return export_checkpoint(checkpoint, out, fmt)
    except (
        ValueError,
        KeyError,
        RuntimeError,
        EOFError,
        pickle.UnpicklingError,
        zipfile.BadZipFile,
    ) as exc:
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        fail(f"cannot export {checkpoint}: {message}")
    except OSError as exc:
        fail(f"export failed: {exc}", EXIT_FAILURE)


def export(
    args: list[str] = typer.Argument(
        ..., metavar="[CHECKPOINT] OUT", help="Optional checkpoint, then the output file."
    ),
    model: str | None = typer.Option(
        None, "--model", "-m", help="Bundled model to export: dlib-resnet or dlib-mmod."
    ),
    fmt: str = typer.Option("onnx", "--format", "-f", help="onnx or torchscript."),
) -> None:
    """Export a trained checkpoint or a bundled model to ONNX (dynamic batch) or TorchScript."""
    from facesphere.pretrained.export import EXPORT_FORMATS, EXPORTABLE_MODELS, export_model

    if len(args) > 2:
        fail(f"expected [CHECKPOINT] OUT, got {len(args)} positional arguments")
    checkpoint = Path(args[0]) if len(args) == 2 else None
    out = Path(args[-1])
    if fmt not in EXPORT_FORMATS:
        fail(f"unknown format {fmt!r}; choose one of {', '.join(EXPORT_FORMATS)}")
    if out.is_dir():
        fail(f"{out} is a directory; give a file name")
    if checkpoint is not None:
        if model is not None:
            fail("give either a CHECKPOINT or --model, not both")
        typer.echo(str(_export_checkpoint(checkpoint, out, fmt)))
        return
    if model is None:
        fail("give a CHECKPOINT or --model (" + ", ".join(EXPORTABLE_MODELS) + ")")
    if model not in EXPORTABLE_MODELS:
        fail(f"unknown model {model!r}; choose one of {', '.join(EXPORTABLE_MODELS)}")
    try:
        path = export_model(model, out, fmt)
    except (OSError, ValueError) as exc:
        fail(f"export failed: {exc}", EXIT_FAILURE)
    typer.echo(str(path))


def register(app: typer.Typer) -> None:
    """Add the `export` command to `app`."""
    app.command("export")(export)
