"""Shared pieces of the CLI: the Typer class that maps errors to exit codes, JSON output, and
the pipeline options every pipeline verb takes."""

from __future__ import annotations

import functools
import inspect
import json
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass
from enum import Enum
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import typer

from facesphere.defaults import DEFAULT_DETECTOR, DEFAULT_RECOGNIZER
from facesphere.errors import FacesphereError

if TYPE_CHECKING:
    from facesphere.pipeline.analyzer import FaceAnalyzer
    from facesphere.pipeline.executors import Executor

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_BAD_INPUT = 2
EXIT_NO_FACE = 3

T = TypeVar("T")


def fail(message: str, code: int = EXIT_BAD_INPUT) -> NoReturn:
    """Print a one-line error on stderr and exit with `code`."""
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def one_line(error: BaseException) -> str:
    """The first line of an error's message (its type name when it has none)."""
    text = str(error)
    return text.splitlines()[0] if text else type(error).__name__


def guarded(function: Callable[..., T]) -> Callable[..., T]:
    """`function` with every FacesphereError that escapes it turned into a one-line exit with
    the error's exit code (2 bad input, 3 no face); the signature stays for Typer."""

    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> T:
        try:
            return function(*args, **kwargs)
        except FacesphereError as exc:
            fail(one_line(exc), exc.exit_code)

    return wrapper


class FacesphereTyper(typer.Typer):
    """A Typer app whose commands report facesphere's errors as one line and an exit code."""

    def command(self, *args: Any, **kwargs: Any) -> Callable[[Callable[..., T]], Callable[..., T]]:
        register = super().command(*args, **kwargs)

        def decorator(function: Callable[..., T]) -> Callable[..., T]:
            register(guarded(function))
            return function

        return decorator


def print_json(data: Any) -> None:
    """Print `data` as indented JSON on stdout."""
    sys.stdout.write(json.dumps(data, indent=2) + "\n")


WorkersOption = typer.Option(
    None,
    "--workers",
    "-j",
    min=1,
    help="Worker processes (default: one per core); with --ray local, the cluster's CPUs; "
    "with a --ray address, the number of Ray workers (default: one per CPU of the cluster).",
)
RayOption = typer.Option(
    None,
    "--ray",
    metavar="ADDRESS",
    help="Run the analysis on Ray (facesphere's `ray` extra): `local` starts a cluster on "
    "this machine, any other value is the address of a running one (auto, HOST:PORT, "
    "ray://HOST:PORT). Default: a local process pool.",
)


def batch_executor(workers: int | None, ray: str | None) -> Executor:
    """The executor of the --workers and --ray options: a local process pool, or Ray."""
    from facesphere.pipeline.executors import create_executor

    if ray is None:
        return create_executor("local", workers=workers)
    return create_executor("ray", address=ray, workers=workers)


class Engine(str, Enum):
    torch = "torch"
    dlib = "dlib"


class MainFace(str, Enum):
    """Which face of a photo to take (see `facesphere.pipeline.analyzer.main_face`)."""

    central = "central"
    largest = "largest"


@dataclass
class PipelineOptions:
    """The pipeline options shared by every pipeline verb (FaceAnalyzer's arguments), and the
    decision options of the verbs that decide: `threshold` with `far` (verification) or with
    `fpir` (identification against a gallery)."""

    detector: str = DEFAULT_DETECTOR
    landmarker: str = "auto"
    recognizer: str = DEFAULT_RECOGNIZER
    engine: str | None = None
    device: str = "cpu"
    upsample: int | None = None
    max_side: int | None = None
    threshold: float | None = None
    far: float | None = None
    fpir: float | None = None
    decision: str | None = None  # "verify", "identify" or None: which options the verb has

    def analyzer_config(self) -> dict[str, Any]:
        """Keyword arguments of FaceAnalyzer for these options: a verification threshold or
        FAR goes to the analyzer; an identification one is the gallery's business."""
        config = asdict(self)
        for key in ("fpir", "decision"):
            config.pop(key)
        if self.decision != "verify":
            config.pop("threshold")
            config.pop("far")
        return config

    def check(self) -> None:
        """Check the options without loading a model (ConfigError / ModelError, which the
        verbs' FacesphereTyper turns into a one-line exit 2)."""
        from facesphere.pipeline.analyzer import check_config

        config = self.analyzer_config()
        config.pop("threshold", None)
        config.pop("far", None)
        check_config(**config)

    def build(self, **extra: Any) -> FaceAnalyzer:
        """The FaceAnalyzer of these options."""
        from facesphere.pipeline.analyzer import FaceAnalyzer

        return FaceAnalyzer(**self.analyzer_config(), **extra)


