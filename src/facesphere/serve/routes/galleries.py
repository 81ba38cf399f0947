"""Gallery endpoints: galleries, subjects, enrolling faces and identifying photos."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response

from facesphere.errors import ImageError
from facesphere.gallery import Gallery, SubjectNotFoundError, enroll_images
from facesphere.gallery.rules import check_metadata, parse_metadata, subject_name
from facesphere.serve.batch import analyze_each, answer_each, batch_response
from facesphere.serve.deps import (
    ERRORS,
    GALLERY_ERRORS,
    api_key,
    gallery_reader,
    gallery_writer,
    service,
)
from facesphere.serve.keys import ApiKey
from facesphere.serve.state import ServiceState
from facesphere.serve.uploads import (
    PHOTO,
    PHOTOS,
    ImageBody,
    ImageRequest,
    content_type,
    read_json_object,
)

if TYPE_CHECKING:
    from facesphere.pipeline.analyzer import Face

router = APIRouter(tags=["galleries"])

_MODEL_CONFLICT = {409: {"description": "The gallery holds another model's embeddings"}}
_SUBJECT_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "required": ["name"],
                    "properties": {"name": {"type": "string"}, "metadata": {"type": "object"}},
                }
            },
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["name"],
                    "properties": {
                        "name": {"type": "string"},
                        "metadata": {"type": "string", "description": "a JSON object"},
                    },
                }
            },
        },
    }
}


def _metadata(value: Any) -> dict[str, Any] | None:
    """Subject metadata from a form's JSON text or a JSON body's object (422 otherwise)."""
    return parse_metadata(value) if isinstance(value, str) else check_metadata(value)


def _gallery_json(name: str, gallery: Gallery) -> dict[str, Any]:
    info = gallery.info()
    info.pop("path", None)
    return {"name": name, **info}


@router.get("/v1/galleries", responses=ERRORS)
def list_galleries(
    key: ApiKey = Depends(api_key), state: ServiceState = Depends(service)
) -> dict[str, Any]:
    """The galleries this key can see."""
    return {"galleries": [n for n in state.gallery_names() if key.allows("read", n)]}


@router.put(
    "/v1/galleries/{name}",
    responses={**ERRORS, 409: {"description": "Exists for another model"}},
)
def create_gallery(
    name: str = Depends(gallery_writer), state: ServiceState = Depends(service)
) -> JSONResponse:
    """Create a gallery for the service's model, recording its model card (200 if it
    already exists)."""
    gallery, new = state.create_gallery(name)
    return JSONResponse(_gallery_json(name, gallery), status_code=201 if new else 200)


@router.get("/v1/galleries/{name}", responses=GALLERY_ERRORS)
def gallery_info(
    name: str = Depends(gallery_reader), state: ServiceState = Depends(service)
) -> dict[str, Any]:
    """The gallery's model and counts."""
    return _gallery_json(name, state.gallery(name))


@router.delete("/v1/galleries/{name}", responses=GALLERY_ERRORS)
def delete_gallery(
    name: str = Depends(gallery_writer), state: ServiceState = Depends(service)
) -> dict[str, Any]:
    """Delete the gallery with its subjects, faces and index (404 when there is none)."""
    state.delete_gallery(name)
    return {"deleted": name}


@router.post(
    "/v1/galleries/{name}/subjects",
    status_code=201,
    responses={**GALLERY_ERRORS, 409: {"description": "The subject exists"}},
    openapi_extra=_SUBJECT_BODY,
)
async def create_subject(
    request: Request,
    name: str = Depends(gallery_writer),
    state: ServiceState = Depends(service),
) -> dict[str, Any]:
    """Create a subject (no faces yet) from JSON or a form: `name`, optional `metadata`."""
    kind = content_type(request)
    if kind == "application/json":
        body = await read_json_object(request)
        subject, metadata = body.get("name"), body.get("metadata")
    elif kind in ("multipart/form-data", "application/x-www-form-urlencoded"):
        form = await request.form()
        subject, metadata = form.get("name"), form.get("metadata")
        await form.close()
    else:
        raise HTTPException(415, "send the subject as JSON or as a form")
    subject = subject_name(subject)
    meta = _metadata(metadata)
    gallery = await run_in_threadpool(state.gallery, name)
    created = await run_in_threadpool(gallery.add_subject, subject, meta)
    return created.to_dict()


