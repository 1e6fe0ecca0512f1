"""FastAPI dependencies: the shared state (settings, backends, keys, limits) and the caller."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from facade.auth import KeyRing, Principal
from facade.backends import BackendPool
from facade.limits import ConcurrencyGate, Limiter
from facade.metrics import FacadeMetrics
from facade.request_context import request_record
from facade.response_store import ResponseStore
from facade.settings import FacadeSettings


@dataclass(eq=False)
class FacadeState:
    """What every request shares; built by `create_app`, opened and closed by its lifespan."""

    settings: FacadeSettings
    pool: BackendPool
    keyring: KeyRing
    limiter: Limiter
    gate: ConcurrencyGate
    metrics: FacadeMetrics = field(default_factory=FacadeMetrics)
    # Stored responses (Responses API), with Redis only; None: the facade keeps none.
    responses: ResponseStore | None = None


def state_of(request: Request) -> FacadeState:
    state: FacadeState = request.app.state.facade
    return state


async def get_state(request: Request) -> FacadeState:
    return state_of(request)


async def get_settings(state: Annotated[FacadeState, Depends(get_state)]) -> FacadeSettings:
    return state.settings


async def get_pool(state: Annotated[FacadeState, Depends(get_state)]) -> BackendPool:
    return state.pool


async def get_keyring(state: Annotated[FacadeState, Depends(get_state)]) -> KeyRing:
    return state.keyring


# auto_error=False: a missing key must get the OpenAI 401 envelope, not FastAPI's 403.
_bearer = HTTPBearer(auto_error=False, description="API key: `Authorization: Bearer KEY`")


async def require_principal(
    request: Request,
    keyring: Annotated[KeyRing, Depends(get_keyring)],
    _documented: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    """The authenticated caller, or a 401 in the OpenAI envelope.

    `_bearer` only documents the scheme in OpenAPI; the header is checked by the key ring,
    which also tells a missing key from a wrong one.
    """
    return authenticate(request, keyring)


def authenticate(request: Request, keyring: KeyRing) -> Principal:
    """The caller of `request` (an APIError 401 if none), named in its access log line."""
    principal = keyring.authenticate(request.headers.get("authorization"))
    request_record(request).key = principal.name  # the access log's; never the key itself
    return principal
