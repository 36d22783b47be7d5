"""What a caller may ask of the finished sound (``"output"`` on a job): how the generated audio
meets the video (replace its sound, mix under it, or the audio alone), its format and sample rate,
and the loudness it is normalized to. A job without it keeps the model's outputs as they came,
bit for bit (every job before these options existed)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic_core import PydanticCustomError

from app.kit.examples import with_examples
from app.media.encode import SPECS, AudioFormat
from app.media.loudness import LoudnessTarget
from app.media.mixing import MixSettings
from app.media.pcm import SAMPLE_RATES, PcmFormat
from app.media.soundtrack import AudioMode

SampleRate = Literal[SAMPLE_RATES]  # type: ignore[valid-type]


class LoudnessOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    target_lufs: float = Field(
        default=-16.0,
        gt=-70,
        lt=0,
        description="The integrated loudness (EBU R128 / ITU-R BS.1770, in LUFS) the sound is "
        "normalized to: -16 for the web and streaming, -23 for broadcast (EBU R128), -24 for "
        "ATSC A/85.",
    )
    true_peak_dbtp: float = Field(
        default=-1.0,
        ge=-9,
        le=0,
        description="The highest true peak allowed, in dBTP; a limiter holds it.",
    )

    def target(self) -> LoudnessTarget:
        return LoudnessTarget(integrated_lufs=self.target_lufs, true_peak_dbtp=self.true_peak_dbtp)


class MixOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    original_gain_db: float = Field(
        default=0.0, ge=-40, le=12, description="The gain of the video's own track, in dB."
    )
    generated_gain_db: float = Field(
        default=-4.0, ge=-40, le=12, description="The gain of the generated sound, in dB."
    )
    duck_db: float = Field(
        default=12.0,
        ge=0,
        le=40,
        description="How far the generated sound is turned down while the video's own track is "
        "loud (dialogue stays clear), in dB; 0 turns ducking off.",
    )

    def settings(self) -> MixSettings:
        return MixSettings(
            original_gain_db=self.original_gain_db,
            generated_gain_db=self.generated_gain_db,
            duck_db=self.duck_db,
        )


class OutputOptions(BaseModel):
    """What the finished sound is to be. Every field is optional."""

    model_config = with_examples(
        {"audio_mode": "mix", "loudness": {"target_lufs": -23}},
        {"audio_mode": "generated_only", "audio_format": "flac", "sample_rate": 44100},
    )

    audio_mode: AudioMode = Field(
        default=AudioMode.REPLACE,
        description="replace: the generated sound replaces the video's own; mix: it is laid "
        "under the video's own track, ducked where that is loud (a video without sound is "
        "treated as replace); generated_only: the audio file alone, no video.",
    )
    audio_format: AudioFormat = Field(
        default=AudioFormat.AAC,
        description="The audio's codec: aac (.m4a alone), mp3, wav (16-bit PCM; with the video "
        "a .mov), flac or opus (48 kHz only). With the video, an MP4 (wav: MOV) carries it.",
    )
    sample_rate: SampleRate = Field(  # type: ignore[valid-type]
        default=48_000, description="The audio's sample rate, in Hz."
    )
    channels: Literal[1, 2] = Field(default=2, description="1 (mono) or 2 (stereo).")
    loudness: LoudnessOptions | None = Field(
        default_factory=LoudnessOptions,
        description="The loudness the sound is normalized to (by default -16 LUFS, true peak "
        "at most -1 dBTP); null leaves the level as the model made it.",
    )
    mix: MixOptions | None = Field(
        default=None,
        description="The gains of mix mode (defaults: the video's track as it is, the generated "
        "sound 4 dB down, ducked up to 12 dB). Only with audio_mode mix.",
    )

    @field_validator("sample_rate")
    @classmethod
    def _rate_fits_format(cls, rate: int, info: Any) -> int:
        fmt = info.data.get("audio_format")
        if fmt is not None and rate not in SPECS[fmt].rates:
            allowed = ", ".join(str(r) for r in SPECS[fmt].rates)
            raise PydanticCustomError(
                "rate_not_in_format", f"{fmt} is encoded at {allowed} Hz only", {}
            )
        return rate

    @field_validator("mix")
    @classmethod
    def _mix_needs_mix_mode(cls, mix: MixOptions | None, info: Any) -> MixOptions | None:
        if mix is not None and info.data.get("audio_mode") is not AudioMode.MIX:
            raise PydanticCustomError("mix_needs_mix_mode", "mix settings need audio_mode mix", {})
        return mix

    def stored(self) -> dict[str, Any]:
        """As kept on the job: every default filled in (what the job will be made with)."""
        options = self
        if self.audio_mode is AudioMode.MIX and self.mix is None:
            options = self.model_copy(update={"mix": MixOptions()})
        return options.model_dump(mode="json")

    def pcm(self) -> PcmFormat:
        return PcmFormat(rate=self.sample_rate, channels=self.channels)


class SoundtrackOut(BaseModel):
    """How the finished sound was made, when the job asked for output options."""

    audio_mode: AudioMode = Field(
        description="The mode applied (mix on a video without sound is replace)."
    )
    audio_format: AudioFormat = Field(description="The audio's codec.")
    sample_rate: int = Field(description="The audio's sample rate, in Hz.")
    channels: int = Field(description="The audio's channels.")
    measured_lufs: float | None = Field(
        description="The integrated loudness before normalization (LUFS); null when the "
        "loudness was left alone or the sound is silence."
    )
    gain_db: float | None = Field(description="The gain applied to reach the target, in dB.")
    expected_lufs: float | None = Field(description="The integrated loudness after, in LUFS.")
    expected_true_peak_dbtp: float | None = Field(
        description="The true peak after (dBTP), at most the target's ceiling."
    )