@router.get("/v1/galleries/{name}/subjects", responses=GALLERY_ERRORS)
def list_subjects(
    name: str = Depends(gallery_reader), state: ServiceState = Depends(service)
) -> dict[str, Any]:
    """All subjects, by name, with their face counts, metadata and first face's id (for its
    thumbnail; null without faces)."""
    return {"subjects": [s.to_dict() for s in state.gallery(name).subjects()]}


@router.get("/v1/galleries/{name}/subjects/{subject}", responses=GALLERY_ERRORS)
def get_subject(
    subject: str, name: str = Depends(gallery_reader), state: ServiceState = Depends(service)
) -> dict[str, Any]:
    """One subject with its faces (ids, boxes, source hashes; no embeddings)."""
    gallery = state.gallery(name)
    found = gallery.subject(subject)
    return {**found.to_dict(), "face_list": [f.to_dict() for f in gallery.faces(subject)]}


@router.get(
    "/v1/galleries/{name}/faces/{face_id}/thumbnail",
    response_class=Response,
    responses={**GALLERY_ERRORS, 200: {"content": {"image/jpeg": {}}}},
)
def face_thumbnail(
    face_id: int, name: str = Depends(gallery_reader), state: ServiceState = Depends(service)
) -> Response:
    """The small JPEG of an enrolled face (its aligned chip), stored when it was enrolled;
    404 for a face enrolled without one, or no such face."""
    thumbnail = state.gallery(name).face_thumbnail(face_id)
    if thumbnail is None:
        raise HTTPException(404, f"no thumbnail of face {face_id} in gallery {name!r}")
    return Response(thumbnail, media_type="image/jpeg")


@router.delete("/v1/galleries/{name}/faces/{face_id}", responses=GALLERY_ERRORS)
def delete_face(
    face_id: int, name: str = Depends(gallery_writer), state: ServiceState = Depends(service)
) -> dict[str, Any]:
    """Remove one enrolled face (its subject stays, even with no face left); 404 when the
    gallery has no such face."""
    if state.gallery(name).remove_faces([face_id]) == 0:
        raise HTTPException(404, f"no face {face_id} in gallery {name!r}")
    return {"face_id": face_id, "removed": True}


@router.delete("/v1/galleries/{name}/subjects/{subject}", responses=GALLERY_ERRORS)
def delete_subject(
    subject: str, name: str = Depends(gallery_writer), state: ServiceState = Depends(service)
) -> dict[str, Any]:
    """Remove a subject and all its faces."""
    removed = state.gallery(name).remove_subject(subject)
    return {"subject": subject, "faces_removed": removed}


_ENROLL = ImageBody(
    many="images",
    extra={
        "metadata": "A JSON object merged into the subject's metadata (stored with a new subject)."
    },
)


@router.post(
    "/v1/galleries/{name}/subjects/{subject}/faces",
    status_code=201,
    responses={**GALLERY_ERRORS, **_MODEL_CONFLICT},
    openapi_extra=_ENROLL.openapi(),
)
def add_faces(
    subject: str,
    name: str = Depends(gallery_writer),
    body: ImageRequest = Depends(_ENROLL),
    skip_bad: bool = Query(False, description="Enroll the usable photos, skip the rest."),
    face: Literal["largest", "central"] | None = Query(
        None,
        description="Which face of a photo with several to enroll (default: refuse such photos).",
    ),
    state: ServiceState = Depends(service),
) -> dict[str, Any]:
    """Enroll the face of each photo of `images`, all in one transaction, creating the
    subject (with `metadata`) when it is new; `subject_created` says whether it was.

    A photo that is unreadable, has no face, or has several and no `face` choice: 422 listing
    them, nothing enrolled and no subject created (unless `skip_bad`, which still fails when
    no photo is usable). A photo already enrolled for the subject is skipped and listed in
    `duplicates`. An invalid subject name or metadata: 422 before any analysis.
    """
    gallery = state.gallery(name)
    meta = _metadata(body.fields["metadata"])
    subject_name(subject)  # 422 before any analysis
    try:
        gallery.subject(subject)
        created = False
    except SubjectNotFoundError:
        created = True
    images = body.images["images"]
    with state.analyzing() as analyzer:
        report = enroll_images(
            gallery,
            analyzer,
            subject,
            [part.data for part in images],
            meta,
            skip_bad=skip_bad,
            labels=[part.label for part in images],
            load=state.decode,
            face=face,
        )
    return {**report.to_dict(), "subject_created": created}


