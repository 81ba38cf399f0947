"""What a gallery accepts as a subject's name and metadata: one rule for the Python API, the
CLI and the REST service.

Names are NFC-normalised (so that composed and decomposed "José" are one subject) and refused
when empty, too long, holding '/' (a REST path could not address them), or holding characters
that are invisible or change how text around them looks: control (Cc), format (Cf: zero-width
spaces and joiners, bidirectional overrides), surrogate (Cs), unassigned (Cn), line and
paragraph separators, and spaces other than U+0020, or spaces at either end.

Metadata is a JSON object of bounded depth and size that reads back as the same JSON.
"""

from __future__ import annotations

import json
import math
import unicodedata
from collections.abc import Mapping
from typing import Any

from facesphere.gallery.errors import InvalidSubjectError

MAX_SUBJECT_NAME = 200
MAX_METADATA_DEPTH = 32  # objects and arrays inside one another
MAX_METADATA_BYTES = 64 * 1024

_REFUSED_CATEGORIES = {"Cc", "Cf", "Cs", "Cn", "Zl", "Zp"}


def subject_name(name: Any) -> str:
    """`name` NFC-normalised, or InvalidSubjectError saying which rule it breaks."""
    if not isinstance(name, str) or not name.strip():
        raise InvalidSubjectError("a subject needs a non-empty name")
    for char in name:
        category = unicodedata.category(char)
        if category in _REFUSED_CATEGORIES or (category == "Zs" and char != " "):
            raise InvalidSubjectError(
                f"subject names may not hold control, invisible or special space characters "
                f"(U+{ord(char):04X} {category})"
            )
    if "/" in name:
        raise InvalidSubjectError("subject names may not hold '/'")
    if name != name.strip(" "):
        raise InvalidSubjectError("subject names may not start or end with a space")
    normal = unicodedata.normalize("NFC", name)
    if len(normal) > MAX_SUBJECT_NAME:
        raise InvalidSubjectError(f"subject names have at most {MAX_SUBJECT_NAME} characters")
    return normal


def lookup_names(name: Any) -> list[str]:
    """The stored names that `name` may address, preferred first: itself (galleries made
    before the rule may hold any name) and its NFC form."""
    if not isinstance(name, str):
        raise InvalidSubjectError("a subject name must be a string")
    try:
        name.encode()
    except UnicodeEncodeError as exc:
        raise InvalidSubjectError("subject names may not hold lone surrogates") from exc
    normal = unicodedata.normalize("NFC", name)
    return [name] if normal == name else [name, normal]


def check_metadata(metadata: Any) -> dict[str, Any] | None:
    """A copy of subject metadata (None stays None) as it will read back, or
    InvalidSubjectError: not a JSON object, nested deeper than MAX_METADATA_DEPTH, over
    MAX_METADATA_BYTES as JSON, or holding a value JSON cannot carry (NaN, infinities, lone
    surrogates, non-string keys, other types)."""
    if metadata is None:
        return None
    if not isinstance(metadata, Mapping):
        raise InvalidSubjectError("subject metadata must be a JSON object")
    # An explicit stack, not recursion: hostile nesting must not exhaust the interpreter's.
    stack: list[tuple[Any, int]] = [(metadata, 1)]
    seen = 0
    while stack:
        value, depth = stack.pop()
        seen += 1
        if depth > MAX_METADATA_DEPTH and isinstance(value, (Mapping, list, tuple)):
            raise InvalidSubjectError(f"subject metadata nests deeper than {MAX_METADATA_DEPTH}")
        if seen > MAX_METADATA_BYTES:
            raise InvalidSubjectError(f"subject metadata is over {MAX_METADATA_BYTES} bytes")
        if isinstance(value, Mapping):
            for key, item in value.items():
                if not isinstance(key, str):
                    raise InvalidSubjectError("subject metadata keys must be strings")
                _check_text(key)
                stack.append((item, depth + 1))
        elif isinstance(value, (list, tuple)):
            stack.extend((item, depth + 1) for item in value)
        elif isinstance(value, str):
            _check_text(value)
        elif isinstance(value, float) and not math.isfinite(value):
            raise InvalidSubjectError("subject metadata may not hold NaN or infinite numbers")
        elif not (value is None or isinstance(value, (bool, int, float))):
            raise InvalidSubjectError(
                f"subject metadata holds a {type(value).__name__}, which JSON cannot carry"
            )
    try:
        text = json.dumps(metadata, allow_nan=False)
    except ValueError as exc:  # e.g. an integer too long to print
        raise InvalidSubjectError(f"subject metadata is not JSON-serialisable: {exc}") from exc
    if len(text.encode()) > MAX_METADATA_BYTES:
        raise InvalidSubjectError(f"subject metadata is over {MAX_METADATA_BYTES} bytes")
    return json.loads(text)


def merge_metadata(stored: Mapping[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    """A subject's stored metadata with `update`'s keys replacing its own, checked whole
    (InvalidSubjectError when the merge breaks a limit)."""
    merged = check_metadata({**stored, **update})
    assert merged is not None
    return merged


def parse_metadata(text: str) -> dict[str, Any] | None:
    """Subject metadata from JSON text (blank: None), checked like `check_metadata`."""
    if not text.strip():
        return None
    if len(text.encode(errors="surrogatepass")) > MAX_METADATA_BYTES:
        raise InvalidSubjectError(f"subject metadata is over {MAX_METADATA_BYTES} bytes")
    try:
        value = json.loads(text)
    except RecursionError as exc:
        raise InvalidSubjectError(
            f"subject metadata nests deeper than {MAX_METADATA_DEPTH}"
        ) from exc
    except ValueError as exc:
        raise InvalidSubjectError(f"subject metadata is not valid JSON: {exc}") from exc
    return check_metadata(value)


def _check_text(text: str) -> None:
    try:
        text.encode()
    except UnicodeEncodeError as exc:
        raise InvalidSubjectError("subject metadata may not hold lone surrogates") from exc
