from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel

from app.catalog.registry import ModelSpec


class PriceOut(BaseModel):
    unit: str
    price_usd: str  # decimal string: money never crosses the API as a binary float


class ModelOut(BaseModel):
    object: Literal["model"] = "model"
    id: str
    aliases: list[str]
    title: str
    description: str
    provider: Literal["fal"] = "fal"
    endpoint: str
    input_schema: dict[str, Any]
    limits: dict[str, Any]
    price: PriceOut
    outputs: list[str]

    @classmethod
    def from_spec(cls, spec: ModelSpec) -> ModelOut:
        return cls(
            id=spec.id,
            aliases=list(spec.aliases),
            title=spec.title,
            description=spec.description,
            endpoint=spec.endpoint,
            input_schema=spec.input_model.model_json_schema(),
            limits=spec.limits.to_dict(),
            price=PriceOut(unit=spec.pricing.unit, price_usd=f"{spec.pricing.price_usd:.6f}"),
            outputs=spec.outputs.produces(),
        )