_TOP_K = Query(5, ge=1, le=100, description="Subjects listed per face.")
_THRESHOLD = Query(
    None,
    ge=-1.0,
    le=1.0,
    description="Similarity needed for an identity (default: the gallery model's "
    "identification threshold for the gallery's size).",
)
_FPIR = Query(
    None,
    gt=0.0,
    lt=1.0,
    description="Take the model card's threshold naming this share of strangers "
    "(false-positive identification rate) in a gallery of this size instead.",
)


def _identified(
    gallery: Gallery,
    faces: list[Face],
    top_k: int,
    threshold: float,
    model_key: tuple[str, str, int],
) -> list[dict[str, Any]]:
    """Each face located, with its identity and matches, from one search of the gallery."""
    if not faces:
        return []
    model, version, _ = model_key
    results = gallery.identify(
        np.stack([f.embedding for f in faces]),
        top_k=top_k,
        threshold=threshold,
        model=model,
        model_version=version,
    )
    return [{**face.located(), **result.to_dict()} for face, result in zip(faces, results)]


@router.post(
    "/v1/galleries/{name}/identify",
    responses={**GALLERY_ERRORS, **_MODEL_CONFLICT},
    openapi_extra=PHOTO.openapi(),
)
def identify(
    name: str = Depends(gallery_reader),
    body: ImageRequest = Depends(PHOTO),
    top_k: int = _TOP_K,
    threshold: float | None = _THRESHOLD,
    fpir: float | None = _FPIR,
    state: ServiceState = Depends(service),
) -> dict[str, Any]:
    """Who each face in the photo is: `identity` (null when unknown) and the best matches,
    with the threshold that decided, the FPIR it was taken at for the gallery's size and the
    per-comparison FAR that corresponds to, and the model.

    No face: 200 with an empty `faces` list. `threshold` and `fpir` together: 422.
    """
    gallery = state.gallery(name)
    decided = gallery.decision_threshold(threshold, fpir)
    pixels = state.decode(body.one("image").data, "image")
    with state.analyzing() as analyzer:
        faces = analyzer.analyze(pixels)
        model_key = analyzer.card.model_key
    found = _identified(gallery, faces, top_k, decided.value, model_key)
    return {**decided.describe(), "model": gallery.model, "faces": found}


_DECIDED = {
    "threshold": {"type": "number"},
    "fpir": {"type": ["number", "null"]},
    "gallery_size": {"type": "integer"},
    "far": {"type": ["number", "null"]},
    "model": {"type": "string"},
}


@router.post(
    "/v1/galleries/{name}/identify/batch",
    responses={**GALLERY_ERRORS, **_MODEL_CONFLICT, **batch_response(_DECIDED)},
    openapi_extra=PHOTOS.openapi(),
)
def identify_batch(
    name: str = Depends(gallery_reader),
    body: ImageRequest = Depends(PHOTOS),
    top_k: int = _TOP_K,
    threshold: float | None = _THRESHOLD,
    fpir: float | None = _FPIR,
    state: ServiceState = Depends(service),
) -> dict[str, Any]:
    """`identify` for each photo of `images`, their faces embedded in shared passes and
    searched for in one: the threshold and model once, and `results` in their order, each
    with its `index` and `faces`, or an `error`."""
    gallery = state.gallery(name)
    decided = gallery.decision_threshold(threshold, fpir)
    with state.analyzing() as analyzer:
        found = analyze_each(state, analyzer, body.images["images"])
        model_key = analyzer.card.model_key
    every_face = [face for faces in found if not isinstance(faces, ImageError) for face in faces]
    rows = iter(_identified(gallery, every_face, top_k, decided.value, model_key))
    results = answer_each(found, lambda faces: {"faces": [next(rows) for _ in faces]})
    return {**decided.describe(), "model": gallery.model, "results": results}
