"""Converted weights of the dlib models, cached under ``$FACESPHERE_HOME/cache/weights``.

Decoding dlib's files takes seconds (the shape predictor's variable-length floats most), so a
model's converted arrays (its torch state or numpy tables, plus a small JSON description) are
written once as an uncompressed ``.npz`` named after the card and the source file's sha256,
and read back in milliseconds by the next process.

A cache file is used only when it is a regular file owned by this user that nobody else may
write, reads back as npz (the zip's CRC-32 checks every array), records the same card, source
sha256 and format, and builds the model; anything else is converted again from the verified
source file and rewritten. Files are written atomically (a temporary file renamed into place),
owner-only (0600, new folders 0700). When the cache cannot be written (a read-only or missing
home) the model is converted in memory and a warning logged; inference never depends on it.
"""

from __future__ import annotations

import io
import json
import logging
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from facesphere.cards import ModelCard
from facesphere.paths import cache_dir, read_private, write_private
from facesphere.pretrained.files import card_file

FORMAT = 1
_RECORD = "__record__"

T = TypeVar("T")
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ConvertedWeights:
    """A model as converted from its source file: a JSON-able description and named arrays."""

    meta: dict[str, Any]
    arrays: dict[str, np.ndarray]


# (card name, source sha256) -> converted weights already loaded by this process
_MEMO: dict[tuple[str, str | None], ConvertedWeights] = {}


def weights_cache_dir() -> Path:
    """The folder of the converted-weight files."""
    return cache_dir() / "weights"


def cache_path(card: ModelCard) -> Path:
    """The cache file of `card`'s converted weights (keyed by its source file's sha256)."""
    if card.sha256 is None:
        raise ValueError(f"model {card.name!r} has no source digest to key a cache by")
    return weights_cache_dir() / f"{card.name}-{card.sha256[:16]}-v{FORMAT}.npz"


def load_converted(
    card: ModelCard,
    convert: Callable[[Path], ConvertedWeights],
    build: Callable[[ConvertedWeights], T],
) -> T:
    """`build` of `card`'s converted weights: from this process's memo, from the cache file, or
    by `convert` of the verified source file (then cached). The source file's sha256 is checked
    against the card every time (once per process)."""
    source = card_file(card)
    key = (card.name, card.sha256)
    if key in _MEMO:
        return build(_MEMO[key])
    path = cache_path(card)
    found = _read(path, card)
    if found is not None:
        try:
            model = build(found)
        except (ValueError, KeyError, TypeError) as exc:
            log.warning(
                "weight cache %s does not build the model (%s); converting again", path, exc
            )
        else:
            _MEMO[key] = found
            return model
    converted = convert(source)
    model = build(converted)
    _write(path, card, converted)
    _MEMO[key] = converted
    return model


def _read(path: Path, card: ModelCard) -> ConvertedWeights | None:
    """The cached weights of `card` at `path`, or None (missing, foreign or damaged)."""
    try:
        data = read_private(path)
    except OSError as exc:
        log.warning("cannot read the weight cache %s (%s); converting again", path, exc)
        return None
    if data is None:
        if path.exists() or path.is_symlink():
            log.warning("weight cache %s is not a private file of this user; replacing it", path)
        return None
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            arrays = {name: npz[name] for name in npz.files}
        record = json.loads(arrays.pop(_RECORD).tobytes().decode("utf-8"))
        expected = {"format": FORMAT, "card": card.name, "source_sha256": card.sha256}
        if {key: record.get(key) for key in expected} != expected:
            raise ValueError(f"written for {record.get('card')!r}, format {record.get('format')}")
        return ConvertedWeights(record["meta"], arrays)
    except (OSError, ValueError, KeyError, EOFError, AttributeError, zipfile.BadZipFile) as exc:
        log.warning("weight cache %s is unreadable (%s); converting again", path, exc)
        return None


def _write(path: Path, card: ModelCard, converted: ConvertedWeights) -> None:
    """Write the cache file (atomically, owner-only); a failure is only logged."""
    record = {
        "format": FORMAT,
        "card": card.name,
        "source_sha256": card.sha256,
        "meta": converted.meta,
    }
    encoded = np.frombuffer(json.dumps(record).encode("utf-8"), dtype=np.uint8)
    buffer = io.BytesIO()
    np.savez(buffer, **converted.arrays, **{_RECORD: encoded})
    try:
        write_private(path, buffer.getvalue())
    except OSError as exc:
        log.warning(
            "cannot write the weight cache %s (%s); the model was converted in memory", path, exc
        )
