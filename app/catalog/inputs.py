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


class MMAudioInput(NormalizedInput):
    prompt: bounded_text(2000) = Field(  # type: ignore[valid-type]
        description="What to hear (required by the model)."
    )
    negative_prompt: bounded_text(2000) = Field(  # type: ignore[valid-type]
        default="", description="What not to hear."
    )
    seed: integer(ge=0, le=65535) | None = Field(  # type: ignore[valid-type]
        default=None, description="Fixes the upstream's randomness (0–65535)."
    )
    steps: integer(ge=4, le=50) | None = Field(  # type: ignore[valid-type]
        default=None, description="Inference steps (25)."
    )
    guidance: number(ge=0, le=20) | None = Field(  # type: ignore[valid-type]
        default=None, description="CFG strength (4.5)."
    )
    mask_away_clip: StrictBool = Field(
        default=False, description="Ignore the video's CLIP features (sound from the prompt)."
    )


class HunyuanFoleyInput(NormalizedInput):
    prompt: bounded_text(2000) = Field(  # type: ignore[valid-type]
        description="What to hear (required by the model)."
    )
    negative_prompt: bounded_text(2000) | None = Field(  # type: ignore[valid-type]
        default=None, description='What not to hear ("noisy, harsh").'
    )
    seed: Seed | None = Field(default=None, description="Fixes the upstream's randomness.")
    steps: integer(ge=10, le=100) | None = Field(  # type: ignore[valid-type]
        default=None, description="Inference steps (50)."
    )
    guidance: number(ge=1, le=10) | None = Field(  # type: ignore[valid-type]
        default=None, description="Guidance scale (4.5)."
    )


def _check_audio_url(value: str) -> str:
    if not value.startswith(("http://", "https://", "data:")):
        raise ValueError("must be an http(s) URL or a data: URI")
    return value


AudioUrl = Annotated[
    bounded_text(8192),
    WithJsonSchema({"type": "string", "maxLength": 8192, "pattern": "^(https?://|data:)"}),
    AfterValidator(_check_audio_url),
]


class ControlFoleyInput(NormalizedInput):
    prompt: bounded_text(2000) = Field(  # type: ignore[valid-type]
        default="", description="What to hear."
    )
    negative_prompt: bounded_text(2000) = Field(  # type: ignore[valid-type]
        default="", description="What not to hear."
    )
    reference_audio_url: AudioUrl | None = Field(
        default=None,
        description="A 2–4 s audio clip whose timbre is copied (http(s) or data:); probed "
        "before anything is sent.",
    )
    reference_audio_file_id: uuid.UUID | None = Field(
        default=None,
        description="An audio upload (POST /v1/files) instead of reference_audio_url.",
    )
    seed: Seed | None = Field(default=None, description="Fixes the upstream's randomness.")
    steps: integer(ge=4, le=50) | None = Field(  # type: ignore[valid-type]
        default=None, description="Inference steps (25)."
    )
    guidance: number(ge=0, le=20) | None = Field(  # type: ignore[valid-type]
        default=None, description="CFG strength (4.5)."
    )

    @model_validator(mode="after")
    def _one_reference(self) -> ControlFoleyInput:
        if self.reference_audio_url is not None and self.reference_audio_file_id is not None:
            raise ValueError("give at most one of reference_audio_url and reference_audio_file_id")
        return self


class MireloSfxInput(NormalizedInput):
    prompt: bounded_text(2000) | None = Field(  # type: ignore[valid-type]
        default=None, description="What to hear (optional)."
    )
    samples: integer(ge=2, le=8) = Field(  # type: ignore[valid-type]
        default=2, description="How many different audio tracks to make (2–8): result.samples."
    )
    seed: Seed | None = Field(default=None, description="Fixes the upstream's randomness.")
    start_offset: number(ge=0, le=600) | None = Field(  # type: ignore[valid-type]
        default=None,
        description="Seconds into the video where the sound starts (0); at most 10 s are made.",
    )


class SoniloMusicInput(NormalizedInput):
    prompt: bounded_text(2000) | None = Field(  # type: ignore[valid-type]
        default=None,
        description="The musical style (optional; derived from the video when omitted).",
    )
    samples: integer(ge=1, le=3) = Field(  # type: ignore[valid-type]
        default=1, description="How many different music tracks to make (1–3): result.samples."
    )
    start_offset: number(ge=0, le=600) | None = Field(  # type: ignore[valid-type]
        default=None, description="Seconds into the video where the music starts."
    )
