"""GET /health (ready: a backend serves a model), /health/live (process up) and /metrics."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.responses import Response

from facade.deps import FacadeState, get_state
from facade.metrics import CONTENT_TYPE

router = APIRouter()


class HealthStatus(BaseModel):
    status: Literal["ok", "unavailable"]
    models: list[str]
    backends_healthy: int
    backends_total: int


class Liveness(BaseModel):
    status: Literal["ok"]


@router.get(
    "/health",
    summary="Readiness",
    response_model=HealthStatus,
    responses={503: {"model": HealthStatus, "description": "No backend serves a model"}},
)
async def health(state: Annotated[FacadeState, Depends(get_state)]) -> JSONResponse:
    """200 when at least one backend serves at least one model, else 503 (take me out).

    Unauthenticated, so it names models but not backend addresses or errors (those are in
    the logs and in `tensorchat_facade_backend_up`).
    """
    pool = state.pool
    ready = pool.ready
    return JSONResponse(
        {
            "status": "ok" if ready else "unavailable",
            "models": [entry.id for entry in pool.models()],
            "backends_healthy": sum(b.healthy for b in pool.backends),
            "backends_total": len(pool.backends),
        },
        status_code=200 if ready else 503,
    )


@router.get("/health/live", summary="Liveness", response_model=Liveness)
async def live() -> dict[str, str]:
    """200 while the process serves HTTP; backends do not matter (do not restart for them)."""
    return {"status": "ok"}


@router.get("/metrics", summary="Prometheus metrics", include_in_schema=False)
async def metrics(state: Annotated[FacadeState, Depends(get_state)]) -> Response:
    for backend in state.pool.backends:
        state.metrics.backend_up.labels(backend.target).set(1 if backend.healthy else 0)
    return Response(state.metrics.render(), media_type=CONTENT_TYPE)
