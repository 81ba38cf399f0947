"""Analysis endpoints: detect, embed and verify the faces of uploaded photos."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Depends, File, Query, UploadFile

from facesphere.serve.deps import ERRORS, api_key, read_upload, service
from facesphere.serve.state import ServiceState

if TYPE_CHECKING:
    from facesphere.pipeline.analyzer import Face

router = APIRouter(tags=["analysis"], dependencies=[Depends(api_key)])


def face_json(face: Face, embedding: bool = False) -> dict[str, Any]:
    """A face as JSON: box, score, landmarks (and its embedding when asked)."""
    data = face.to_dict()
    if embedding and face.embedding is not None:
        data["embedding"] = [float(v) for v in face.embedding]
    return data


PHOTO = File(..., description="A photo (JPEG, PNG, ...).")


@router.post("/v1/detect", responses=ERRORS)
def detect(image: UploadFile = PHOTO, state: ServiceState = Depends(service)) -> dict[str, Any]:
    """Faces in the photo, largest first: box, detector score, five landmarks.

    No face: 200 with an empty `faces` list.
    """
    pixels = state.decode(read_upload(image), "image")
    with state.analyzing() as analyzer:
        faces = analyzer.detect(pixels)
    height, width = pixels.shape[:2]
    return {"width": int(width), "height": int(height), "faces": [face_json(f) for f in faces]}


@router.post("/v1/embed", responses=ERRORS)
def embed(image: UploadFile = PHOTO, state: ServiceState = Depends(service)) -> dict[str, Any]:
    """Every face with its unit embedding, largest first.

    No face: 200 with an empty `faces` list.
    """
    pixels = state.decode(read_upload(image), "image")
    with state.analyzing() as analyzer:
        faces = analyzer.analyze(pixels)
        model, version, dim = analyzer.card.model_key
    faces_json = [face_json(f, embedding=True) for f in faces]
    return {"model": model, "model_version": version, "dim": dim, "faces": faces_json}


@router.post("/v1/verify", responses=ERRORS)
def verify(
    image_a: UploadFile = File(..., description="The first photo."),
    image_b: UploadFile = File(..., description="The second photo."),
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
    pixels_a = state.decode(read_upload(image_a), "image_a")
    pixels_b = state.decode(read_upload(image_b), "image_b")
    with state.analyzing() as analyzer:
        result = analyzer.verify(pixels_a, pixels_b, "image_a", "image_b", threshold, far)
    return result.to_dict()
