from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path

from app.auth.dependencies import CurrentTenant
from app.catalog.registry import CATALOG
from app.catalog.schemas import ModelOut
from app.kit.pagination import ListPage
from app.kit.problems import NotFound

router = APIRouter(prefix="/v1/models", tags=["models"])


@router.get("", response_model=ListPage[ModelOut])
async def list_models(_: CurrentTenant) -> ListPage[ModelOut]:
    """Every model the gateway can call, with its input schema, limits and price."""
    return ListPage[ModelOut](data=[ModelOut.from_spec(s) for s in CATALOG], has_more=False)


@router.get("/{model_id:path}", response_model=ModelOut)
async def get_model(
    model_id: Annotated[
        str,
        Path(
            description="A model's id or alias (others: 404 model_not_found).",
            json_schema_extra={"enum": CATALOG.names()},
        ),
    ],
    _: CurrentTenant,
) -> ModelOut:
    """One model, with its input schema, limits and price."""
    spec = CATALOG.resolve(model_id)
    if spec is None:
        raise NotFound(f"No model {model_id!r}.", code="model_not_found", param="model_id")
    return ModelOut.from_spec(spec)
