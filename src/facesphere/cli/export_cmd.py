"""`facesphere export`: write a model as ONNX or TorchScript, its model card inside.

Usage: ``facesphere export CHECKPOINT --format onnx|torchscript OUT`` for a trained facesphere
checkpoint (a run's checkpoint folder, a ``rank-0.pt`` file, ``best.pt`` or ``model.pt``), or
``facesphere export --model NAME --format onnx|torchscript OUT`` for a bundled network
(dlib-resnet, sface, dlib-resnet+sface, dlib-mmod). Exported recognizers load with
``FaceAnalyzer(recognizer=OUT)``.
"""

from __future__ import annotations

from pathlib import Path

import typer

from facesphere.cli.common import fail


def export(
    args: list[str] = typer.Argument(
        ..., metavar="[CHECKPOINT] OUT", help="Optional checkpoint, then the output file."
    ),
    model: str | None = typer.Option(
        None,
        "--model",
        "-m",
        help="Bundled model to export: dlib-resnet, sface, dlib-resnet+sface or dlib-mmod.",
    ),
    fmt: str = typer.Option("onnx", "--format", "-f", help="onnx or torchscript."),
    name: str | None = typer.Option(
        None, "--name", help="Model name recorded in a checkpoint's card (default: backbone)."
    ),
) -> None:
    """Export a trained checkpoint or a bundled model to ONNX (dynamic batch) or TorchScript."""
    from facesphere.export import BUNDLED, EXPORT_FORMATS, export_model
    from facesphere.io.files import check_output

    if len(args) > 2:
        fail(f"expected [CHECKPOINT] OUT, got {len(args)} positional arguments")
    checkpoint = Path(args[0]) if len(args) == 2 else None
    out = Path(args[-1])
    if fmt not in EXPORT_FORMATS:
        fail(f"unknown format {fmt!r}; choose one of {', '.join(EXPORT_FORMATS)}")
    if out.is_dir():
        fail(f"{out} is a directory; give a file name")
    if (checkpoint is None) == (model is None):
        fail("give either a CHECKPOINT or --model (" + ", ".join(BUNDLED) + "), not both")
    if model is not None and model not in BUNDLED:
        fail(f"unknown model {model!r}; choose one of {', '.join(BUNDLED)}")
    if checkpoint is not None:
        check_output(out, checkpoint, *(checkpoint.rglob("*") if checkpoint.is_dir() else ()))
    source = checkpoint if checkpoint is not None else model
    assert source is not None
    typer.echo(str(export_model(source, out, fmt, name)))


def register(app: typer.Typer) -> None:
    """Add the `export` command to `app`."""
    app.command("export")(export)
