"""CLI verbs of face galleries: `facesphere gallery create|enroll|identify|list|remove|export|
import`. A gallery is named (found in the galleries folder that `facesphere serve` serves,
`--galleries`, default `$FACESPHERE_HOME/galleries`), given by its path, or by a database URL
such as `postgresql://user@host/db?gallery=name` (see `gallery.folder`)."""

from __future__ import annotations

import contextlib
import sqlite3
import sys
from collections.abc import Iterator
from pathlib import Path

import typer

from facesphere.cli.common import (
    EXIT_BAD_INPUT,
    EXIT_FAILURE,
    EXIT_NO_FACE,
    FacesphereTyper,
    MainFace,
    PipelineOptions,
    RayOption,
    WorkersOption,
    batch_executor,
    fail,
    pipeline_options,
    print_json,
)
from facesphere.defaults import DEFAULT_RECOGNIZER

gallery_app = FacesphereTyper(
    help="Face galleries: enroll people from photos, identify faces against them.",
    no_args_is_help=True,
)

JsonOption = typer.Option(False, "--json", help="Print JSON.")
GalleryArgument = typer.Argument(
    ...,
    metavar="GALLERY",
    help="Gallery: a name in the galleries folder, a database path (one holding '/' or ending "
    "in .sqlite, .sqlite3 or .db), or a database URL: postgresql://user@host/db?gallery=name.",
)
GalleriesOption = typer.Option(
    None,
    "--galleries",
    help="Galleries folder for gallery names (default: $FACESPHERE_HOME/galleries, the one "
    "`facesphere serve` serves).",
)


@contextlib.contextmanager
def gallery_errors() -> Iterator[None]:
    """Turn database failures (such as a lock held too long, or a database server out of
    reach) into a one-line exit 1; the gallery's own errors exit 2 like every facesphere
    error."""
    from facesphere.gallery.errors import BackendUnavailableError

    try:
        yield
    except sqlite3.Error as exc:
        fail(f"database error: {exc}", EXIT_FAILURE)
    except BackendUnavailableError as exc:
        fail(str(exc), EXIT_FAILURE)


def _path(gallery: str, galleries: Path | None) -> str | Path:
    """The gallery an argument means: a URL, a file, or a name in the galleries folder
    (ConfigError, exit 2, for an invalid name)."""
    from facesphere.gallery.folder import resolve_gallery

    return resolve_gallery(gallery, galleries)


def _open(path: str | Path):
    from facesphere.gallery import Gallery

    return Gallery(path)


@gallery_app.command("create")
def create(
    gallery_name: str = GalleryArgument,
    model: str = typer.Option(
        DEFAULT_RECOGNIZER,
        "--model",
        help="Recognizer the gallery is for: a registered name or exported file (its card is "
        "stored with the gallery), or any other name with --model-version and --dim.",
    ),
    model_version: str | None = typer.Option(None, "--model-version", help="Its version."),
    dim: int | None = typer.Option(None, "--dim", min=1, help="Embedding dimension."),
    exist_ok: bool = typer.Option(False, "--exist-ok", help="Open an existing gallery."),
    json_output: bool = JsonOption,
    galleries: Path | None = GalleriesOption,
) -> None:
    """Create an empty gallery."""
    from facesphere.gallery import Gallery
    from facesphere.pipeline.analyzer import recognizer_card
    from facesphere.recognize.registry import RECOGNIZERS, is_exported_model

    path = _path(gallery_name, galleries)
    with gallery_errors():
        if model in RECOGNIZERS or is_exported_model(model):
            card = recognizer_card(model, {})
            if model_version not in (None, card.version) or dim not in (None, card.embedding_dim):
                fail(f"{model} is version {card.version}, {card.embedding_dim}-d")
            gallery = Gallery.create(path, exist_ok=exist_ok, card=card)
        elif dim is None:
            fail(f"{model!r} is not a registered recognizer: give its --dim")
        else:
            gallery = Gallery.create(path, model, model_version or "1", dim, exist_ok)
    with gallery_errors(), gallery:
        info = gallery.info()
    if json_output:
        print_json(info)
    else:
        typer.echo(f"gallery {path}: {info['model']} v{info['model_version']}, {info['dim']}-d")


