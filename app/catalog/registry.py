"""The models the gateway can call. A model is one declarative entry: its input schema, the
mapping from the normalized input to fal's payload, where its outputs are, its limits and its
price. Adding a model is adding an entry here, nothing else."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Literal

from pydantic import BaseModel

from app.catalog.inputs import (
    ControlFoleyInput,
    HunyuanFoleyInput,
    KlingInput,
    MireloSfxInput,
    MMAudioInput,
    NormalizedInput,
    SoniloMusicInput,
    ThinkSoundInput,
)
from app.kit.problems import InputValidationError

# What a model is billed by. ``output_second``: seconds of generated output, summed over every
# sample (fal's "per second of output and per sample"); ``sample``: one per generated output.
PriceUnit = Literal["video", "compute_second", "output_second", "sample"]
PRICE_UNITS: tuple[str, ...] = ("video", "compute_second", "output_second", "sample")

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

    def with_audio_inputs(self, inputs: tuple[AudioInput, ...]) -> dict[str, Any]:
        out = self.to_dict()
        if inputs:
            out["audio_inputs"] = [
                {
                    "fields": [i.url_param, i.file_param],
                    "min_duration_s": i.min_duration_s,
                    "max_duration_s": i.max_duration_s,
                }
                for i in inputs
            ]
        return out


@dataclass(frozen=True)
class Pricing:
    unit: PriceUnit
    # fal's published price, seeded into the prices table; None where fal publishes none: the
    # prices table alone prices the model, and until it does its jobs stay unpriced.
    price_usd: Decimal | None


@dataclass(frozen=True)
class ProbedDuration:
    """A model whose output length is a field with a fixed default (MMAudio: 8 s whatever the
    video): the gateway always sends the measured length of the input there (less the start
    offset), within the field's bounds, so a client can never get 8 s of sound on a 20 s clip."""

    field: str
    min_s: float
    max_s: float
    offset_field: str | None = None  # fal's field of a start offset into the video

    def seconds(self, video_s: float, payload: Mapping[str, Any]) -> float:
        offset = float(payload.get(self.offset_field) or 0) if self.offset_field else 0.0
        return round(min(video_s - offset, self.max_s), 3)


@dataclass(frozen=True)
class AudioInput:
    """An audio clip a model takes beside the video, given as a URL or an upload; fetched and
    probed before anything is sent (like the video), and handed to fal like an upload."""

    url_param: str  # the normalized field of a URL
    file_param: str  # the normalized field of an upload (POST /v1/files)
    upstream_field: str  # fal's field
    min_duration_s: float
    max_duration_s: float


@dataclass(frozen=True)
class OutputQuantity:
    """What a request generates, as billing counts it (from the payload sent)."""

    samples: int
    seconds_per_sample: Decimal | None  # None: the model has no output-length field


@dataclass(frozen=True)
class Outputs:
    """Where the upstream's answer keeps each normalized output."""

    video_field: str | None = None
    audio_field: str | None = None
    audio_from_video: bool = False  # extract the audio track from the returned video
    prompt_field: str | None = None  # the upstream reports the prompt it used
    prompt_from_payload: str | None = None  # otherwise: the prompt we sent
    # A list of audio files, one per sample (several outputs of one request): stored each, and
    # shown as result.samples (the first is also result.audio).
    audio_samples_field: str | None = None

    def produces(self) -> list[str]:
        kinds = []
        if self.video_field:
            kinds.append("video")
        if self.audio_field or self.audio_from_video or self.audio_samples_field:
            kinds.append("audio")
        if self.audio_samples_field:
            kinds.append("samples")
        return kinds


