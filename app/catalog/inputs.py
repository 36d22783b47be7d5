"""The normalized inputs a client sends, one pydantic class per model family. Unknown fields are
rejected, so a typo never silently falls back to an upstream default."""

from __future__ import annotations

import uuid
from typing import Annotated

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    WithJsonSchema,
    model_validator,
)

from app.kit.text import bounded_text, integer, number


def _check_video_url(value: str) -> str:
    if not value.startswith(("http://", "https://", "data:")):
        raise ValueError("must be an http(s) URL or a data: URI")
    return value


VideoUrl = Annotated[
    bounded_text(8192),
    # what _check_video_url checks, for the schema (the check keeps its own message)
    WithJsonSchema({"type": "string", "maxLength": 8192, "pattern": "^(https?://|data:)"}),
    AfterValidator(_check_video_url),
]
Seed = integer(ge=0, le=2**31 - 1)


class NormalizedInput(BaseModel):
    # The schema says what _one_source checks: exactly one of the two sources is given.
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "oneOf": [
                {
                    "required": [source],
                    "properties": {source: {"type": "string", "description": f"Given: {source}."}},
                }
                for source in ("video_url", "video_file_id")
            ]
        },
    )

    video_url: VideoUrl | None = Field(
        default=None, description="Where the upstream fetches the video (http(s) or data:)."
    )
    video_file_id: uuid.UUID | None = Field(
        default=None, description="An upload (POST /v1/files) instead of a URL."
    )

    @model_validator(mode="after")
    def _one_source(self) -> NormalizedInput:
        if (self.video_url is None) == (self.video_file_id is None):
            raise ValueError("give exactly one of video_url and video_file_id")
        return self


class ThinkSoundInput(NormalizedInput):
    prompt: bounded_text(2000) = Field(  # type: ignore[valid-type]
        default="",
        description="What to hear. Empty: the model derives one from the video and returns it.",
    )
    seed: Seed | None = Field(default=None, description="Fixes the upstream's randomness.")
    steps: integer(ge=2, le=100) | None = Field(  # type: ignore[valid-type]
        default=None, description="Inference steps (24)."
    )
    guidance: number(ge=1, le=20) | None = Field(  # type: ignore[valid-type]
        default=None, description="CFG scale (5)."
    )


class KlingInput(NormalizedInput):
    prompt: bounded_text(200) | None = Field(  # type: ignore[valid-type]
        default=None, description="Sound effects to generate (≤ 200 characters)."
    )
    music_prompt: bounded_text(200) | None = Field(  # type: ignore[valid-type]
        default=None, description="Background music (≤ 200 characters)."
    )
    asmr_mode: StrictBool = Field(default=False, description="Enhance detailed sound effects.")
