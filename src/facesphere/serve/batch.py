"""Batch analysis: the images of one request analysed in its one analysis slot, each answered
on its own, in order: `{"index": i, ...its result}` or `{"index": i, "error": {"status",
"detail"}}` for an image that cannot be used.

Images are decoded one at a time inside the slot and released once their faces are found;
embedding runs in shared recognizer passes over several images, up to about `max_pixels`
decoded pixels at once (so a batch holds at most about two of the largest images accepted in
memory). The request's deadline is checked between images and passes, so a batch answered
503 at its deadline stops there.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from facesphere.errors import ImageError
from facesphere.serve.state import ServiceState
from facesphere.serve.uploads import ImagePart

if TYPE_CHECKING:
    from facesphere.pipeline.analyzer import Face, FaceAnalyzer

T = TypeVar("T")

BATCH_ANSWER: dict[str, Any] = {
    "type": "object",
    "required": ["results"],
    "properties": {
        "results": {
            "type": "array",
            "description": "One result per image, in the order sent: the image's answer with "
            "its `index`, or its `index` and an `error`.",
            "items": {
                "type": "object",
                "required": ["index"],
                "properties": {
                    "index": {"type": "integer", "description": "The image's place, from 0."},
                    "faces": {"type": "array", "items": {"type": "object"}},
                    "error": {
                        "type": "object",
                        "required": ["status", "detail"],
                        "properties": {
                            "status": {"type": "integer", "example": 422},
                            "detail": {
                                "type": "string",
                                "example": "images[1]: not a recognised image format",
                            },
                        },
                    },
                },
            },
        }
    },
}


def batch_response(extra: dict[str, Any] | None = None) -> dict[int | str, dict[str, Any]]:
    """The documented 200 answer of a batch endpoint (`extra`: its top-level properties)."""
    schema = {**BATCH_ANSWER, "properties": {**(extra or {}), **BATCH_ANSWER["properties"]}}
    return {200: {"content": {"application/json": {"schema": schema}}}}


def image_error(index: int, exc: ImageError) -> dict[str, Any]:
    """The result of an image that cannot be used."""
    return {"index": index, "error": {"status": int(exc.http_status), "detail": str(exc)}}


def _decoded(state: ServiceState, part: ImagePart) -> np.ndarray | ImageError:
    if part.error is not None:
        return part.error
    try:
        return state.decode(part.data, part.field)
    except ImageError as exc:
        return exc


Detected = tuple[int, int, list["Face"]]  # an image's width, height and faces


def detect_each(
    state: ServiceState, analyzer: FaceAnalyzer, parts: list[ImagePart]
) -> list[Detected | ImageError]:
    """For each image its width, height and faces, or its ImageError; call holding an
    analysis slot."""
    results: list[Detected | ImageError] = []
    for part in parts:
        state.work.check_deadline()
        pixels = _decoded(state, part)
        if isinstance(pixels, ImageError):
            results.append(pixels)
            continue
        height, width = pixels.shape[:2]
        results.append((int(width), int(height), analyzer.detect(pixels)))
    return results


def analyze_each(
    state: ServiceState, analyzer: FaceAnalyzer, parts: list[ImagePart]
) -> list[list[Face] | ImageError]:
    """For each image its faces with embeddings, or its ImageError; call holding an analysis
    slot."""
    results: list[list[Face] | ImageError] = [[] for _ in parts]
    pending: list[tuple[int, np.ndarray]] = []

    def flush() -> None:
        state.work.check_deadline()
        found = analyzer.analyze_many([pixels for _, pixels in pending])
        for (index, _), faces in zip(pending, found):
            results[index] = faces
        pending.clear()

    held = 0
    for index, part in enumerate(parts):
        state.work.check_deadline()
        pixels = _decoded(state, part)
        if isinstance(pixels, ImageError):
            results[index] = pixels
            continue
        pending.append((index, pixels))
        held += pixels.shape[0] * pixels.shape[1]
        if held >= state.max_pixels:
            flush()
            held = 0
    if pending:
        flush()
    return results


def answer_each(
    found: list[T | ImageError], answer: Callable[[T], dict[str, Any]]
) -> list[dict[str, Any]]:
    """The results of a batch: `answer(result)` with its index, or the image's error."""
    return [
        image_error(index, item)
        if isinstance(item, ImageError)
        else {"index": index, **answer(item)}
        for index, item in enumerate(found)
    ]
