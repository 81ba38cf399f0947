"""The REST service: detection, embedding, verification and gallery identification over HTTP.

Build it with `create_app()` (or run `facesphere serve`). Every `/v1` endpoint needs an API key
(`Authorization: Bearer fs_...`, see `facesphere keys`): a `read` key may analyse images and
query galleries, a `write` key may also change them; a key limited to a gallery gets 403 on
others. Galleries live in `<home>/galleries/<name>.sqlite`.

What a photo without a face gives, per endpoint: detect, embed and identify answer 200 with an
empty `faces` list; verify answers 422 naming the field (`image_a` or `image_b`); enrolling
answers 422 listing the files (and enrolls nothing).
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from fastapi import Depends, FastAPI, File, HTTPException, Query, Request, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from facesphere.errors import ImageError, NoFaceError
from facesphere.gallery import (
    Gallery,
    GalleryNotFoundError,
    ModelMismatchError,
    Subject,
    SubjectExistsError,
    SubjectNotFoundError,
)
from facesphere.gallery.enroll import image_sha256
from facesphere.io.image import load_image
from facesphere.paths import facesphere_home
from facesphere.serve.keys import ApiKey, KeyStore, valid_gallery_name
from facesphere.serve.limits import BodySizeLimit, KeyGate

if TYPE_CHECKING:
    from facesphere.pipeline.analyzer import Face, FaceAnalyzer

log = logging.getLogger("facesphere.serve")

DEFAULT_MAX_UPLOAD_BYTES = 10 * 1024 * 1024
# Larger photos are refused from their header: detection time grows with the pixel count.
DEFAULT_MAX_PIXELS = 16_000_000
GALLERIES_DIR = "galleries"
GALLERY_SUFFIX = ".sqlite"
MAX_SUBJECT_NAME = 200
CONFIG_ENV = "FACESPHERE_SERVE_CONFIG"

_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"description": "Missing, unknown or revoked API key"},
    403: {"description": "The key's scope or gallery does not allow this"},
    413: {"description": "Request body over the upload limit"},
    422: {"description": "Invalid input: unreadable image, no face where one is needed, ..."},
}
_GALLERY_ERRORS: dict[int | str, dict[str, Any]] = {
    **_ERRORS,
    404: {"description": "No such gallery (or subject)"},
}


def _error(status: int, detail: str) -> HTTPException:
    return HTTPException(status_code=status, detail=detail)


class _AnalyzerHolder:
    """One analyzer per process, built on first use, used by one request at a time."""

    def __init__(
        self, analyzer: FaceAnalyzer | None, factory: Callable[[], FaceAnalyzer] | None
    ) -> None:
        self._analyzer = analyzer
        self._factory = factory
        self._build_lock = threading.Lock()
        self.lock = threading.Lock()

    @property
    def loaded(self) -> bool:
        return self._analyzer is not None

    def get(self) -> FaceAnalyzer:
        if self._analyzer is None:
            with self._build_lock:
                if self._analyzer is None:
                    if self._factory is None:
                        from facesphere.pipeline.analyzer import FaceAnalyzer

                        self._analyzer = FaceAnalyzer()
                    else:
                        self._analyzer = self._factory()
        return self._analyzer


class ServiceState:
    """What the endpoints share: the key store, the analyzer and the open galleries."""

    def __init__(
        self,
        home: Path,
        holder: _AnalyzerHolder,
        max_upload_bytes: int,
        max_pixels: int,
    ) -> None:
        self.home = home
        self.keys = KeyStore(home / "keys.sqlite")
        self.holder = holder
        self.max_upload_bytes = max_upload_bytes
        self.max_pixels = max_pixels
        self.galleries_dir = home / GALLERIES_DIR
        self._galleries: dict[str, Gallery] = {}
        self._galleries_lock = threading.Lock()

    # -- images ------------------------------------------------------------------------------

    def decode(self, data: bytes, field: str) -> np.ndarray:
        """Pixels of an uploaded image, or 422 naming the field and the reason."""
        if not data:
            raise _error(422, f"{field}: empty upload")
        try:
            return load_image(data, max_pixels=self.max_pixels)
        except ImageError as exc:
            raise _error(422, f"{field}: {exc.reason}") from exc
        except Exception as exc:  # a decoder failing on hostile bytes is still bad input
            log.warning("decoding %s failed: %s: %s", field, type(exc).__name__, exc)
            raise _error(422, f"{field}: cannot decode image") from exc

    def run(self, method: str, *args: Any, **kwargs: Any) -> Any:
        """Call an analyzer method while holding its lock."""
        analyzer = self.holder.get()
        with self.holder.lock:
            return getattr(analyzer, method)(*args, **kwargs)

    # -- galleries ---------------------------------------------------------------------------

    def gallery_path(self, name: str) -> Path:
        return self.galleries_dir / f"{name}{GALLERY_SUFFIX}"

    def gallery(self, name: str) -> Gallery:
        """The open gallery `name` (404 when there is none)."""
        with self._galleries_lock:
            gallery = self._galleries.get(name)
            if gallery is not None:
                return gallery
            try:
                gallery = Gallery(self.gallery_path(name))
            except GalleryNotFoundError as exc:
                raise _error(404, f"no gallery named {name!r}") from exc
            self._galleries[name] = gallery
            return gallery

    def create_gallery(self, name: str) -> tuple[Gallery, bool]:
        """Create gallery `name` for the analyzer's model; (gallery, whether it is new)."""
        card = self.holder.get().card
        model, version, dim = card.model_key
        with self._galleries_lock:
            try:
                cached = self._galleries.get(name)
                if cached is not None:
                    cached.check_model(model, version, dim)
                    return cached, False
                existed = self.gallery_path(name).is_file()
                gallery = Gallery.create(self.gallery_path(name), exist_ok=True, card=card)
            except ModelMismatchError as exc:
                raise _error(
                    409, f"gallery {name!r} exists for another model than {model} v{version}"
                ) from exc
            self._galleries[name] = gallery
            return gallery, not existed

    def gallery_names(self) -> list[str]:
        if not self.galleries_dir.is_dir():
            return []
        names = [
            p.name[: -len(GALLERY_SUFFIX)]
            for p in self.galleries_dir.glob(f"*{GALLERY_SUFFIX}")
            if p.is_file()
        ]
        return sorted(n for n in names if valid_gallery_name(n))

    def close(self) -> None:
        with self._galleries_lock:
            for gallery in self._galleries.values():
                try:
                    gallery.close()
                except Exception:
                    log.exception("closing gallery %s failed", gallery.path)
            self._galleries.clear()


