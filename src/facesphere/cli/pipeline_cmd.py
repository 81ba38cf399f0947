"""CLI verbs of the face pipeline: detect, verify, embed."""

from __future__ import annotations

from pathlib import Path

import typer

from facesphere.cli.common import (
    PipelineOptions,
    RayOption,
    WorkersOption,
    batch_executor,
    fail,
    pipeline_options,
    print_json,
)


@pipeline_options()
def detect(
    image: Path = typer.Argument(..., help="Image file."),
    draw: Path | None = typer.Option(None, "--draw", help="Write the image with faces drawn."),
    json_output: bool = typer.Option(False, "--json", help="Print JSON."),
    *,
    pipeline: PipelineOptions,
) -> None:
    """Find faces: boxes, scores and five landmarks (exit 3 when there is none)."""
    from facesphere.errors import NoFaceError
    from facesphere.io.draw import draw_faces, save_image
    from facesphere.io.files import check_output

    if draw is not None:
        check_output(draw, image)
    analyzer = pipeline.build()
    pixels = analyzer.load(image)
    faces = analyzer.detect(pixels)
    if draw is not None:
        save_image(draw_faces(pixels, faces), draw)
    if json_output:
        print_json(
            {
                "image": str(image),
                "width": pixels.shape[1],
                "height": pixels.shape[0],
                "faces": [f.to_dict() for f in faces],
            }
        )
    elif faces:
        typer.echo(f"{image}: {len(faces)} face(s)")
        for i, face in enumerate(faces):
            box = ", ".join(f"{v:.0f}" for v in face.box)
            typer.echo(f"  [{i}] box ({box}) score {face.score:.3f}")
        if draw is not None:
            typer.echo(f"drawn to {draw}")
    if not faces:
        raise NoFaceError(str(image))


@pipeline_options("verify")
def verify(
    image_a: Path = typer.Argument(..., help="First image."),
    image_b: Path = typer.Argument(..., help="Second image."),
    all_pairs: bool = typer.Option(
        False, "--all", help="Compare every face of A with every face of B."
    ),
    json_output: bool = typer.Option(False, "--json", help="Print JSON."),
    *,
    pipeline: PipelineOptions,
) -> None:
    """Are the people in two photos the same person? Compares the largest faces."""
    import numpy as np

    analyzer = pipeline.build()
    analyzer.decision_threshold()  # a model without a calibration needs --threshold: say so now
    faces_a = analyzer.analyze(image_a)
    faces_b = analyzer.analyze(image_b)
    result = analyzer.verify_faces(faces_a, faces_b, str(image_a), str(image_b))
    report = result.to_dict()
    if all_pairs:
        matrix = analyzer.similarity(
            np.stack([f.embedding for f in faces_a]), np.stack([f.embedding for f in faces_b])
        )
        report["pairs"] = [
            {
                "a": i,
                "b": j,
                "similarity": round(float(matrix[i, j]), 6),
                "same": bool(matrix[i, j] >= result.threshold),
            }
            for i in range(len(faces_a))
            for j in range(len(faces_b))
        ]
    if json_output:
        print_json(report)
        return
    verdict = "SAME person" if result.same else "DIFFERENT people"
    far = "" if result.decided.far is None else f" at FAR {result.decided.far:g}"
    typer.echo(
        f"{verdict}: similarity {result.similarity:.4f} (threshold {result.threshold:.4f}{far} "
        f"of {result.model}; {result.faces_a} face(s) in A, {result.faces_b} in B; largest "
        "faces compared)"
    )
    for row in report.get("pairs", []):
        typer.echo(
            f"  A[{row['a']}] vs B[{row['b']}]: {row['similarity']:.4f} "
            f"{'same' if row['same'] else 'different'}"
        )


@pipeline_options()
def embed(
    paths: list[Path] = typer.Argument(..., help="Images or folders (walked recursively)."),
    out: Path = typer.Option(..., "--out", "-o", help="Output .npz file."),
    workers: int | None = WorkersOption,
    ray: str | None = RayOption,
    largest_only: bool = typer.Option(
        False, "--largest", help="Keep only the largest face per image."
    ),
    json_output: bool = typer.Option(False, "--json", help="Print a JSON summary."),
    *,
    pipeline: PipelineOptions,
) -> None:
    """Embed every face of many images into an .npz (paths, boxes, embeddings).

    Images without a face, and unreadable files, are listed in the output and on stderr.
    Progress is kept in OUT.progress until OUT is written: a run that was interrupted, run
    again with the same options, analyses only the images it had not done.
    """
    import numpy as np

    from facesphere.io.files import check_output, iter_image_files
    from facesphere.pipeline.journal import Journal, progress_path
    from facesphere.pipeline.runner import analyze_files

    files = iter_image_files(paths)
    missing = [str(p) for p in files if not p.exists()]
    if missing:
        fail(f"not found: {', '.join(missing[:5])}")
    if not files:
        fail("no image files given")
    check_output(out, *files)
    executor = batch_executor(workers, ray)
    analyzer = pipeline.build()
    keep = "largest" if largest_only else "all"
    journal = Journal(progress_path(out), {"analyzer": analyzer.config, "keep": keep})
    names = [str(p) for p in files]
    resumed = sum(name in journal for name in names)
    rows_path, rows_face, boxes, scores, vectors = [], [], [], [], []
    no_face, errors = [], []
    for result in analyze_files(
        names, analyzer.config, executor, keep=keep, analyzer=analyzer, journal=journal
    ):
        if result.error:
            errors.append(f"{result.path}: {result.error}")
        elif not result.faces:
            no_face.append(result.path)
        for index, face in enumerate(result.faces):
            rows_path.append(result.path)
            rows_face.append(index)
            boxes.append(face.box)
            scores.append(face.score)
            vectors.append(face.embedding)
    dim = int(analyzer.card.embedding_dim or 0)
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(
        out,
        paths=np.array(rows_path, dtype=str),
        face_index=np.array(rows_face, dtype=np.int32),
        boxes=np.array(boxes, dtype=np.float32).reshape(-1, 4),
        scores=np.array(scores, dtype=np.float32),
        embeddings=np.array(vectors, dtype=np.float32).reshape(-1, dim),
        no_face=np.array(no_face, dtype=str),
        errors=np.array(errors, dtype=str),
        recognizer=np.array(analyzer.card.name),
        card=np.array(analyzer.card.to_json()),
    )
    journal.remove()
    summary = {
        "out": str(out),
        "images": len(files),
        "resumed": resumed,
        "faces": len(vectors),
        "no_face": no_face,
        "errors": errors,
    }
    if json_output:
        print_json(summary)
    else:
        typer.echo(f"{len(vectors)} face(s) from {len(files)} image(s) -> {out}")
    if resumed:
        typer.echo(f"resumed: {resumed} image(s) done by an earlier run", err=True)
    for path in no_face:
        typer.echo(f"no face: {path}", err=True)
    for line in errors:
        typer.echo(f"unreadable: {line}", err=True)


def register(app: typer.Typer) -> None:
    """Add detect, verify and embed to the CLI."""
    app.command()(detect)
    app.command()(verify)
    app.command()(embed)
