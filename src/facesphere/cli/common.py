"""Shared pieces of the CLI: error exits, JSON output, pipeline options."""

from __future__ import annotations

import json
import sys
from enum import Enum
from typing import Any, NoReturn

import typer

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_BAD_INPUT = 2
EXIT_NO_FACE = 3


class Engine(str, Enum):
    torch = "torch"
    dlib = "dlib"


def fail(message: str, code: int = EXIT_BAD_INPUT) -> NoReturn:
    """Print a one-line error on stderr and exit with `code`."""
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def print_json(data: Any) -> None:
    """Print `data` as indented JSON on stdout."""
    sys.stdout.write(json.dumps(data, indent=2) + "\n")


DetectorOption = typer.Option("cnn", "--detector", "-d", help="Face detector: cnn (MMOD) or hog.")
EngineOption = typer.Option(
    Engine.torch, "--engine", help="torch: dlib's models rebuilt in torch; dlib: dlib itself."
)
DeviceOption = typer.Option("cpu", "--device", help="cpu or cuda (torch engine).")
UpsampleOption = typer.Option(
    None, "--upsample", min=0, max=4, help="Detector upsampling (default: the detector's own)."
)


def build_analyzer(
    detector: str, engine: Engine, upsample: int | None, device: str = "cpu", **kwargs: Any
):
    """A FaceAnalyzer, with configuration errors turned into exit code 2."""
    from facesphere.analyzer import FaceAnalyzer

    try:
        return FaceAnalyzer(
            detector=detector, engine=engine.value, device=device, upsample=upsample, **kwargs
        )
    except (KeyError, ValueError, ImportError, RuntimeError, OSError) as exc:
        fail(str(exc.args[0]) if exc.args else str(exc))