@gallery_app.command("enroll")
@pipeline_options()
def enroll(
    gallery_name: str = GalleryArgument,
    images: list[Path] = typer.Argument(..., help="Photos of the person (one face each)."),
    subject: str = typer.Option(..., "--subject", "-s", help="The person's name."),
    metadata: str | None = typer.Option(None, "--metadata", help="JSON object to store."),
    skip_bad: bool = typer.Option(
        False, "--skip-bad", help="Enroll the usable photos even if some are not."
    ),
    face: MainFace | None = typer.Option(
        None,
        "--face",
        help="Which face of a photo with several to enroll: largest or central (default: "
        "refuse such photos).",
    ),
    create: bool = typer.Option(False, "--create", help="Create the gallery if missing."),
    workers: int | None = WorkersOption,
    ray: str | None = RayOption,
    json_output: bool = JsonOption,
    galleries: Path | None = GalleriesOption,
    *,
    pipeline: PipelineOptions,
) -> None:
    """Enroll a person from photos, all in one transaction.

    An unreadable photo or one with several faces and no --face (exit 2), or one without a
    face (exit 3), fails the whole request unless --skip-bad. A photo already enrolled for
    the person is skipped with a warning. The analysis is kept in GALLERY.progress until the
    photos are enrolled: run again after an interruption, only the photos not done are
    analysed.
    """
    from facesphere.gallery import EnrollImagesError, Gallery, enroll_files
    from facesphere.gallery.rules import parse_metadata, subject_name
    from facesphere.pipeline.journal import Journal, progress_path

    path = _path(gallery_name, galleries)
    meta = None if metadata is None else parse_metadata(metadata)
    subject_name(subject)
    executor = batch_executor(workers, ray)
    with gallery_errors():
        gallery = None if create else _open(path)  # fail fast, before loading the models
    analyzer = pipeline.build()
    journal = Journal(progress_path(path), {"analyzer": analyzer.config, "keep": "all"})
    with gallery_errors():
        if gallery is None:
            gallery = Gallery.create(path, exist_ok=True, card=analyzer.card)
        with gallery:
            try:
                report = enroll_files(
                    gallery,
                    analyzer,
                    subject,
                    [str(p) for p in images],
                    meta,
                    skip_bad,
                    face=None if face is None else face.value,
                    executor=executor,
                    journal=journal,
                    progress=sys.stderr.isatty(),  # a bar on a terminal, one-line errors always
                )
            except EnrollImagesError as exc:
                bad_input = exc.unreadable or exc.several_faces
                fail(f"nothing enrolled: {exc}", EXIT_BAD_INPUT if bad_input else EXIT_NO_FACE)
    journal.remove()
    if json_output:
        print_json(report.to_dict())
    else:
        typer.echo(f"enrolled {len(report.face_ids)} face(s) of {subject!r} into {path}")
    for source, reason in report.unreadable:
        typer.echo(f"skipped, unreadable: {source} ({reason})", err=True)
    for source in report.no_face:
        typer.echo(f"skipped, no face: {source}", err=True)
    for source in report.several_faces:
        typer.echo(f"skipped, several faces (choose one with --face): {source}", err=True)
    for source in report.duplicates:
        typer.echo(f"warning: skipped, already enrolled for {subject!r}: {source}", err=True)


@gallery_app.command("identify")
@pipeline_options("identify")
def identify(
    gallery_name: str = GalleryArgument,
    image: Path = typer.Argument(..., help="Photo to identify (every face in it)."),
    top_k: int = typer.Option(5, "--top-k", "-k", min=1, help="Subjects listed per face."),
    json_output: bool = JsonOption,
    galleries: Path | None = GalleriesOption,
    *,
    pipeline: PipelineOptions,
) -> None:
    """Who is in a photo: the best-matching enrolled subjects of each face, or unknown."""
    import numpy as np

    path = _path(gallery_name, galleries)
    with gallery_errors():
        gallery = _open(path)
    with gallery_errors(), gallery:
        analyzer = pipeline.build()
        name, version, dim = analyzer.card.model_key
        gallery.check_model(name, version, dim)
        decided = gallery.decision_threshold(pipeline.threshold, pipeline.fpir)
        faces = analyzer.analyze(image)
        if not faces:
            fail(f"no face found in {image}", EXIT_NO_FACE)
        results = gallery.identify(
            np.stack([f.embedding for f in faces]), top_k, decided.value, name, version
        )
    rows = [{**face.located(), **result.to_dict()} for face, result in zip(faces, results)]
    if json_output:
        print_json({"image": str(image), "gallery": str(path), **decided.describe(), "faces": rows})
        return
    rate = "" if decided.fpir is None else f" (FPIR {decided.fpir:g} for {decided.gallery_size})"
    typer.echo(f"threshold {decided.value:.4f}{rate}")
    for i, row in enumerate(rows):
        box = ", ".join(f"{v:.0f}" for v in row["box"])
        who = row["identity"] if row["identity"] is not None else "unknown"
        best = "" if row["score"] is None else f" (best {row['matches'][0]['score']:.4f})"
        typer.echo(f"[{i}] box ({box}): {who}{best}")
        for match in row["matches"]:
            typer.echo(f"      {match['subject']}: {match['score']:.4f}")


