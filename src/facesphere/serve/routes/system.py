"""Service endpoints: liveness."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends

from facesphere.serve.deps import service
from facesphere.serve.state import ServiceState

router = APIRouter(tags=["service"])


@router.get("/health")
def health(state: ServiceState = Depends(service)) -> dict[str, Any]:
    """Liveness (no key needed)."""
    return {"status": "ok", "analyzer_loaded": state.analyzer_loaded}
