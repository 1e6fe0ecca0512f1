"""GET /v1/models and GET /v1/models/{id}: the models the caller's key may use."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends

from facade.auth import Principal
from facade.backends import BackendPool, ModelEntry
from facade.deps import get_pool, require_principal
from facade.errors import model_not_found
from facade.openapi import error_responses
from facade.schemas import ModelCard, ModelList

router = APIRouter()


def _card(entry: ModelEntry) -> ModelCard:
    # Hugging Face ids name their publisher first ("mistralai/..."): that is the owner.
    owner = entry.id.split("/", 1)[0] if "/" in entry.id else "tensorchat"
    return ModelCard(id=entry.id, created=entry.info.created, owned_by=owner)


@router.get(
    "/v1/models", response_model=ModelList, responses=error_responses(401), summary="List models"
)
async def list_models(
    principal: Annotated[Principal, Depends(require_principal)],
    pool: Annotated[BackendPool, Depends(get_pool)],
) -> ModelList:
    """Models served right now by at least one healthy backend and allowed for this key."""
    return ModelList(data=[_card(e) for e in pool.models() if principal.allows(e.id, e.aliases)])


# `:path` because model ids contain slashes (mistralai/Mistral-7B-Instruct-v0.3).
@router.get(
    "/v1/models/{model:path}",
    response_model=ModelCard,
    responses=error_responses(401, 404),
    summary="Retrieve model",
)
async def retrieve_model(
    model: str,
    principal: Annotated[Principal, Depends(require_principal)],
    pool: Annotated[BackendPool, Depends(get_pool)],
) -> ModelCard:
    """One model by id or alias (any case); 404 when unknown or not allowed for this key."""
    entry = pool.resolve(model)
    if not principal.allows(entry.id, entry.aliases):
        raise model_not_found(model)
    return _card(entry)
