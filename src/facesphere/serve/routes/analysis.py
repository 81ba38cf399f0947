"""Analysis endpoints: detect, embed and verify the faces of photos (multipart or base64 JSON,
see `serve.uploads`), one photo or a batch."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Depends, Query

from facesphere.serve.batch import analyze_each, answer_each, batch_response, detect_each
from facesphere.serve.deps import ERRORS, api_key, service
from facesphere.serve.state import ServiceState
from facesphere.serve.uploads import PHOTO, PHOTOS, ImageBody, ImageRequest

if TYPE_CHECKING:
    from facesphere.pipeline.analyzer import Face

router = APIRouter(tags=["analysis"], dependencies=[Depends(api_key)])

PAIR = ImageBody("image_a", "image_b")


def face_json(face: Face, embedding: bool = False) -> dict[str, Any]:
    """A face as JSON: box, score, landmarks (and its embedding when asked)."""
    data = face.to_dict()
    if embedding and face.embedding is not None:
        data["embedding"] = [float(v) for v in face.embedding]
    return data


def _detected(width: int, height: int, faces: list[Face]) -> dict[str, Any]:
    return {"width": width, "height": height, "faces": [face_json(f) for f in faces]}


def _embedded(faces: list[Face]) -> dict[str, Any]:
    return {"faces": [face_json(f, embedding=True) for f in faces]}


@router.post("/v1/detect", responses=ERRORS, openapi_extra=PHOTO.openapi())
def detect(
    body: ImageRequest = Depends(PHOTO), state: ServiceState = Depends(service)
) -> dict[str, Any]:
    """Faces in the photo, largest first: box, detector score, five landmarks.

    No face: 200 with an empty `faces` list.
    """
    pixels = state.decode(body.one("image").data, "image")
    with state.analyzing() as analyzer:
        faces = analyzer.detect(pixels)
    height, width = pixels.shape[:2]
    return _detected(int(width), int(height), faces)


@router.post(
    "/v1/detect/batch",
    responses={**ERRORS, **batch_response()},
    openapi_extra=PHOTOS.openapi(),
)
def detect_batch(
    body: ImageRequest = Depends(PHOTOS), state: ServiceState = Depends(service)
) -> dict[str, Any]:
    """`detect` for each photo of `images`: `results` in their order, each with its `index`
    and `width`, `height`, `faces`, or an `error` for a photo that cannot be used."""
    with state.analyzing() as analyzer:
        found = detect_each(state, analyzer, body.images["images"])
    return {"results": answer_each(found, lambda item: _detected(*item))}


@router.post("/v1/embed", responses=ERRORS, openapi_extra=PHOTO.openapi())
def embed(
    body: ImageRequest = Depends(PHOTO), state: ServiceState = Depends(service)
) -> dict[str, Any]:
    """Every face with its unit embedding, largest first.

    No face: 200 with an empty `faces` list.
    """
    pixels = state.decode(body.one("image").data, "image")
    with state.analyzing() as analyzer:
        faces = analyzer.analyze(pixels)
        model, version, dim = analyzer.card.model_key
    return {"model": model, "model_version": version, "dim": dim, **_embedded(faces)}


_MODEL = {
    "model": {"type": "string"},
    "model_version": {"type": "string"},
    "dim": {"type": "integer"},
}


@router.post(
    "/v1/embed/batch",
    responses={**ERRORS, **batch_response(_MODEL)},
    openapi_extra=PHOTOS.openapi(),
)
def embed_batch(
    body: ImageRequest = Depends(PHOTOS), state: ServiceState = Depends(service)
) -> dict[str, Any]:
    """`embed` for each photo of `images`, their faces embedded in shared passes: the model,
    and `results` in their order, each with its `index` and `faces`, or an `error`."""
    with state.analyzing() as analyzer:
        found = analyze_each(state, analyzer, body.images["images"])
        model, version, dim = analyzer.card.model_key
    results = answer_each(found, _embedded)
    return {"model": model, "model_version": version, "dim": dim, "results": results}


@router.post("/v1/verify", responses=ERRORS, openapi_extra=PAIR.openapi())
def verify(
    body: ImageRequest = Depends(PAIR),
    threshold: float | None = Query(
        None,
        ge=-1.0,
        le=1.0,
        description="Cosine similarity for 'same person' (default: the model card's, at the "
        "card's default false-accept rate).",
    ),
    far: float | None = Query(
        None,
        gt=0.0,
        lt=1.0,
        description="Take the model card's threshold at this false-accept rate instead "
        "(calibrated from 1e-6 to 0.1).",
    ),
    state: ServiceState = Depends(service),
) -> dict[str, Any]:
    """Whether the largest faces of two photos are the same person, with the threshold that
    decided, the false-accept rate it was calibrated at and the FRR measured there, and the
    model.

    A photo without a face: 422 naming its field. A model without a calibration needs
    `threshold` (422 naming the model otherwise); `threshold` and `far` together: 422.
    """
    pixels_a = state.decode(body.one("image_a").data, "image_a")
    pixels_b = state.decode(body.one("image_b").data, "image_b")
    with state.analyzing() as analyzer:
        result = analyzer.verify(pixels_a, pixels_b, "image_a", "image_b", threshold, far)
    return result.to_dict()
