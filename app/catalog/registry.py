"""The models the gateway can call. A model is one declarative entry: its input schema, the
mapping from the normalized input to fal's payload, where its outputs are, its limits and its
price. Adding a model is adding an entry here, nothing else."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Literal

from pydantic import BaseModel

from app.catalog.inputs import KlingInput, NormalizedInput, ThinkSoundInput
from app.kit.problems import InputValidationError

PriceUnit = Literal["video", "compute_second", "output_second"]

# fal's Kling endpoint fills in a car-race prompt when a field is missing; a gateway that omits
# them gets a drag race on every video (models.md). These are sent instead when a client gives
# no prompt: neutral, and asking for no music.
KLING_NEUTRAL_SOUND_PROMPT = "Natural, realistic sound effects that match the on-screen action"
KLING_NO_MUSIC_PROMPT = "No background music"


@dataclass(frozen=True)
class Limits:
    containers: frozenset[str] | None = None
    max_bytes: int | None = None
    min_duration_s: float | None = None
    max_duration_s: float | None = None
    # A setting that overrides max_duration_s (a deployment's own cap), by name.
    max_duration_setting: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "containers": sorted(self.containers) if self.containers else None,
            "max_bytes": self.max_bytes,
            "min_duration_s": self.min_duration_s,
            "max_duration_s": self.max_duration_s,
        }


@dataclass(frozen=True)
class Pricing:
    unit: PriceUnit
    price_usd: Decimal


@dataclass(frozen=True)
class Outputs:
    """Where the upstream's answer keeps each normalized output."""

    video_field: str | None = None
    audio_field: str | None = None
    audio_from_video: bool = False  # extract the audio track from the returned video
    prompt_field: str | None = None  # the upstream reports the prompt it used
    prompt_from_payload: str | None = None  # otherwise: the prompt we sent

    def produces(self) -> list[str]:
        kinds = []
        if self.video_field:
            kinds.append("video")
        if self.audio_field or self.audio_from_video:
            kinds.append("audio")
        return kinds


@dataclass(frozen=True)
class ModelSpec:
    id: str
    endpoint: str  # fal endpoint id (submit path)
    title: str
    description: str
    input_model: type[NormalizedInput]
    to_upstream: Callable[[Any], dict[str, Any]]
    outputs: Outputs
    limits: Limits
    pricing: Pricing
    aliases: tuple[str, ...] = ()

    def validate_input(self, raw: Mapping[str, Any]) -> NormalizedInput:
        return self.input_model.model_validate(raw)

    def upstream_payload(self, normalized: BaseModel) -> dict[str, Any]:
        return self.to_upstream(normalized)


def _drop_none(d: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in d.items() if v is not None}


def _thinksound_payload(i: ThinkSoundInput) -> dict[str, Any]:
    return _drop_none(
        {
            "video_url": i.video_url,
            "prompt": i.prompt,
            "seed": i.seed,
            "num_inference_steps": i.steps,
            "cfg_scale": i.guidance,
        }
    )


def _kling_payload(i: KlingInput) -> dict[str, Any]:
    # Both prompt fields are always sent: see KLING_NEUTRAL_SOUND_PROMPT.
    return {
        "video_url": i.video_url,
        "sound_effect_prompt": i.prompt or KLING_NEUTRAL_SOUND_PROMPT,
        "background_music_prompt": i.music_prompt or KLING_NO_MUSIC_PROMPT,
        "asmr_mode": i.asmr_mode,
    }


THINKSOUND_PRICE = Pricing(unit="compute_second", price_usd=Decimal("0.001"))

MODELS: tuple[ModelSpec, ...] = (
    ModelSpec(
        id="fal-ai/thinksound",
        aliases=("thinksound",),
        endpoint="fal-ai/thinksound",
        title="ThinkSound",
        description="Realistic audio for a video, optionally steered by a prompt; returns the "
        "video with the audio and the prompt used.",
        input_model=ThinkSoundInput,
        to_upstream=_thinksound_payload,
        outputs=Outputs(video_field="video", audio_from_video=True, prompt_field="prompt"),
        limits=Limits(max_duration_s=30.0, max_duration_setting="thinksound_max_duration_s"),
        pricing=THINKSOUND_PRICE,
    ),
    ModelSpec(
        id="fal-ai/thinksound/audio",
        aliases=("thinksound-audio",),
        endpoint="fal-ai/thinksound/audio",
        title="ThinkSound (audio only)",
        description="ThinkSound returning the generated audio alone.",
        input_model=ThinkSoundInput,
        to_upstream=_thinksound_payload,
        outputs=Outputs(audio_field="audio", prompt_field="prompt"),
        limits=Limits(max_duration_s=30.0, max_duration_setting="thinksound_max_duration_s"),
        pricing=THINKSOUND_PRICE,
    ),
    ModelSpec(
        id="fal-ai/kling-video/video-to-audio",
        aliases=("kling-video-to-audio",),
        endpoint="fal-ai/kling-video/video-to-audio",
        title="Kling video-to-audio",
        description="Sound effects and background music for a 3–20 s MP4/MOV video; returns the "
        "video with the audio and the audio as MP3.",
        input_model=KlingInput,
        to_upstream=_kling_payload,
        outputs=Outputs(
            video_field="video", audio_field="audio", prompt_from_payload="sound_effect_prompt"
        ),
        limits=Limits(
            containers=frozenset({"mp4", "mov"}),
            max_bytes=100 * 1024 * 1024,
            min_duration_s=3.0,
            max_duration_s=20.0,
        ),
        pricing=Pricing(unit="video", price_usd=Decimal("0.035")),
    ),
)


class UnknownModel(InputValidationError):
    def __init__(self, name: str, *, param: str = "model") -> None:
        super().__init__(
            [
                {
                    "param": param,
                    "code": "unknown_model",
                    "message": f"unknown model {name[:200]!r}; see GET /v1/models",
                }
            ]
        )
        self.code = "unknown_model"  # type: ignore[misc]


@dataclass
class Catalog:
    models: tuple[ModelSpec, ...] = MODELS
    _index: dict[str, ModelSpec] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for spec in self.models:
            for name in (spec.id, *spec.aliases):
                if name in self._index:
                    raise ValueError(f"duplicate model name {name!r}")
                self._index[name] = spec

    def resolve(self, name: str) -> ModelSpec | None:
        return self._index.get(name)

    def names(self) -> list[str]:
        """Every id and alias."""
        return list(self._index)

    def require(self, name: str, *, param: str = "model") -> ModelSpec:
        spec = self._index.get(name)
        if spec is None:
            raise UnknownModel(name, param=param)
        return spec

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(self.models)


CATALOG = Catalog()
