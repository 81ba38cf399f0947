"""`facesphere evaluate pairs`: the verification protocol (LFW 10-fold or a pair list)."""

from __future__ import annotations

import json
from enum import Enum
from pathlib import Path

import typer

from facesphere.cli.common import (
    FacesphereTyper,
    MainFace,
    PipelineOptions,
    fail,
    pipeline_options,
)

evaluate_app = FacesphereTyper(
    help="Evaluate the pipeline with standard protocols.", no_args_is_help=True
)


class Protocol(str, Enum):
    lfw = "lfw"
    list = "list"


@evaluate_app.command("pairs")
@pipeline_options()
def pairs(
    images: Path = typer.Option(..., "--images", help="Image root folder."),
    pairs_file: Path = typer.Option(..., "--pairs", help="Pairs file."),
    protocol: Protocol = typer.Option(Protocol.lfw, "--protocol", help="lfw (pairs.txt) or list."),
    json_out: Path | None = typer.Option(None, "--json", help="Write the report as JSON here."),
    plot: Path | None = typer.Option(None, "--plot", help="Write the ROC curve image here."),
    limit: int | None = typer.Option(
        None, "--limit", min=2, help="Use only the first N pairs of each fold."
    ),
    workers: int | None = typer.Option(None, "--workers", "-j", min=1, help="Worker processes."),
    no_cache: bool = typer.Option(False, "--no-cache", help="Do not use the embedding cache."),
    face: MainFace = typer.Option(
        MainFace.central,
        "--face",
        help="Face compared: central (photos cut around one person) or largest.",
    ),
    *,
    pipeline: PipelineOptions,
) -> None:
    """10-fold verification accuracy (threshold chosen on 9 folds), AUC, EER, TAR@FAR."""
    from facesphere.eval.pairs import first_per_fold, read_lfw_pairs, read_pair_list
    from facesphere.eval.verification import evaluate_pairs, plot_roc
    from facesphere.io.files import check_output

    if not images.is_dir():
        fail(f"{images}: image folder not found")
    if protocol is Protocol.lfw:
        pair_list = read_lfw_pairs(pairs_file, images)
    else:
        pair_list = read_pair_list(pairs_file, images)
    if limit is not None:
        pair_list = first_per_fold(pair_list, limit)
    inputs = {pairs_file, *(p.path_a for p in pair_list), *(p.path_b for p in pair_list)}
    if json_out is not None:
        check_output(json_out, *inputs)
    if plot is not None:
        check_output(plot, *inputs, json_out)
    analyzer = pipeline.build()
    try:
        report = evaluate_pairs(
            pair_list, analyzer.config, workers, use_cache=not no_cache, face=face.value
        )
    except ValueError as exc:
        fail(str(exc))
    data = report.to_dict()
    if json_out is not None:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps(data, indent=2) + "\n")
    if plot is not None:
        plot_roc(report, plot, title=f"{pairs_file.name}: {report.pairs} pairs")
    _print_report(data)


def _print_report(data: dict) -> None:
    typer.echo(f"pairs: {data['pairs']}  images: {data['images']}  time: {data['seconds']:.1f} s")
    typer.echo(f"accuracy (10-fold): {data['accuracy_mean']:.4f} +- {data['accuracy_std']:.4f}")
    typer.echo(f"AUC: {data['auc']:.4f}  EER: {data['eer']:.4f}")
    for far, tar in data["tar_at_far"].items():
        typer.echo(f"TAR @ FAR {far}: {tar:.4f}")
    typer.echo(f"no face found: {data['no_face']} image(s) ({data['no_face_action']})")
    if data["unreadable"]:
        typer.echo(
            f"unreadable: {len(data['unreadable'])} image(s); first: {data['unreadable'][0]}"
        )


def register(app: typer.Typer) -> None:
    """Add the `evaluate` group to the CLI."""
    app.add_typer(evaluate_app, name="evaluate")