def _option(name: str, annotation: Any, option: Any) -> inspect.Parameter:
    return inspect.Parameter(
        name, inspect.Parameter.KEYWORD_ONLY, default=option, annotation=annotation
    )


_PIPELINE_PARAMETERS = [
    _option(
        "detector",
        str,
        typer.Option(
            DEFAULT_DETECTOR,
            "--detector",
            "-d",
            help="Face detector: retinaface, yunet, cnn (dlib's MMOD), hog or thunder.",
        ),
    ),
    _option(
        "landmarker",
        str,
        typer.Option(
            "auto",
            "--landmarker",
            help="Landmarks: auto (the detector's own when the recognizer can use them, else "
            "dlib-shape5), detector, or a landmarker name.",
        ),
    ),
    _option(
        "recognizer",
        str,
        typer.Option(
            DEFAULT_RECOGNIZER,
            "--recognizer",
            "-r",
            help="Recognizer: dlib-resnet+sface, sface, dlib-resnet, or the path of a model from "
            "`facesphere export`.",
        ),
    ),
    _option(
        "engine",
        Engine | None,
        typer.Option(
            None,
            "--engine",
            help="torch (facesphere's ports) or dlib (dlib itself); default: each model's own.",
        ),
    ),
    _option("device", str, typer.Option("cpu", "--device", help="cpu or cuda[:N].")),
    _option(
        "upsample",
        int | None,
        typer.Option(
            None, "--upsample", min=0, max=4, help="Detector upsampling (default: its own)."
        ),
    ),
    _option(
        "max_side",
        int | None,
        typer.Option(
            None,
            "--max-side",
            min=0,
            help="Detector working resolution: images with a longer side beyond this many "
            "pixels are scaled down to it (default 2048; 0: always the image's own).",
        ),
    ),
]
_THRESHOLD_HELP = {
    "verify": "Cosine similarity for 'same person' (default: the recognizer card's calibrated "
    "threshold at --far).",
    "identify": "Cosine similarity needed to name a face (default: the recognizer card's "
    "identification threshold for the gallery's size, at --fpir).",
}
_RATE_PARAMETERS = {
    "verify": _option(
        "far",
        float | None,
        typer.Option(
            None,
            "--far",
            min=1e-6,
            max=0.1,
            help="False-accept rate per comparison to take the card's threshold at (default: "
            "the card's, 1e-3 for the shipped recognizers).",
        ),
    ),
    "identify": _option(
        "fpir",
        float | None,
        typer.Option(
            None,
            "--fpir",
            min=1e-6,
            max=0.5,
            help="Share of strangers named as someone (false-positive identification rate) "
            "to take the card's threshold at, for the gallery's size (default: the card's, 0.01).",
        ),
    ),
}


def pipeline_options(
    decision: str | None = None,
) -> Callable[[Callable[..., T]], Callable[..., T]]:
    """Decorator giving a verb the shared pipeline options (--detector, --landmarker,
    --recognizer, --engine, --device, --upsample, --max-side) and, for a verb that decides,
    --threshold with --far (`decision` "verify") or --fpir ("identify"); the verb receives them
    as one `pipeline: PipelineOptions` argument."""
    extra = list(_PIPELINE_PARAMETERS)
    if decision is not None:
        threshold = typer.Option(None, "--threshold", help=_THRESHOLD_HELP[decision])
        extra += [_option("threshold", float | None, threshold), _RATE_PARAMETERS[decision]]
    names = [p.name for p in extra]

    def decorator(function: Callable[..., T]) -> Callable[..., T]:
        signature = inspect.signature(function)
        own = [p for p in signature.parameters.values() if p.name != "pipeline"]

        @functools.wraps(function)
        def wrapper(*args: Any, **kwargs: Any) -> T:
            values = {name: kwargs.pop(name) for name in names}
            engine = values.get("engine")
            if isinstance(engine, Enum):
                values["engine"] = engine.value
            options = PipelineOptions(**values, decision=decision)
            if options.threshold is not None and (options.far or options.fpir) is not None:
                fail("give --threshold or the rate to take it at, not both")
            return function(*args, pipeline=options, **kwargs)

        wrapper.__signature__ = signature.replace(parameters=[*own, *extra])  # type: ignore[attr-defined]
        return wrapper

    return decorator
