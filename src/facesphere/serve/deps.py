"""What the route modules share: the state and key dependencies, gallery access checks and the
documented error answers (images are read by `serve.uploads`)."""

from __future__ import annotations

from typing import Any

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from facesphere.gallery.folder import valid_gallery_name
from facesphere.serve.keys import ApiKey
from facesphere.serve.state import ServiceState

ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"description": "Missing, unknown or revoked API key"},
    403: {"description": "The key's scope or gallery does not allow this"},
    413: {"description": "Request body over the upload limit"},
    422: {"description": "Invalid input: unreadable image, no face where one is needed, ..."},
}
GALLERY_ERRORS: dict[int | str, dict[str, Any]] = {
    **ERRORS,
    404: {"description": "No such gallery (or subject)"},
}

_bearer = HTTPBearer(auto_error=False, bearerFormat="fs_<id>_<secret>", description="An API key.")


def service(request: Request) -> ServiceState:
    """The app's shared state."""
    state: ServiceState = request.app.state.service
    return state


def api_key(request: Request, _: HTTPAuthorizationCredentials | None = Depends(_bearer)) -> ApiKey:
    """The request's API key: KeyGate authenticated it before the body was read (`_bearer`
    only documents the scheme)."""
    key: ApiKey = request.state.api_key
    return key


def _check_gallery_name(name: str) -> None:
    if not valid_gallery_name(name):
        raise HTTPException(
            422, f"invalid gallery name {name!r}: use letters, digits, '_', '-' and '.'"
        )


def gallery_reader(name: str, key: ApiKey = Depends(api_key)) -> str:
    """The path's gallery name, when the key may read that gallery (else 422 or 403)."""
    _check_gallery_name(name)
    if not key.allows("read", name):
        raise HTTPException(403, f"this key is limited to gallery {key.gallery!r}")
    return name


def gallery_writer(name: str, key: ApiKey = Depends(api_key)) -> str:
    """The path's gallery name, when the key may change that gallery (else 422 or 403)."""
    _check_gallery_name(name)
    if not key.allows("write", name):
        if key.scope != "write":
            raise HTTPException(403, "this key is read-only")
        raise HTTPException(403, f"this key is limited to gallery {key.gallery!r}")
    return name