def _check_subject_name(name: Any) -> str:
    if not isinstance(name, str) or not name.strip():
        raise _error(422, "name: a subject needs a non-empty name")
    if len(name) > MAX_SUBJECT_NAME:
        raise _error(422, f"name: at most {MAX_SUBJECT_NAME} characters")
    if "/" in name or any(ord(c) < 32 or ord(c) == 127 for c in name):
        raise _error(422, "name: no '/' or control characters")
    return name


def _check_metadata(metadata: Any) -> dict[str, Any] | None:
    if metadata is None:
        return None
    if isinstance(metadata, str):
        if not metadata.strip():
            return None
        try:
            metadata = json.loads(metadata)
        except ValueError as exc:
            raise _error(422, "metadata: not valid JSON") from exc
    if not isinstance(metadata, Mapping):
        raise _error(422, "metadata: must be a JSON object")
    return dict(metadata)


def _add_subject(gallery: Gallery, name: str, metadata: dict[str, Any] | None) -> Subject:
    """Create a subject without faces (409 if the name is taken)."""
    try:
        return gallery.add_subject(name, metadata)
    except SubjectExistsError as exc:
        raise _error(409, f"subject {name!r} already exists") from exc


def _face_json(face: Face, embedding: bool = False) -> dict[str, Any]:
    data = face.to_dict()
    if embedding and face.embedding is not None:
        data["embedding"] = [float(v) for v in face.embedding]
    return data


def _read_upload(upload: UploadFile) -> bytes:
    upload.file.seek(0)
    return upload.file.read()


