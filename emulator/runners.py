"""Model runners: the media work of each model, run in a worker thread (never on the loop).

A runner takes a `MediaContext` (validated input, the fetched video, a log callback) and returns
the model's output JSON, or raises `ModelError` for the model's own 422s (container, duration).
The audio itself comes from `emulator.synth`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from emulator.catalog import KlingVideoToAudioInput, MMAudioV2Input, ThinkSoundInput
from emulator.errors import ModelError
from emulator.storage import FileStore

if TYPE_CHECKING:
    from pydantic import BaseModel

SAMPLE_RATE = 44_100
KLING_CONTAINERS = ("mp4", "mov")
KLING_MIN_S, KLING_MAX_S = 3.0, 20.0
_DURATION_SLACK_S = 1e-3  # container timestamps round; do not reject a 3.000 s clip as 2.9995


@dataclass
class MediaContext:
    request_id: str
    input: BaseModel
    video_path: Path
    work_dir: Path
    store: FileStore
    log: Callable[[str], None]
    thinksound_shortfall_s: float = 0.0


def _analyze(ctx: MediaContext) -> Any:
    from emulator import synth

    try:
        analysis = synth.analyze_video(ctx.video_path)
    except synth.VideoDecodeError as exc:
        raise ModelError(
            "video_url",
            "The video file could not be decoded. Please provide a valid video.",
            "unsupported_video_format",
            getattr(ctx.input, "video_url", None),
        ) from exc
    ctx.log(
        f"Input video: {analysis.duration_s:.2f} s, {analysis.width}x{analysis.height} "
        f"@ {analysis.fps:.2f} fps ({analysis.container})"
    )
    return analysis


def _store(ctx: MediaContext, path: Path, name: str, content_type: str) -> dict[str, Any]:
    return ctx.store.save_path(path, name, content_type).as_fal_file()


def _shorten(pcm: np.ndarray, seconds: float) -> np.ndarray:
    cut = round(seconds * SAMPLE_RATE)
    if cut <= 0:
        return pcm
    keep = max(pcm.shape[1] - cut, SAMPLE_RATE // 10)
    return pcm[:, :keep]


def _fit(pcm: np.ndarray, seconds: float) -> np.ndarray:
    target = round(seconds * SAMPLE_RATE)
    if pcm.shape[1] >= target:
        return pcm[:, :target]
    return np.pad(pcm, ((0, 0), (0, target - pcm.shape[1])))


def _thinksound_audio(ctx: MediaContext) -> tuple[Any, np.ndarray, str]:
    from emulator import synth

    inp = ctx.input
    assert isinstance(inp, ThinkSoundInput)
    analysis = _analyze(ctx)
    prompt = inp.prompt if inp.prompt.strip() else synth.describe_video(analysis)
    if not inp.prompt.strip():
        ctx.log(f"No prompt given; extracted from the video: {prompt!r}")
    ctx.log(f"Generating audio: {inp.num_inference_steps} steps, cfg {inp.cfg_scale}")
    pcm = synth.render_audio(
        analysis,
        prompt=prompt,
        seed=inp.seed,
        sample_rate=SAMPLE_RATE,
        params={"num_inference_steps": inp.num_inference_steps, "cfg_scale": inp.cfg_scale},
    )
    return analysis, _shorten(pcm, ctx.thinksound_shortfall_s), prompt


def thinksound(ctx: MediaContext) -> dict[str, Any]:
    from emulator import synth

    _, pcm, prompt = _thinksound_audio(ctx)
    out = ctx.work_dir / "thinksound.mp4"
    synth.mux_audio_into_video(ctx.video_path, pcm, SAMPLE_RATE, out)
    ctx.log("Muxed the generated audio into the video")
    return {"video": _store(ctx, out, "output.mp4", "video/mp4"), "prompt": prompt}


def thinksound_audio(ctx: MediaContext) -> dict[str, Any]:
    from emulator import synth

    _, pcm, prompt = _thinksound_audio(ctx)
    out = ctx.work_dir / "thinksound.wav"
    synth.encode_audio(pcm, SAMPLE_RATE, out, "wav")
    return {"audio": _store(ctx, out, "output.wav", "audio/wav"), "prompt": prompt}


def kling_video_to_audio(ctx: MediaContext) -> dict[str, Any]:
    from emulator import synth

    inp = ctx.input
    assert isinstance(inp, KlingVideoToAudioInput)
    analysis = _analyze(ctx)
    if analysis.container not in KLING_CONTAINERS:
        raise ModelError(
            "video_url",
            f"Unsupported video format '{analysis.container}'. Supported formats: mp4, mov.",
            "unsupported_video_format",
            inp.video_url,
        )
    if analysis.duration_s < KLING_MIN_S - _DURATION_SLACK_S:
        raise ModelError(
            "video_url",
            f"Video duration is too short ({analysis.duration_s:.2f} s). "
            f"Minimum duration is {KLING_MIN_S} seconds.",
            "video_duration_too_short",
            inp.video_url,
        )
    if analysis.duration_s > KLING_MAX_S + _DURATION_SLACK_S:
        raise ModelError(
            "video_url",
            f"Video duration is too long ({analysis.duration_s:.2f} s). "
            f"Maximum duration is {KLING_MAX_S} seconds.",
            "video_duration_too_long",
            inp.video_url,
        )
    ctx.log(f"Sound effect prompt: {inp.sound_effect_prompt!r}")
    ctx.log(f"Background music prompt: {inp.background_music_prompt!r}")
    pcm = synth.render_audio(
        analysis,
        prompt=inp.sound_effect_prompt,
        music_prompt=inp.background_music_prompt,
        asmr=inp.asmr_mode,
        sample_rate=SAMPLE_RATE,
    )
    video = ctx.work_dir / "kling.mp4"
    audio = ctx.work_dir / "kling.mp3"
    synth.mux_audio_into_video(ctx.video_path, pcm, SAMPLE_RATE, video)
    synth.encode_audio(pcm, SAMPLE_RATE, audio, "mp3")
    return {
        "video": _store(ctx, video, "output.mp4", "video/mp4"),
        "audio": _store(ctx, audio, "output.mp3", "audio/mpeg"),
    }


def mmaudio_v2(ctx: MediaContext) -> dict[str, Any]:
    from emulator import synth

    inp = ctx.input
    assert isinstance(inp, MMAudioV2Input)
    analysis = _analyze(ctx)
    ctx.log(f"Generating {inp.duration:g} s of audio: {inp.num_steps} steps")
    pcm = synth.render_audio(
        analysis,
        prompt=inp.prompt,
        seed=inp.seed,
        sample_rate=SAMPLE_RATE,
        params={
            "negative_prompt": inp.negative_prompt,
            "num_steps": inp.num_steps,
            "cfg_strength": inp.cfg_strength,
            "mask_away_clip": inp.mask_away_clip,
        },
    )
    # MMAudio generates `duration` seconds whatever the video's length (default 8).
    pcm = _fit(pcm, inp.duration)
    out = ctx.work_dir / "mmaudio.mp4"
    synth.mux_audio_into_video(ctx.video_path, pcm, SAMPLE_RATE, out)
    return {"video": _store(ctx, out, "output.mp4", "video/mp4")}
