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


class HunyuanVideoFoleyInput(_Input):
    video_url: str
    text_prompt: str
    negative_prompt: str = "noisy, harsh"
    guidance_scale: float = Field(4.5, ge=1, le=10)
    num_inference_steps: int = Field(50, ge=10, le=100)
    seed: int | None = None


class ControlFoleyInput(_Input):
    video_url: str
    prompt: str = ""
    negative_prompt: str = ""
    reference_audio_url: str | None = None
    duration: float = Field(8.0, ge=1, le=30)
    num_steps: int = Field(25, ge=4, le=50)
    cfg_strength: float = Field(4.5, ge=0, le=20)
    seed: int | None = None


class MireloSfxInput(_Input):
    video_url: str
    text_prompt: str | None = None
    num_samples: int = Field(2, ge=2, le=8)
    duration: float = Field(10.0, ge=1, le=10)
    seed: int | None = None
    start_offset: float = Field(0.0, ge=0)


class SoniloVideoToMusicInput(_Input):
    video_url: str
    prompt: str | None = None
    num_samples: int = Field(1, ge=1, le=3)
    start_offset: float | None = Field(None, ge=0, le=600)
    # None: the rest of the video (the runner records what it scored, which is what is billed)
    duration: float | None = Field(None, ge=1, le=600)


@dataclass(frozen=True)
class ModelSpec:
    endpoint_id: str
    input_schema: type[_Input]
    price: Price
    # Runs in a worker thread: (MediaContext) -> output dict. Resolved lazily from runners.
    runner: str
    max_input_mb: int | None = None
    # Fields holding an audio file the runner needs beside the video (fetched like it).
    audio_inputs: tuple[str, ...] = ()

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
        samples = int(getattr(inp, "num_samples", 1) or 1)
        if unit == "seconds":
            # fal's "per second of output and per sample": the output asked for, every sample
            return float(getattr(inp, "duration", 0.0) or 0.0) * samples
        if unit == "samples":
            return float(samples)
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
        ModelSpec(
            "fal-ai/hunyuan-video-foley",
            HunyuanVideoFoleyInput,
            # fal bills it but publishes no price: the pricing API leaves it out
            Price(0.02, "video", published=False),
            "hunyuan_video_foley",
        ),
        ModelSpec(
            "fal-ai/controlfoley",
            ControlFoleyInput,
            Price(0.015, "video"),
            "controlfoley",
            audio_inputs=("reference_audio_url",),
        ),
        ModelSpec(
            "mirelo-ai/sfx-v1.5/video-to-audio",
            MireloSfxInput,
            Price(0.01, "seconds"),
            "mirelo_sfx",
        ),
        ModelSpec(
            "sonilo/v1.1/video-to-music",
            SoniloVideoToMusicInput,
            Price(0.009, "seconds"),
            "sonilo_video_to_music",
        ),
    )
}
APPS: frozenset[str] = frozenset(spec.app_path for spec in MODELS.values())
PRICES: dict[str, Price] = {endpoint_id: spec.price for endpoint_id, spec in MODELS.items()}