@gallery_app.command("list")
def list_subjects(
    gallery_name: str = GalleryArgument,
    json_output: bool = JsonOption,
    galleries: Path | None = GalleriesOption,
) -> None:
    """The enrolled subjects and their face counts."""
    path = _path(gallery_name, galleries)
    with gallery_errors(), _open(path) as gallery:
        info = gallery.info()
        subjects = [s.to_dict() for s in gallery.subjects()]
    if json_output:
        print_json({"gallery": info, "subjects": subjects})
        return
    typer.echo(
        f"{path}: {info['subjects']} subject(s), {info['faces']} face(s) "
        f"({info['model']} v{info['model_version']}, {info['dim']}-d)"
    )
    for subject in subjects:
        typer.echo(f"  {subject['name']}: {subject['faces']} face(s)")


@gallery_app.command("remove")
def remove(
    gallery_name: str = GalleryArgument,
    subject: str = typer.Argument(..., help="Name of the subject to delete."),
    json_output: bool = JsonOption,
    galleries: Path | None = GalleriesOption,
) -> None:
    """Delete a subject and all its faces."""
    path = _path(gallery_name, galleries)
    with gallery_errors(), _open(path) as gallery:
        removed = gallery.remove_subject(subject)
    if json_output:
        print_json({"subject": subject, "faces_removed": removed})
    else:
        typer.echo(f"removed {subject!r} ({removed} face(s))")


@gallery_app.command("export")
def export(
    gallery_name: str = GalleryArgument,
    out: Path = typer.Argument(..., help="Output file (.json or .npz)."),
    fmt: str | None = typer.Option(None, "--format", help="json or npz (default: by suffix)."),
    json_output: bool = JsonOption,
    galleries: Path | None = GalleriesOption,
) -> None:
    """Write subjects, metadata and embeddings to a JSON or npz file (owner-only)."""
    path = _path(gallery_name, galleries)
    with gallery_errors(), _open(path) as gallery:
        counts = gallery.export(out, fmt)
    if json_output:
        print_json({"out": str(out), **counts})
    else:
        typer.echo(f"exported {counts['subjects']} subject(s), {counts['faces']} face(s) to {out}")


@gallery_app.command("import")
def import_(
    source: Path = typer.Argument(..., help="A file written by `gallery export` (.json or .npz)."),
    gallery_name: str = typer.Argument(
        ...,
        metavar="GALLERY",
        help="Gallery to make (new, or one without subjects): a name in the galleries folder, "
        "a database path or a database URL.",
    ),
    fmt: str | None = typer.Option(None, "--format", help="json or npz (default: by suffix)."),
    json_output: bool = JsonOption,
    galleries: Path | None = GalleriesOption,
) -> None:
    """Make a gallery from an export: its model, subjects, metadata and embeddings."""
    from facesphere.gallery.export import import_gallery

    path = _path(gallery_name, galleries)
    with gallery_errors():
        counts = import_gallery(source, path, fmt)
    if json_output:
        print_json({"gallery": str(path), **counts})
    else:
        typer.echo(
            f"imported {counts['subjects']} subject(s), {counts['faces']} face(s) into {path}"
        )
    if counts["duplicates"]:
        typer.echo(
            f"warning: {counts['duplicates']} face(s) listed twice for their subject, stored once",
            err=True,
        )


def register(app: typer.Typer) -> None:
    """Add the `gallery` command group to the CLI."""
    app.add_typer(gallery_app, name="gallery")
