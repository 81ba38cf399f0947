"""Packed shards of aligned face crops: a few large files instead of millions of small ones.

A shard is ``shard-NNNNN.bin`` (JPEG crops back to back) plus ``shard-NNNNN.npz`` holding
``offsets`` (int64, N+1 byte offsets), ``labels`` (int64 identity indices) and ``paths`` (the
source file of each crop).  ``manifest.json`` lists the identities (label = position), the
finished shards, the alignment template and counts.  Shards hold whole identities, so a
preparation that stops can resume after the last shard recorded in the manifest.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from facesphere.errors import DataError

MANIFEST = "manifest.json"
FORMAT = "facesphere-shards"


def shard_stem(number: int) -> str:
    return f"shard-{number:05d}"


def read_manifest(root: str | Path) -> dict[str, Any]:
    """The manifest of a shard folder (a DataError when it is missing or not one)."""
    path = Path(root) / MANIFEST
    try:
        manifest = json.loads(path.read_text())
    except OSError:
        raise DataError(f"{root} holds no {MANIFEST}: not a shard folder") from None
    except ValueError:
        raise DataError(f"{path} is not JSON") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise DataError(f"{path} is not a {FORMAT} manifest")
    return manifest


def write_manifest(root: str | Path, manifest: dict[str, Any]) -> None:
    """Atomically (write + rename) store the manifest."""
    path = Path(root) / MANIFEST
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(manifest, indent=2))
    os.replace(tmp, path)


def new_manifest(identities: list[str], template: str, size: tuple[int, int], source: str) -> dict:
    return {
        "format": FORMAT,
        "version": 1,
        "source": source,
        "template": template,
        "size": list(size),
        "identities": identities,
        "shards": [],
        "counts": {"images": 0, "identities": 0, "no_face": 0},
        "complete": False,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


class ShardWriter:
    """Accumulates encoded crops and writes them out as one shard."""

    def __init__(self, root: str | Path, number: int) -> None:
        self.root = Path(root)
        self.number = number
        self.stem = shard_stem(number)
        self._data = open(self.root / f"{self.stem}.bin.tmp", "wb")  # noqa: SIM115
        self.offsets = [0]
        self.labels: list[int] = []
        self.paths: list[str] = []

    @property
    def nbytes(self) -> int:
        return self.offsets[-1]

    def add(self, data: bytes, label: int, path: str) -> None:
        self._data.write(data)
        self.offsets.append(self.offsets[-1] + len(data))
        self.labels.append(int(label))
        self.paths.append(path)

    def finish(self) -> dict[str, Any]:
        """Close the shard (rename into place) and return its manifest entry."""
        self._data.close()
        np.savez(
            self.root / f"{self.stem}.npz",
            offsets=np.asarray(self.offsets, dtype=np.int64),
            labels=np.asarray(self.labels, dtype=np.int64),
            paths=np.asarray(self.paths, dtype=str),
        )
        os.replace(self.root / f"{self.stem}.bin.tmp", self.root / f"{self.stem}.bin")
        return {"stem": self.stem, "count": len(self.labels), "bytes": self.nbytes}


def write_shards(
    root: str | Path,
    images: list[bytes],
    labels: list[int],
    identities: list[str],
    paths: list[str] | None = None,
    per_shard: int = 1000,
    template: str = "standard112",
) -> dict[str, Any]:
    """Write already-encoded crops as shards (a helper for tests and conversions)."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    from facesphere.align.templates import TEMPLATES

    manifest = new_manifest(identities, template, TEMPLATES[template].size, "")
    paths = paths or [f"{i}" for i in range(len(images))]
    writer: ShardWriter | None = None
    for i, (data, label) in enumerate(zip(images, labels)):
        if writer is None:
            writer = ShardWriter(root, len(manifest["shards"]))
        writer.add(data, label, paths[i])
        if len(writer.labels) >= per_shard:
            manifest["shards"].append(writer.finish())
            writer = None
    if writer is not None:
        manifest["shards"].append(writer.finish())
    manifest["counts"] = {
        "images": len(images),
        "identities": len(set(labels)),
        "no_face": 0,
    }
    manifest["complete"] = True
    write_manifest(root, manifest)
    return manifest


class ShardReader:
    """Random access to the crops of a shard folder; files are opened lazily per process."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.manifest = read_manifest(self.root)
        self.identities: list[str] = list(self.manifest["identities"])
        self.template: str = self.manifest.get("template", "standard112")
        offsets, labels, shard_of, starts = [], [], [], []
        for number, entry in enumerate(self.manifest["shards"]):
            index = np.load(self.root / f"{entry['stem']}.npz")
            n = len(index["labels"])
            offsets.append(index["offsets"])
            labels.append(index["labels"])
            shard_of.append(np.full(n, number, dtype=np.int32))
            starts.append(np.arange(n, dtype=np.int64))
        self.labels = np.concatenate(labels) if labels else np.zeros(0, np.int64)
        self._shard = np.concatenate(shard_of) if shard_of else np.zeros(0, np.int32)
        self._pos = np.concatenate(starts) if starts else np.zeros(0, np.int64)
        self._offsets = offsets
        self._handles: dict[int, Any] = {}

    def __len__(self) -> int:
        return len(self.labels)

    def paths(self) -> list[str]:
        """Source path of every crop, in reader order."""
        out: list[str] = []
        for entry in self.manifest["shards"]:
            out.extend(str(p) for p in np.load(self.root / f"{entry['stem']}.npz")["paths"])
        return out

    def image_bytes(self, i: int) -> bytes:
        shard, pos = int(self._shard[i]), int(self._pos[i])
        handle = self._handles.get(shard)
        if handle is None:
            stem = self.manifest["shards"][shard]["stem"]
            handle = self._handles[shard] = open(self.root / f"{stem}.bin", "rb")  # noqa: SIM115
        start, stop = self._offsets[shard][pos], self._offsets[shard][pos + 1]
        handle.seek(int(start))
        return handle.read(int(stop - start))

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_handles"] = {}
        return state
