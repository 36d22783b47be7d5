from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from app.catalog.registry import ModelSpec


class ModelPrice(BaseModel):
    unit: str = Field(
        description="What the model is billed by: video, compute_second, output_second "
        "(seconds of output, summed over every sample) or sample."
    )
    # a decimal string: money never crosses the API as a binary float
    price_usd: str | None = Field(
        description="fal's published price per unit, in USD; null where fal publishes none (the "
        "operator's prices table prices it: GET /v1/admin/prices)."
    )


class ModelOut(BaseModel):
    object: Literal["model"] = Field(default="model", description="Always model.")
    id: str = Field(description="The model's id (a job's model).")
    aliases: list[str] = Field(description="Other names a job may use for it.")
    title: str = Field(description="Its name, for people.")
    description: str = Field(description="What it does.")
    provider: Literal["fal"] = Field(default="fal", description="Who runs it.")
    endpoint: str = Field(description="fal's endpoint.")
    input_schema: dict[str, Any] = Field(description="The JSON schema of a job's input.")
    limits: dict[str, Any] = Field(
        description="What an input must satisfy: containers, max_bytes, min/max_duration_s, "
        "and audio_inputs (a reference clip's field and its min/max_duration_s)."
    )
    price: ModelPrice = Field(description="The list price.")
    outputs: list[str] = Field(
        description="What a job returns: video, audio, and samples for a model making several "
        "outputs per job."
    )

    @classmethod
    def from_spec(cls, spec: ModelSpec) -> ModelOut:
        return cls(
            id=spec.id,
            aliases=list(spec.aliases),
            title=spec.title,
            description=spec.description,
            endpoint=spec.endpoint,
            input_schema=spec.input_model.model_json_schema(),
            limits=spec.limits.with_audio_inputs(spec.audio_inputs),
            price=ModelPrice(
                unit=spec.pricing.unit,
                price_usd=None
                if spec.pricing.price_usd is None
                else f"{spec.pricing.price_usd:.6f}",
            ),
            outputs=spec.outputs.produces(),
        )
