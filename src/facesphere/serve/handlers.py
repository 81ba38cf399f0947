"""The service's error answers: a `FacesphereError` becomes its `http_status` with its one-line
message (without server paths; a busy service's 503 with Retry-After); anything else is a 500
whose details go to the log only."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from facesphere.errors import FacesphereError
from facesphere.gallery import EnrollImagesError
from facesphere.serve.state import ServiceState
from facesphere.serve.work import ServiceBusyError

log = logging.getLogger("facesphere.serve")

NOTHING_ENROLLED = "some images are unreadable, have no face or several; nothing was enrolled"


def error_detail(exc: FacesphereError, state: ServiceState) -> str | dict[str, Any]:
    """The `detail` of the answer to `exc`: its message, or for a refused enrollment the
    images that were unreadable, had no face or several."""
    if isinstance(exc, EnrollImagesError):
        return {"message": NOTHING_ENROLLED, **exc.details()}
    text = str(exc)
    return state.public_message(text.splitlines()[0] if text else type(exc).__name__)


def install_error_handlers(app: FastAPI) -> None:
    """Answer facesphere's errors by their `http_status`, and hide unexpected ones."""

    @app.exception_handler(FacesphereError)
    async def _facesphere_error(request: Request, exc: FacesphereError) -> JSONResponse:
        status = int(exc.http_status)
        if status >= 500:
            log.error("%s %s failed", request.method, request.url.path, exc_info=exc)
        detail = error_detail(exc, request.app.state.service)
        headers = None
        if isinstance(exc, ServiceBusyError):
            headers = {"Retry-After": str(exc.retry_after)}
        return JSONResponse({"detail": detail}, status_code=status, headers=headers)

    @app.exception_handler(Exception)
    async def _internal(request: Request, exc: Exception) -> JSONResponse:
        log.error("%s %s failed", request.method, request.url.path, exc_info=exc)
        return JSONResponse({"detail": "internal server error"}, status_code=500)
