"""`facesphere export`: write a model as ONNX or TorchScript.

Usage: ``facesphere export [CHECKPOINT] --model NAME --format onnx|torchscript OUT``. Only the
bundled dlib networks (``--model dlib-resnet`` or ``dlib-mmod``) can be exported for now;
CHECKPOINT is reserved for trained facesphere checkpoints.
"""

from __future__ import annotations

from pathlib import Path

import typer

from facesphere.cli.common import EXIT_FAILURE, fail


def export(
    args: list[str] = typer.Argument(
        ..., metavar="[CHECKPOINT] OUT", help="Optional checkpoint, then the output file."
    ),
    model: str | None = typer.Option(
        None, "--model", "-m", help="Model to export: dlib-resnet or dlib-mmod."
    ),
    fmt: str = typer.Option("onnx", "--format", "-f", help="onnx or torchscript."),
) -> None:
    """Export a model to ONNX (dynamic batch axis) or TorchScript."""
    from facesphere.pretrained.export import EXPORT_FORMATS, EXPORTABLE_MODELS, export_model

    if len(args) > 2:
        fail(f"expected [CHECKPOINT] OUT, got {len(args)} positional arguments")
    checkpoint = args[0] if len(args) == 2 else None
    out = Path(args[-1])
    if checkpoint is not None:
        fail(
            "exporting a CHECKPOINT is not supported yet; use --model "
            + "|".join(EXPORTABLE_MODELS)
        )
    if model is None:
        fail("--model is required (" + ", ".join(EXPORTABLE_MODELS) + ")")
    if model not in EXPORTABLE_MODELS:
        fail(f"unknown model {model!r}; choose one of {', '.join(EXPORTABLE_MODELS)}")
    if fmt not in EXPORT_FORMATS:
        fail(f"unknown format {fmt!r}; choose one of {', '.join(EXPORT_FORMATS)}")
    if out.is_dir():
        fail(f"{out} is a directory; give a file name")
    try:
        path = export_model(model, out, fmt)
    except (OSError, ValueError) as exc:
        fail(f"export failed: {exc}", EXIT_FAILURE)
    typer.echo(str(path))


def register(app: typer.Typer) -> None:
    """Add the `export` command to `app`."""
    app.command("export")(export)