@dataclass(frozen=True)
class ModelSpec:
    id: str
    endpoint: str  # fal endpoint id (submit path)
    title: str
    description: str
    input_model: type[NormalizedInput]
    # normalized field -> fal's field; every other normalized field never reaches fal
    upstream_fields: Mapping[str, str]
    outputs: Outputs
    limits: Limits
    pricing: Pricing
    aliases: tuple[str, ...] = ()
    # fal's payload when the plain mapping is not enough (Kling's prompts); else the mapping,
    # without the fields left unset (fal's defaults apply)
    to_upstream: Callable[[Any], dict[str, Any]] | None = None
    probed_duration: ProbedDuration | None = None
    audio_inputs: tuple[AudioInput, ...] = ()
    samples_field: str | None = None  # fal's field of how many outputs one request makes
    # A video longer than the model takes runs as segments, one request each, their sound
    # stitched (app.jobs.steps.split): for models whose only tie to the video is the video
    # itself (no start offset into it, no reference clip laid against it).
    segments: bool = False

    def validate_input(self, raw: Mapping[str, Any]) -> NormalizedInput:
        return self.input_model.model_validate(raw)

    def upstream_payload(self, normalized: BaseModel) -> dict[str, Any]:
        if self.to_upstream is not None:
            return self.to_upstream(normalized)
        return _drop_none(
            {fal: getattr(normalized, name) for name, fal in self.upstream_fields.items()}
        )

    def payload_for_probe(
        self, payload: Mapping[str, Any], video_s: float | None
    ) -> dict[str, Any]:
        """The payload with what the preflight measured filled in (see ProbedDuration)."""
        out = dict(payload)
        if self.probed_duration is not None and video_s is not None:
            out[self.probed_duration.field] = self.probed_duration.seconds(video_s, payload)
        return out

    def normalized_name(self, fal_field: str) -> str | None:
        """The normalized field sent as ``fal_field``."""
        return next((n for n, f in self.upstream_fields.items() if f == fal_field), None)

    def output_quantity(self, payload: Mapping[str, Any]) -> OutputQuantity:
        samples = 1
        if self.samples_field is not None:
            samples = int(payload.get(self.samples_field) or self._default_samples())
        seconds = None
        if self.probed_duration is not None:
            value = payload.get(self.probed_duration.field)
            seconds = None if value is None else Decimal(str(value))
        return OutputQuantity(samples=samples, seconds_per_sample=seconds)

    def _default_samples(self) -> int:
        for name, fal in self.upstream_fields.items():
            if fal == self.samples_field:
                default = self.input_model.model_fields[name].default
                return int(default) if isinstance(default, int) else 1
        return 1


def _drop_none(d: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in d.items() if v is not None}


