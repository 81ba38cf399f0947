"""``facesphere prepare``: detect, align and pack a folder of identity folders into shards.

For every photo the largest detected face is aligned to the standard 112x112 five-point
template (eye centres and nose from dlib's five points), or with ``template="dlib150"`` to
dlib's 150x150 chip from its five points as they are (both by the analyzer's one alignment
function, :func:`facesphere.align.templates.align_to_template`), and stored as a JPEG crop.
Photos without a face are listed in ``no_face.txt``.  Shards hold whole identities and the
manifest is rewritten after each shard, so an interrupted run resumes after the last recorded
shard.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from tqdm import tqdm

from facesphere.align.templates import TEMPLATES
from facesphere.errors import ConfigError, DataError
from facesphere.io.files import IMAGE_SUFFIXES
from facesphere.train.shards import (
    ShardWriter,
    new_manifest,
    read_manifest,
    write_manifest,
)

_worker: Any = None
_worker_template = "standard112"


def _init(config: dict[str, Any], template: str) -> None:
    global _worker, _worker_template
    import torch

    torch.set_num_threads(1)
    from facesphere.pipeline.analyzer import FaceAnalyzer

    _worker = FaceAnalyzer(**config)
    _worker_template = template


def crop_face(
    analyzer: Any, path: str, quality: int = 95, template: str = "standard112"
) -> tuple[str, bytes | None, str]:
    """(path, JPEG of the main face aligned to ``template`` or None, reason when None)."""
    from facesphere.align.templates import align_to_template
    from facesphere.errors import ImageError
    from facesphere.train.recordio import encode_jpeg

    try:
        image = analyzer.load(path)
        faces = analyzer.detect(image)
    except ImageError as exc:
        return path, None, f"unreadable: {exc.reason}"
    if not faces:
        return path, None, "no face"
    target = TEMPLATES[template]
    try:  # the face's points in the template's own scheme when the pipeline placed them
        chip = align_to_template(image, *faces[0].points_for(target), target)
    except ValueError as exc:
        return path, None, str(exc)
    return path, encode_jpeg(chip, quality), ""


def _crop_in_worker(path: str) -> tuple[str, bytes | None, str]:
    return crop_face(_worker, path, template=_worker_template)


def _identities(src: Path) -> list[tuple[str, list[Path]]]:
    found = []
    for folder in sorted(p for p in src.iterdir() if p.is_dir()):
        files = sorted(
            p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
        )
        if files:
            found.append((folder.name, files))
    return found


def prepare(
    src: str | Path,
    out: str | Path,
    workers: int = 1,
    shard_bytes: int = 256 << 20,
    analyzer_config: dict[str, Any] | None = None,
    progress: bool = True,
    limit_identities: int | None = None,
    template: str = "standard112",
) -> dict[str, Any]:
    """Build (or resume building) a shard folder ``out`` from identity folders in ``src``,
    with crops aligned to ``template`` (``standard112`` or ``dlib150``); faces are found by a
    FaceAnalyzer of ``analyzer_config`` (default: the default pipeline)."""
    if template not in TEMPLATES:
        raise ConfigError(f"unknown template {template!r}; choose one of {', '.join(TEMPLATES)}")
    src, out = Path(src), Path(out)
    if not src.is_dir():
        raise DataError(f"{src} is not a folder")
    people = _identities(src)
    if limit_identities:
        people = people[:limit_identities]
    if not people:
        raise DataError(f"{src} holds no identity folders with images")
    names = [name for name, _ in people]
    out.mkdir(parents=True, exist_ok=True)
    if (out / "manifest.json").is_file():
        manifest = read_manifest(out)
        if manifest["identities"] != names:
            raise DataError(f"{out} was prepared from a different identity list; use a new OUT")
        if manifest.get("template", "standard112") != template:
            raise DataError(f"{out} was prepared with another template; use a new OUT")
    else:
        manifest = new_manifest(names, template, TEMPLATES[template].size, str(src))
        write_manifest(out, manifest)
    done = {name for shard in manifest["shards"] for name in shard["identities"]}
    todo = [(label, name, files) for label, (name, files) in enumerate(people) if name not in done]
    config = dict(analyzer_config or {})
    total = sum(len(files) for _, _, files in todo)
    bar = tqdm(total=total, desc="prepare", unit="img", disable=not progress)

    def crops() -> Iterator[tuple[str, bytes | None, str]]:
        paths = [str(f) for _, _, files in todo for f in files]
        if workers <= 1:
            from facesphere.pipeline.analyzer import FaceAnalyzer

            analyzer = FaceAnalyzer(**config)
            yield from (crop_face(analyzer, p, template=template) for p in paths)
            return
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(
            workers, mp_context=context, initializer=_init, initargs=(config, template)
        ) as pool:
            yield from pool.map(_crop_in_worker, paths, chunksize=8)

    results = crops()
    writer: ShardWriter | None = None
    shard_ids: list[str] = []
    shard_misses: list[str] = []
    try:
        for index, (label, name, files) in enumerate(todo):
            if writer is None:
                writer = ShardWriter(out, len(manifest["shards"]))
                shard_ids, shard_misses = [], []
            for _ in files:
                path, data, reason = next(results)
                bar.update()
                if data is None:
                    shard_misses.append(f"{path}\t{reason}")
                else:
                    writer.add(data, label, path)
            shard_ids.append(name)
            if writer.nbytes >= shard_bytes or index == len(todo) - 1:
                entry = writer.finish()
                entry["identities"] = shard_ids
                entry["no_face"] = shard_misses
                manifest["shards"].append(entry)
                manifest["counts"] = _counts(manifest)
                write_manifest(out, manifest)
                writer = None
    finally:
        bar.close()
        results.close()
    manifest["complete"] = True
    manifest["counts"] = _counts(manifest)
    write_manifest(out, manifest)
    misses = [m for shard in manifest["shards"] for m in shard["no_face"]]
    (out / "no_face.txt").write_text("".join(f"{m}\n" for m in misses))
    return manifest


def _counts(manifest: dict[str, Any]) -> dict[str, int]:
    shards = manifest["shards"]
    return {
        "images": sum(s["count"] for s in shards),
        "identities": sum(len(s["identities"]) for s in shards),
        "no_face": sum(len(s["no_face"]) for s in shards),
        "shards": len(shards),
    }
