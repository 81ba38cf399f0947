"""CLI verb `facesphere cluster`: group unlabelled photos by person (see facesphere.cluster)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import typer

from facesphere.cli.common import EXIT_NO_FACE, PipelineOptions, fail, pipeline_options


def _face_entry(path: str, index: int, box: Any) -> dict[str, Any]:
    return {"path": path, "face": index, "box": [round(float(v), 2) for v in box]}


def build_report(
    items: list[dict[str, Any]],
    labels: Any,
    images: int,
    threshold: float,
    method: str,
    no_face: list[str],
    unreadable: list[dict[str, str]],
) -> dict[str, Any]:
    """The JSON report: clusters of two or more faces (largest first), single faces as
    unclustered, and the images that gave no face."""
    groups: dict[int, list[dict[str, Any]]] = {}
    for item, label in zip(items, labels):
        groups.setdefault(int(label), []).append(item)
    clusters = [members for _, members in sorted(groups.items()) if len(members) > 1]
    unclustered = [members[0] for _, members in sorted(groups.items()) if len(members) == 1]
    return {
        "images": images,
        "faces": len(items),
        "threshold": threshold,
        "method": method,
        "clusters": [
            {"id": i, "size": len(members), "members": members}
            for i, members in enumerate(clusters)
        ],
        "unclustered": unclustered,
        "no_face": no_face,
        "unreadable": unreadable,
    }


def write_links(report: dict[str, Any], out: Path) -> int:
    """Folders of symbolic links, one per cluster (`cluster_000`, ...) and `unclustered`;
    returns how many links were made."""
    made = 0
    folders = [(f"cluster_{c['id']:03d}", c["members"]) for c in report["clusters"]]
    folders.append(("unclustered", report["unclustered"]))
    for name, members in folders:
        if not members:
            continue
        folder = out / name
        folder.mkdir(parents=True, exist_ok=True)
        for member in members:
            source = Path(member["path"]).resolve()
            link = folder / source.name
            serial = 1
            while link.is_symlink() or link.exists():
                if link.is_symlink() and Path(os.readlink(link)) == source:
                    break  # the same photo, with another face in this cluster
                link = folder / f"{source.stem}_{serial}{source.suffix}"
                serial += 1
            else:
                link.symlink_to(source)
                made += 1
    return made


@pipeline_options()
def cluster(
    folder: Path = typer.Argument(..., help="Folder of photos (walked recursively)."),
    json_out: str | None = typer.Option(
        None, "--json", help="Write the JSON report to this file ('-': standard output)."
    ),
    link: Path | None = typer.Option(
        None, "--link", help="Make a folder of symbolic links per cluster here (new or empty)."
    ),
    threshold: float | None = typer.Option(
        None,
        "--threshold",
        help="Cosine similarity joining two faces (default: the recognizer card's threshold "
        "for the method).",
    ),
    method: str = typer.Option(
        "average", "--method", help="average (linkage; default) or chinese-whispers."
    ),
    largest: bool = typer.Option(False, "--largest", help="Only the largest face per photo."),
    workers: int | None = typer.Option(None, "--workers", "-j", min=1, help="Worker processes."),
    *,
    pipeline: PipelineOptions,
) -> None:
    """Group the faces of unlabelled photos by person.

    Faces join while their cosine similarity reaches the threshold: by average linkage (the
    mean over the two groups' pairs), or by Chinese whispers on the graph of similar pairs.
    """
    import numpy as np

    from facesphere.cluster import cluster_embeddings, cluster_threshold, list_cluster_methods
    from facesphere.io.files import check_output, iter_image_files
    from facesphere.pipeline.executors import LocalPool
    from facesphere.pipeline.runner import analyze_files

    if method not in list_cluster_methods():
        fail(f"unknown --method {method!r}; known: {', '.join(list_cluster_methods())}")
    if not folder.is_dir():
        fail(f"not a folder: {folder}")
    if link is not None and link.exists() and (not link.is_dir() or any(link.iterdir())):
        fail(f"--link folder must be new or empty: {link}")
    files = iter_image_files([folder])
    if not files:
        fail(f"no image files in {folder}")
    if json_out not in (None, "-"):
        check_output(json_out, *files)
    analyzer = pipeline.build()
    cut = cluster_threshold(method, threshold, analyzer.card)
    items: list[dict[str, Any]] = []
    vectors = []
    no_face: list[str] = []
    unreadable: list[dict[str, str]] = []
    for result in analyze_files(
        [str(p) for p in files],
        analyzer.config,
        LocalPool(workers),
        keep="largest" if largest else "all",
        analyzer=analyzer,
    ):
        if result.error:
            unreadable.append({"path": result.path, "reason": result.error})
        elif not result.faces:
            no_face.append(result.path)
        for index, face in enumerate(result.faces):
            items.append(_face_entry(result.path, index, face.box))
            vectors.append(face.embedding)
    labels = cluster_embeddings(np.array(vectors), cut, method) if vectors else []
    report = build_report(items, labels, len(files), cut, method, no_face, unreadable)
    if json_out == "-":
        sys.stdout.write(json.dumps(report, indent=2) + "\n")
    elif json_out is not None:
        Path(json_out).parent.mkdir(parents=True, exist_ok=True)
        Path(json_out).write_text(json.dumps(report, indent=2) + "\n")
    linked = write_links(report, link) if link is not None else 0
    summary = (
        f"{len(files)} image(s), {len(items)} face(s): {len(report['clusters'])} cluster(s), "
        f"{len(report['unclustered'])} unclustered face(s), {len(no_face)} image(s) without "
        f"a face, {len(unreadable)} unreadable"
    )
    typer.echo(summary, err=json_out == "-")
    if link is not None:
        typer.echo(f"{linked} link(s) under {link}", err=json_out == "-")
    for row in unreadable:
        typer.echo(f"unreadable: {row['path']}: {row['reason']}", err=True)
    if not items:
        fail("no face found in any image", EXIT_NO_FACE)


def register(app: typer.Typer) -> None:
    """Add `cluster` to the CLI."""
    app.command()(cluster)
