"""The models the emulator serves: input schemas (fal's rules), prices, and their runners.

Each entry is declarative: an endpoint id, a pydantic input model whose errors become fal's
422 `detail` list, a price, a media runner (`emulator.runners`) and the largest input it fetches.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from emulator.billing import Price

KLING_SFX_DEFAULT = "Car tires screech as they accelerate in a drag race"
KLING_MUSIC_DEFAULT = "intense car race"


class _Input(BaseModel):
    # fal apps ignore unknown fields rather than reject them.
    model_config = ConfigDict(extra="ignore")


class ThinkSoundInput(_Input):
    video_url: str
    prompt: str = ""
    seed: int | None = None
    num_inference_steps: int = Field(24, ge=2, le=100)
    cfg_scale: float = Field(5.0, ge=1, le=20)


class KlingVideoToAudioInput(_Input):
    video_url: str
    sound_effect_prompt: str = Field(KLING_SFX_DEFAULT, max_length=200)
    background_music_prompt: str = Field(KLING_MUSIC_DEFAULT, max_length=200)
    asmr_mode: bool = False

    @field_validator("sound_effect_prompt", mode="before")
    @classmethod
    def _sfx_default(cls, value: Any) -> Any:
        # The trap, reproduced: an omitted (or null) prompt becomes a drag race.
        return KLING_SFX_DEFAULT if value is None else value

    @field_validator("background_music_prompt", mode="before")
    @classmethod
    def _music_default(cls, value: Any) -> Any:
        return KLING_MUSIC_DEFAULT if value is None else value


class MMAudioV2Input(_Input):
    video_url: str
    prompt: str
    negative_prompt: str = ""
    seed: int | None = Field(None, ge=0, le=65535)
    num_steps: int = Field(25, ge=4, le=50)
    duration: float = Field(8.0, ge=1, le=30)
    cfg_strength: float = Field(4.5, ge=0, le=20)
    mask_away_clip: bool = False


@dataclass(frozen=True)
class ModelSpec:
    endpoint_id: str
    input_schema: type[_Input]
    price: Price
    # Runs in a worker thread: (MediaContext) -> output dict. Resolved lazily from runners.
    runner: str
    max_input_mb: int | None = None

    @property
    def app_path(self) -> str:
        """`owner/app`: where status, result and cancel live."""
        owner, app, *_ = self.endpoint_id.split("/")
        return f"{owner}/{app}"

    def runner_fn(self) -> Callable[..., dict[str, Any]]:
        from emulator import runners

        fn: Callable[..., dict[str, Any]] = getattr(runners, self.runner)
        return fn

    def billed_quantity(self, inp: BaseModel | None, status_code: int, seconds: float) -> float:
        """Units fal would bill; see `emulator.billing` for the rules."""
        unit = self.price.unit
        if unit == "compute_seconds":
            # Exactly the reported metrics.inference_time: a client can reproduce its bill.
            return seconds
        if status_code != 200:
            return 0.0
        if unit == "seconds" and isinstance(inp, MMAudioV2Input):
            return float(inp.duration)
        return 1.0


MODELS: dict[str, ModelSpec] = {
    spec.endpoint_id: spec
    for spec in (
        ModelSpec(
            "fal-ai/thinksound", ThinkSoundInput, Price(0.001, "compute_seconds"), "thinksound"
        ),
        ModelSpec(
            "fal-ai/thinksound/audio",
            ThinkSoundInput,
            Price(0.001, "compute_seconds"),
            "thinksound_audio",
        ),
        ModelSpec(
            "fal-ai/kling-video/video-to-audio",
            KlingVideoToAudioInput,
            Price(0.035, "video"),
            "kling_video_to_audio",
            max_input_mb=100,
        ),
        ModelSpec("fal-ai/mmaudio-v2", MMAudioV2Input, Price(0.001, "seconds"), "mmaudio_v2"),
    )
}
APPS: frozenset[str] = frozenset(spec.app_path for spec in MODELS.values())
PRICES: dict[str, Price] = {endpoint_id: spec.price for endpoint_id, spec in MODELS.items()}