def create_app(
    home: str | Path | None = None,
    analyzer: FaceAnalyzer | None = None,
    max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    analyzer_factory: Callable[[], FaceAnalyzer] | None = None,
    preload: bool = False,
) -> FastAPI:
    """The service as a FastAPI app.

    home: state folder (keys, galleries; default `facesphere_home()`); analyzer: a ready
    FaceAnalyzer to share (else one is built on first use, by `analyzer_factory` if given);
    max_upload_bytes: request body limit (413 beyond); max_pixels: largest image accepted;
    preload: build the analyzer at startup rather than at the first request.
    """
    home_path = Path(home).expanduser() if home is not None else facesphere_home()
    state = ServiceState(
        home_path, _AnalyzerHolder(analyzer, analyzer_factory), int(max_upload_bytes), max_pixels
    )

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        if preload:
            await run_in_threadpool(state.holder.get)
        try:
            yield
        finally:
            state.close()

    app = FastAPI(
        title="facesphere",
        summary="Face detection, embedding, verification and identification.",
        description=__doc__,
        version="1",
        lifespan=lifespan,
    )
    app.state.service = state
    app.add_middleware(BodySizeLimit, max_bytes=state.max_upload_bytes)
    app.add_middleware(KeyGate, authenticate=state.keys.authenticate)  # outermost: runs first

    @app.exception_handler(Exception)
    async def _internal(request: Request, exc: Exception) -> JSONResponse:
        log.error("%s %s failed", request.method, request.url.path, exc_info=exc)
        return JSONResponse({"detail": "internal server error"}, status_code=500)

    # -- authentication ----------------------------------------------------------------------

    bearer = HTTPBearer(
        auto_error=False, bearerFormat="fs_<id>_<secret>", description="An API key."
    )

    def api_key(
        request: Request, _: HTTPAuthorizationCredentials | None = Depends(bearer)
    ) -> ApiKey:
        # KeyGate authenticated it before the body was read; `bearer` documents the scheme
        return request.state.api_key

    def gallery_name(name: str) -> str:
        if not valid_gallery_name(name):
            raise _error(
                422, f"invalid gallery name {name!r}: use letters, digits, '_', '-' and '.'"
            )
        return name

    def gallery_reader(name: str, key: ApiKey = Depends(api_key)) -> str:
        gallery_name(name)
        if not key.allows("read", name):
            raise _error(403, f"this key is limited to gallery {key.gallery!r}")
        return name

    def gallery_writer(name: str, key: ApiKey = Depends(api_key)) -> str:
        gallery_name(name)
        if not key.allows("write", name):
            if key.scope != "write":
                raise _error(403, "this key is read-only")
            raise _error(403, f"this key is limited to gallery {key.gallery!r}")
        return name

    # -- service -----------------------------------------------------------------------------

    @app.get("/health", tags=["service"])
    def health() -> dict[str, Any]:
        """Liveness (no key needed)."""
        return {"status": "ok", "analyzer_loaded": state.holder.loaded}

    # -- analysis ----------------------------------------------------------------------------

    @app.post("/v1/detect", tags=["analysis"], responses=_ERRORS)
    def detect(
        image: UploadFile = File(..., description="A photo (JPEG, PNG, ...)."),
        _: ApiKey = Depends(api_key),
    ) -> dict[str, Any]:
        """Faces in the photo, largest first: box, detector score, five landmarks.

        No face: 200 with an empty `faces` list.
        """
        pixels = state.decode(_read_upload(image), "image")
        faces = state.run("detect", pixels)
        return {
            "width": int(pixels.shape[1]),
            "height": int(pixels.shape[0]),
            "faces": [_face_json(f) for f in faces],
        }

    @app.post("/v1/embed", tags=["analysis"], responses=_ERRORS)
    def embed(
        image: UploadFile = File(..., description="A photo (JPEG, PNG, ...)."),
        _: ApiKey = Depends(api_key),
    ) -> dict[str, Any]:
        """Every face with its unit embedding, largest first.

        No face: 200 with an empty `faces` list.
        """
        pixels = state.decode(_read_upload(image), "image")
        faces = state.run("analyze", pixels)
        model, version, dim = state.holder.get().card.model_key
        return {
            "model": model,
            "model_version": version,
            "dim": dim,
            "faces": [_face_json(f, embedding=True) for f in faces],
        }

    @app.post("/v1/verify", tags=["analysis"], responses=_ERRORS)
    def verify(
        image_a: UploadFile = File(..., description="The first photo."),
        image_b: UploadFile = File(..., description="The second photo."),
        _: ApiKey = Depends(api_key),
    ) -> dict[str, Any]:
        """Whether the largest faces of two photos are the same person.

        A photo without a face: 422 naming its field.
        """
        pixels_a = state.decode(_read_upload(image_a), "image_a")
        pixels_b = state.decode(_read_upload(image_b), "image_b")
        try:
            result = state.run("verify", pixels_a, pixels_b, "image_a", "image_b")
        except NoFaceError as exc:
            raise _error(422, f"{exc.source}: no face found") from exc
        return result.to_dict()

    # -- galleries ---------------------------------------------------------------------------

    def _gallery_info(name: str, gallery: Gallery) -> dict[str, Any]:
        info = gallery.info()
        info.pop("path", None)
        return {"name": name, **info}

    @app.get("/v1/galleries", tags=["galleries"], responses=_ERRORS)
    def list_galleries(key: ApiKey = Depends(api_key)) -> dict[str, Any]:
        """The galleries this key can see."""
        names = [n for n in state.gallery_names() if key.allows("read", n)]
        return {"galleries": names}

    @app.put(
        "/v1/galleries/{name}",
        tags=["galleries"],
        responses={**_ERRORS, 409: {"description": "Exists for another model"}},
    )
    def create_gallery(name: str = Depends(gallery_writer)) -> JSONResponse:
        """Create a gallery for the service's model (200 if it already exists)."""
        gallery, new = state.create_gallery(name)
        return JSONResponse(_gallery_info(name, gallery), status_code=201 if new else 200)

    @app.get("/v1/galleries/{name}", tags=["galleries"], responses=_GALLERY_ERRORS)
    def gallery_info(name: str = Depends(gallery_reader)) -> dict[str, Any]:
        """The gallery's model and counts."""
        return _gallery_info(name, state.gallery(name))

    @app.post(
        "/v1/galleries/{name}/subjects",
        tags=["galleries"],
        status_code=201,
        responses={**_GALLERY_ERRORS, 409: {"description": "The subject exists"}},
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {
                        "schema": {
                            "type": "object",
                            "required": ["name"],
                            "properties": {
                                "name": {"type": "string"},
                                "metadata": {"type": "object"},
                            },
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
        },
    )
    async def create_subject(
        request: Request, name: str = Depends(gallery_writer)
    ) -> dict[str, Any]:
        """Create a subject (no faces yet) from JSON or a form: `name`, optional `metadata`."""
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type == "application/json":
            try:
                body = await request.json()
            except ValueError as exc:
                raise _error(422, "body: not valid JSON") from exc
            if not isinstance(body, dict):
                raise _error(422, "body: must be a JSON object")
            subject, metadata = body.get("name"), body.get("metadata")
        elif content_type in ("multipart/form-data", "application/x-www-form-urlencoded"):
            form = await request.form()
            subject, metadata = form.get("name"), form.get("metadata")
            await form.close()
        else:
            raise _error(415, "send the subject as JSON or as a form")
        subject = _check_subject_name(subject)
        meta = _check_metadata(metadata)
        gallery = await run_in_threadpool(state.gallery, name)
        created = await run_in_threadpool(_add_subject, gallery, subject, meta)
        return created.to_dict()

    @app.get("/v1/galleries/{name}/subjects", tags=["galleries"], responses=_GALLERY_ERRORS)
    def list_subjects(name: str = Depends(gallery_reader)) -> dict[str, Any]:
        """All subjects, by name, with their face counts and metadata."""
        return {"subjects": [s.to_dict() for s in state.gallery(name).subjects()]}

    @app.get(
        "/v1/galleries/{name}/subjects/{subject}",
        tags=["galleries"],
        responses=_GALLERY_ERRORS,
    )
    def get_subject(subject: str, name: str = Depends(gallery_reader)) -> dict[str, Any]:
        """One subject with its faces (ids, boxes, source hashes; no embeddings)."""
        gallery = state.gallery(name)
        try:
            found = gallery.subject(subject)
            faces = gallery.faces(subject)
        except SubjectNotFoundError as exc:
            raise _error(404, f"no subject named {subject!r}") from exc
        return {**found.to_dict(), "face_list": [f.to_dict() for f in faces]}

    @app.delete(
        "/v1/galleries/{name}/subjects/{subject}",
        tags=["galleries"],
        responses=_GALLERY_ERRORS,
    )
    def delete_subject(subject: str, name: str = Depends(gallery_writer)) -> dict[str, Any]:
        """Remove a subject and all its faces."""
        try:
            removed = state.gallery(name).remove_subject(subject)
        except SubjectNotFoundError as exc:
            raise _error(404, f"no subject named {subject!r}") from exc
        return {"subject": subject, "faces_removed": removed}

    @app.post(
        "/v1/galleries/{name}/subjects/{subject}/faces",
        tags=["galleries"],
        status_code=201,
        responses={**_GALLERY_ERRORS, 409: {"description": "Gallery of another model"}},
    )
    def add_faces(
        subject: str,
        images: list[UploadFile] = File(..., description="Photos of the subject."),
        skip_bad: bool = Query(False, description="Enroll the usable photos, skip the rest."),
        name: str = Depends(gallery_writer),
    ) -> dict[str, Any]:
        """Enroll the largest face of each photo, all in one transaction.

        A photo that is unreadable or has no face: 422 listing them, nothing enrolled (unless
        `skip_bad`, which still fails when no photo is usable).
        """
        gallery = state.gallery(name)
        try:
            gallery.subject(subject)
        except SubjectNotFoundError as exc:
            raise _error(404, f"no subject named {subject!r}") from exc
        model, version, dim = state.holder.get().card.model_key
        try:
            gallery.check_model(model, version, dim)
        except ModelMismatchError as exc:
            raise _error(409, f"gallery {name!r} holds another model's embeddings") from exc
        vectors: list[np.ndarray] = []
        sources: list[dict[str, Any]] = []
        used: list[str] = []
        unreadable: list[dict[str, str]] = []
        no_face: list[str] = []
        for number, upload in enumerate(images):
            label = upload.filename or f"images[{number}]"
            data = _read_upload(upload)
            try:
                pixels = state.decode(data, label)
            except HTTPException as exc:
                unreadable.append({"image": label, "reason": str(exc.detail)})
                continue
            faces = state.run("analyze", pixels)
            if not faces:
                no_face.append(label)
                continue
            face = faces[0]
            vectors.append(face.embedding)
            sources.append(
                {"sha256": image_sha256(data, pixels), "box": face.box, "score": face.score}
            )
            used.append(label)
        if ((unreadable or no_face) and not skip_bad) or not vectors:
            detail = {
                "message": "some images are unreadable or have no face; nothing was enrolled",
                "unreadable": unreadable,
                "no_face": no_face,
            }
            raise HTTPException(status_code=422, detail=detail)
        try:
            face_ids = gallery.enroll(
                subject,
                np.stack(vectors),
                sources,
                create_subject=False,
                model=model,
                model_version=version,
            )
        except SubjectNotFoundError as exc:  # removed meanwhile
            raise _error(404, f"no subject named {subject!r}") from exc
        return {
            "subject": subject,
            "face_ids": face_ids,
            "enrolled": used,
            "unreadable": unreadable,
            "no_face": no_face,
        }

    @app.post("/v1/galleries/{name}/identify", tags=["galleries"], responses=_GALLERY_ERRORS)
    def identify(
        image: UploadFile = File(..., description="A photo."),
        top_k: int = Query(5, ge=1, le=100, description="Subjects listed per face."),
        threshold: float | None = Query(
            None, ge=-1.0, le=1.0, description="Similarity needed for an identity."
        ),
        name: str = Depends(gallery_reader),
    ) -> dict[str, Any]:
        """Who each face in the photo is: `identity` (null when unknown) and the best matches.

        No face: 200 with an empty `faces` list.
        """
        gallery = state.gallery(name)
        pixels = state.decode(_read_upload(image), "image")
        faces = state.run("analyze", pixels)
        if not faces:
            return {"faces": []}
        model, version, _ = state.holder.get().card.model_key
        cut = state.holder.get().threshold if threshold is None else threshold
        try:
            results = gallery.identify(
                np.stack([f.embedding for f in faces]),
                top_k=top_k,
                threshold=cut,
                model=model,
                model_version=version,
            )
        except ModelMismatchError as exc:
            raise _error(409, f"gallery {name!r} holds another model's embeddings") from exc
        return {
            "threshold": cut,
            "faces": [
                {"box": face.to_dict()["box"], **result.to_dict()}
                for face, result in zip(faces, results)
            ],
        }

    return app


def app_from_env() -> FastAPI:
    """An app configured by `$FACESPHERE_SERVE_CONFIG` (JSON; set by `facesphere serve`), for
    `uvicorn --factory`: each worker process builds its own analyzer at startup."""
    config: dict[str, Any] = json.loads(os.environ.get(CONFIG_ENV) or "{}")
    analyzer_options: dict[str, Any] = dict(config.get("analyzer", {}))
    threads = config.get("torch_threads")

    def factory() -> FaceAnalyzer:
        if threads:
            import torch

            torch.set_num_threads(int(threads))
        from facesphere.pipeline.analyzer import FaceAnalyzer

        return FaceAnalyzer(**analyzer_options)

    return create_app(
        home=config.get("home"),
        max_upload_bytes=int(config.get("max_upload_bytes", DEFAULT_MAX_UPLOAD_BYTES)),
        max_pixels=int(config.get("max_pixels", DEFAULT_MAX_PIXELS)),
        analyzer_factory=factory,
        preload=True,
    )
