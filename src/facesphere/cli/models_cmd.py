"""`facesphere models`: the pretrained models with their cards, and the trainable backbones and
heads with their size and cost.

Counting FLOPs takes seconds (torch's FlopCounterMode imports torch._dynamo on first use, then
traces every backbone), so the backbone and head rows are cached in
``$FACESPHERE_HOME/cache/models-<key>.json``, keyed by a digest of torch's version and the
source of every ``facesphere.models`` module: any change to a model rebuilds them.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

import typer

from facesphere.cli.common import print_json
from facesphere.paths import cache_dir, read_private, write_private

HEAD_EMBEDDING_DIM = 512
HEAD_NUM_CLASSES = 1000


def _backbone_rows() -> list[dict[str, Any]]:
    import torch

    from facesphere.models.backbones import create_backbone, list_backbones
    from facesphere.models.summary import count_flops, count_params

    rows: list[dict[str, Any]] = []
    for name in list_backbones():
        # Built on the meta device: shapes only, so counting costs no memory or compute.
        with torch.device("meta"):
            model = create_backbone(name)
        input_size = list(getattr(model, "input_size", (112, 112)))
        rows.append(
            {
                "name": name,
                "kind": "backbone",
                "params": count_params(model),
                "flops": count_flops(model, input_size),
                "input_size": input_size,
                "embedding_dim": int(getattr(model, "embedding_dim", 512)),
            }
        )
    return rows


def _head_rows() -> list[dict[str, Any]]:
    import torch

    from facesphere.models.summary import count_params

    try:
        from facesphere.models.heads import create_head, list_heads
    except ImportError as exc:
        typer.echo(f"warning: heads unavailable ({exc})", err=True)
        return []
    rows: list[dict[str, Any]] = []
    for name in list_heads():
        row: dict[str, Any] = {
            "name": name,
            "kind": "head",
            "embedding_dim": HEAD_EMBEDDING_DIM,
            "num_classes": HEAD_NUM_CLASSES,
        }
        try:
            with torch.device("meta"):
                head = create_head(name, HEAD_EMBEDDING_DIM, HEAD_NUM_CLASSES)
            row["params"] = count_params(head)
        except Exception as exc:  # a head that cannot be built is reported, not fatal
            row["params"] = None
            row["error"] = f"{type(exc).__name__}: {exc}"
        rows.append(row)
    return rows


def _pretrained_rows() -> list[dict[str, Any]]:
    """One row per registered pretrained detector, landmarker and recognizer, with its card."""
    from facesphere.detect.registry import DETECTORS
    from facesphere.landmarks.registry import LANDMARKERS
    from facesphere.recognize.registry import RECOGNIZERS

    rows: list[dict[str, Any]] = []
    for stage, registry in (
        ("detector", DETECTORS),
        ("landmarker", LANDMARKERS),
        ("recognizer", RECOGNIZERS),
    ):
        for name in registry.names():
            card = registry.card(name)
            if card is not None:
                rows.append({"name": name, "kind": stage, "card": card.to_dict()})
    return rows


def _rows_key() -> str:
    """A digest of what the backbone and head rows depend on: torch and facesphere.models."""
    import torch

    import facesphere.models

    digest = hashlib.sha256(f"torch {torch.__version__}".encode())
    package = Path(facesphere.models.__file__).parent
    for source in sorted(package.rglob("*.py")):
        digest.update(str(source.relative_to(package)).encode() + b"\0" + source.read_bytes())
    return digest.hexdigest()


def _model_rows() -> list[dict[str, Any]]:
    """The backbone and head rows, from the cache when the models' code is unchanged."""
    key = _rows_key()
    path = cache_dir() / f"models-{key[:16]}.json"
    try:
        data = read_private(path)
        cached = json.loads(data) if data is not None else None
    except (OSError, ValueError):
        cached = None
    if (
        isinstance(cached, dict)
        and cached.get("key") == key
        and isinstance(cached.get("rows"), list)
    ):
        return cached["rows"]
    rows = _backbone_rows() + _head_rows()
    try:
        write_private(path, json.dumps({"key": key, "rows": rows}).encode())
    except OSError as exc:
        logging.getLogger(__name__).debug("models rows not cached in %s: %s", path, exc)
    return rows


def _format_count(value: int | None, unit: float, suffix: str) -> str:
    return "-" if value is None else f"{value / unit:.2f}{suffix}"


def models(
    json_output: bool = typer.Option(False, "--json", help="Print the list as JSON."),
) -> None:
    """Pretrained models (task, licence, thresholds), backbones (params, forward FLOPs at their
    default input) and heads (params)."""
    pretrained = _pretrained_rows()
    rows = _model_rows()
    if json_output:
        print_json(pretrained + rows)
        return
    typer.echo(f"{'pretrained':<18} {'kind':<11} {'version':<22} licence / thresholds")
    for row in pretrained:
        card = row["card"]
        cuts = [f"{job} {t['value']}" for job, t in card["thresholds"].items()]
        calibration = card.get("calibration")
        if calibration:
            verify = next(p for p in calibration["points"] if p["far"] == calibration["verify_far"])
            cuts.insert(0, f"verify {verify['threshold']} at FAR {verify['far']:g}")
        licence = card["licence"].split(" (")[0]
        typer.echo(
            f"{row['name']:<18} {row['kind']:<11} {card['version']:<22} {licence}"
            + (f"\n{'':<53}{', '.join(cuts)}" if cuts else "")
        )
    typer.echo("")
    typer.echo(f"{'name':<22} {'kind':<9} {'params':>9} {'GFLOPs':>8}  input")
    for row in rows:
        size = "x".join(str(s) for s in row.get("input_size", [])) or "-"
        flops = _format_count(row.get("flops"), 1e9, "")
        params = _format_count(row["params"], 1e6, "M")
        typer.echo(f"{row['name']:<22} {row['kind']:<9} {params:>9} {flops:>8}  {size}")
    typer.echo("FLOPs as counted by torch (a multiply-add is 2); heads at 512-d x 1000 classes.")


def register(app: typer.Typer) -> None:
    """Add the `models` command to the CLI."""
    app.command("models")(models)