THINKSOUND_FIELDS = {
    "video_url": "video_url",
    "prompt": "prompt",
    "seed": "seed",
    "steps": "num_inference_steps",
    "guidance": "cfg_scale",
}
KLING_FIELDS = {
    "video_url": "video_url",
    "prompt": "sound_effect_prompt",
    "music_prompt": "background_music_prompt",
    "asmr_mode": "asmr_mode",
}


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
        upstream_fields=THINKSOUND_FIELDS,
        outputs=Outputs(video_field="video", audio_from_video=True, prompt_field="prompt"),
        segments=True,
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
        upstream_fields=THINKSOUND_FIELDS,
        outputs=Outputs(audio_field="audio", prompt_field="prompt"),
        segments=True,
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
        upstream_fields=KLING_FIELDS,
        to_upstream=_kling_payload,
        outputs=Outputs(
            video_field="video", audio_field="audio", prompt_from_payload="sound_effect_prompt"
        ),
        segments=True,
        limits=Limits(
            containers=frozenset({"mp4", "mov"}),
            max_bytes=100 * 1024 * 1024,
            min_duration_s=3.0,
            max_duration_s=20.0,
        ),
        pricing=Pricing(unit="video", price_usd=Decimal("0.035")),
    ),
    ModelSpec(
        id="fal-ai/mmaudio-v2",
        aliases=("mmaudio",),
        endpoint="fal-ai/mmaudio-v2",
        title="MMAudio v2",
        description="Sound for a 1–30 s video from a prompt (required); returns the video with "
        "the audio. The gateway sends the video's measured length as the audio's duration.",
        input_model=MMAudioInput,
        upstream_fields={
            "video_url": "video_url",
            "prompt": "prompt",
            "negative_prompt": "negative_prompt",
            "seed": "seed",
            "steps": "num_steps",
            "guidance": "cfg_strength",
            "mask_away_clip": "mask_away_clip",
        },
        outputs=Outputs(video_field="video", audio_from_video=True),
        segments=True,
        limits=Limits(min_duration_s=1.0, max_duration_s=30.0),
        pricing=Pricing(unit="output_second", price_usd=Decimal("0.001")),
        probed_duration=ProbedDuration("duration", min_s=1.0, max_s=30.0),
    ),
    ModelSpec(
        id="fal-ai/hunyuan-video-foley",
        aliases=("hunyuan-foley",),
        endpoint="fal-ai/hunyuan-video-foley",
        title="HunyuanVideo-Foley",
        description="Foley for a video of up to 15 s from a prompt (required); returns the video "
        "with the audio. fal publishes no price: jobs stay unpriced until the operator sets one.",
        input_model=HunyuanFoleyInput,
        upstream_fields={
            "video_url": "video_url",
            "prompt": "text_prompt",
            "negative_prompt": "negative_prompt",
            "seed": "seed",
            "steps": "num_inference_steps",
            "guidance": "guidance_scale",
        },
        outputs=Outputs(video_field="video", audio_from_video=True),
        # its audio stops at 15 s (models.md): a longer video would end in silence
        segments=True,
        limits=Limits(max_duration_s=15.0),
        pricing=Pricing(unit="video", price_usd=None),
    ),
    ModelSpec(
        id="fal-ai/controlfoley",
        aliases=("controlfoley",),
        endpoint="fal-ai/controlfoley",
        title="ControlFoley",
        description="Sound for a 1–30 s video, optionally in the timbre of a 2–4 s reference "
        "audio clip (a URL or an audio upload); returns the video with the audio.",
        input_model=ControlFoleyInput,
        upstream_fields={
            "video_url": "video_url",
            "prompt": "prompt",
            "negative_prompt": "negative_prompt",
            "reference_audio_url": "reference_audio_url",
            "seed": "seed",
            "steps": "num_steps",
            "guidance": "cfg_strength",
        },
        outputs=Outputs(video_field="video", audio_from_video=True),
        limits=Limits(min_duration_s=1.0, max_duration_s=30.0),
        pricing=Pricing(unit="video", price_usd=Decimal("0.015")),
        probed_duration=ProbedDuration("duration", min_s=1.0, max_s=30.0),
        audio_inputs=(
            AudioInput(
                url_param="reference_audio_url",
                file_param="reference_audio_file_id",
                upstream_field="reference_audio_url",
                min_duration_s=2.0,
                max_duration_s=4.0,
            ),
        ),
    ),
    ModelSpec(
        id="mirelo-ai/sfx-v1.5/video-to-audio",
        aliases=("mirelo-sfx",),
        endpoint="mirelo-ai/sfx-v1.5/video-to-audio",
        title="Mirelo SFX v1.5",
        description="Sound effects for a video of up to 10 s, 2–8 different takes in one job "
        "(result.samples).",
        input_model=MireloSfxInput,
        upstream_fields={
            "video_url": "video_url",
            "prompt": "text_prompt",
            "samples": "num_samples",
            "seed": "seed",
            "start_offset": "start_offset",
        },
        outputs=Outputs(audio_samples_field="audio"),
        limits=Limits(min_duration_s=1.0, max_duration_s=10.0),
        pricing=Pricing(unit="output_second", price_usd=Decimal("0.01")),
        probed_duration=ProbedDuration(
            "duration", min_s=1.0, max_s=10.0, offset_field="start_offset"
        ),
        samples_field="num_samples",
    ),
    ModelSpec(
        id="sonilo/v1.1/video-to-music",
        aliases=("sonilo-music",),
        endpoint="sonilo/v1.1/video-to-music",
        title="Sonilo v1.1 video-to-music",
        description="Music scored to a video of up to 600 s, 1–3 different tracks in one job "
        "(result.samples).",
        input_model=SoniloMusicInput,
        upstream_fields={
            "video_url": "video_url",
            "prompt": "prompt",
            "samples": "num_samples",
            "start_offset": "start_offset",
        },
        outputs=Outputs(audio_samples_field="audios"),
        limits=Limits(min_duration_s=1.0, max_duration_s=600.0),
        pricing=Pricing(unit="output_second", price_usd=Decimal("0.009")),
        probed_duration=ProbedDuration(
            "duration", min_s=1.0, max_s=600.0, offset_field="start_offset"
        ),
        samples_field="num_samples",
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
