"""Gallery endpoints: galleries, subjects, enrolling faces and identifying photos."""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
from fastapi import APIRouter, Depends, File, Form, HTTPException, Query, Request, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from facesphere.gallery import Gallery, SubjectNotFoundError, enroll_images
from facesphere.gallery.rules import check_metadata, parse_metadata, subject_name
from facesphere.serve.deps import (
    ERRORS,
    GALLERY_ERRORS,
    api_key,
    gallery_reader,
    gallery_writer,
    read_upload,
    service,
)
from facesphere.serve.keys import ApiKey
from facesphere.serve.state import ServiceState

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
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type == "application/json":
        try:
            body = await request.json()
        except RecursionError as exc:
            raise HTTPException(422, "body: nested too deeply") from exc
        except ValueError as exc:
            raise HTTPException(422, "body: not valid JSON") from exc
        if not isinstance(body, dict):
            raise HTTPException(422, "body: must be a JSON object")
        subject, metadata = body.get("name"), body.get("metadata")
    elif content_type in ("multipart/form-data", "application/x-www-form-urlencoded"):
        form = await request.form()
        subject, metadata = form.get("name"), form.get("metadata")
        await form.close()
    else:
        raise HTTPException(415, "send the subject as JSON or as a form")
    subject = subject_name(subject)
    meta = parse_metadata(metadata) if isinstance(metadata, str) else check_metadata(metadata)
    gallery = await run_in_threadpool(state.gallery, name)
    created = await run_in_threadpool(gallery.add_subject, subject, meta)
    return created.to_dict()


@router.get("/v1/galleries/{name}/subjects", responses=GALLERY_ERRORS)
def list_subjects(
    name: str = Depends(gallery_reader), state: ServiceState = Depends(service)
) -> dict[str, Any]:
    """All subjects, by name, with their face counts and metadata."""
    return {"subjects": [s.to_dict() for s in state.gallery(name).subjects()]}


@router.get("/v1/galleries/{name}/subjects/{subject}", responses=GALLERY_ERRORS)
def get_subject(
    subject: str, name: str = Depends(gallery_reader), state: ServiceState = Depends(service)
) -> dict[str, Any]:
    """One subject with its faces (ids, boxes, source hashes; no embeddings)."""
    gallery = state.gallery(name)
    found = gallery.subject(subject)
    return {**found.to_dict(), "face_list": [f.to_dict() for f in gallery.faces(subject)]}


@router.delete("/v1/galleries/{name}/subjects/{subject}", responses=GALLERY_ERRORS)
def delete_subject(
    subject: str, name: str = Depends(gallery_writer), state: ServiceState = Depends(service)
) -> dict[str, Any]:
    """Remove a subject and all its faces."""
    removed = state.gallery(name).remove_subject(subject)
    return {"subject": subject, "faces_removed": removed}


@router.post(
    "/v1/galleries/{name}/subjects/{subject}/faces",
    status_code=201,
    responses={**GALLERY_ERRORS, **_MODEL_CONFLICT},
)
def add_faces(
    subject: str,
    name: str = Depends(gallery_writer),
    images: list[UploadFile] = File(..., description="Photos of the subject."),
    metadata: str | None = Form(
        None,
        description="A JSON object merged into the subject's metadata (stored with a new subject).",
    ),
    skip_bad: bool = Query(False, description="Enroll the usable photos, skip the rest."),
    face: Literal["largest", "central"] | None = Query(
        None,
        description="Which face of a photo with several to enroll (default: refuse such photos).",
    ),
    state: ServiceState = Depends(service),
) -> dict[str, Any]:
    """Enroll the face of each photo, all in one transaction, creating the subject (with
    `metadata`) when it is new; `subject_created` says whether it was.

    A photo that is unreadable, has no face, or has several and no `face` choice: 422 listing
    them, nothing enrolled and no subject created (unless `skip_bad`, which still fails when
    no photo is usable). A photo already enrolled for the subject is skipped and listed in
    `duplicates`. An invalid subject name or metadata: 422 before any analysis.
    """
    gallery = state.gallery(name)
    meta = None if metadata is None else parse_metadata(metadata)
    subject_name(subject)  # 422 before any analysis
    try:
        gallery.subject(subject)
        created = False
    except SubjectNotFoundError:
        created = True
    labels = [upload.filename or f"images[{number}]" for number, upload in enumerate(images)]
    with state.analyzing() as analyzer:
        report = enroll_images(
            gallery,
            analyzer,
            subject,
            [read_upload(upload) for upload in images],
            meta,
            skip_bad=skip_bad,
            labels=labels,
            load=state.decode,
            face=face,
        )
    return {**report.to_dict(), "subject_created": created}


@router.post("/v1/galleries/{name}/identify", responses={**GALLERY_ERRORS, **_MODEL_CONFLICT})
def identify(
    image: UploadFile = File(..., description="A photo."),
    top_k: int = Query(5, ge=1, le=100, description="Subjects listed per face."),
    threshold: float | None = Query(
        None,
        ge=-1.0,
        le=1.0,
        description="Similarity needed for an identity (default: the gallery model's "
        "identification threshold for the gallery's size).",
    ),
    fpir: float | None = Query(
        None,
        gt=0.0,
        lt=1.0,
        description="Take the model card's threshold naming this share of strangers "
        "(false-positive identification rate) in a gallery of this size instead.",
    ),
    name: str = Depends(gallery_reader),
    state: ServiceState = Depends(service),
) -> dict[str, Any]:
    """Who each face in the photo is: `identity` (null when unknown) and the best matches,
    with the threshold that decided, the FPIR it was taken at for the gallery's size and the
    per-comparison FAR that corresponds to, and the model.

    No face: 200 with an empty `faces` list. `threshold` and `fpir` together: 422.
    """
    gallery = state.gallery(name)
    decided = gallery.decision_threshold(threshold, fpir)
    pixels = state.decode(read_upload(image), "image")
    with state.analyzing() as analyzer:
        faces = analyzer.analyze(pixels)
        model, version, _ = analyzer.card.model_key
    results = []
    if faces:
        results = gallery.identify(
            np.stack([f.embedding for f in faces]),
            top_k=top_k,
            threshold=decided.value,
            model=model,
            model_version=version,
        )
    return {
        **decided.describe(),
        "model": gallery.model,
        "faces": [{**face.located(), **result.to_dict()} for face, result in zip(faces, results)],
    }
