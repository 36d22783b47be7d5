"""Model runners: the media work of each model, run in a worker thread (never on the loop).

A runner takes a `MediaContext` (validated input, the fetched video, a log callback) and returns
the model's output JSON, or raises `ModelError` for the model's own 422s (container, duration).
The audio itself comes from `emulator.synth`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from emulator.catalog import (
    ControlFoleyInput,
    HunyuanVideoFoleyInput,
    KlingVideoToAudioInput,
    MireloSfxInput,
    MMAudioV2Input,
    SoniloVideoToMusicInput,
    ThinkSoundInput,
)
from emulator.errors import ModelError
from emulator.storage import FileStore

if TYPE_CHECKING:
    from pydantic import BaseModel

SAMPLE_RATE = 44_100
KLING_CONTAINERS = ("mp4", "mov")
KLING_MIN_S, KLING_MAX_S = 3.0, 20.0
HUNYUAN_AUDIO_MAX_S = 15.0  # HunyuanVideo-Foley's audio stops there, whatever the video
CONTROLFOLEY_REFERENCE_S = (2.0, 4.0)
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
    audio_paths: dict[str, Path] = field(default_factory=dict)  # the audio inputs, fetched


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


def hunyuan_video_foley(ctx: MediaContext) -> dict[str, Any]:
    from emulator import synth

    inp = ctx.input
    assert isinstance(inp, HunyuanVideoFoleyInput)
    analysis = _analyze(ctx)
    ctx.log(f"Generating foley: {inp.num_inference_steps} steps, guidance {inp.guidance_scale}")
    pcm = synth.render_audio(
        analysis,
        prompt=inp.text_prompt,
        seed=inp.seed,
        sample_rate=SAMPLE_RATE,
        params={
            "negative_prompt": inp.negative_prompt,
            "num_inference_steps": inp.num_inference_steps,
            "guidance_scale": inp.guidance_scale,
        },
    )
    cut = round(HUNYUAN_AUDIO_MAX_S * SAMPLE_RATE)
    if pcm.shape[1] > cut:
        pcm[:, cut:] = 0.0
    out = ctx.work_dir / "hunyuan.mp4"
    synth.mux_audio_into_video(ctx.video_path, pcm, SAMPLE_RATE, out)
    return {"video": _store(ctx, out, "output.mp4", "video/mp4")}


def _audio_duration(path: Path, field_name: str, url: str | None) -> tuple[float, str]:
    """An audio input's length in seconds and a digest of its bytes (its "timbre")."""
    import hashlib

    import av

    try:
        with av.open(str(path)) as container:
            if not container.streams.audio:
                raise ValueError("no audio stream")
            stream = container.streams.audio[0]
            if stream.duration is not None and stream.time_base is not None:
                seconds = float(stream.duration * stream.time_base)
            elif container.duration is not None:
                seconds = container.duration / 1_000_000
            else:
                seconds = sum(float(f.samples) / f.sample_rate for f in container.decode(stream))
    except (av.error.FFmpegError, ValueError) as exc:
        raise ModelError(
            field_name,
            "The audio file could not be decoded. Please provide a valid audio file.",
            "unsupported_audio_format",
            url,
        ) from exc
    return seconds, hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def controlfoley(ctx: MediaContext) -> dict[str, Any]:
    from emulator import synth

    inp = ctx.input
    assert isinstance(inp, ControlFoleyInput)
    analysis = _analyze(ctx)
    timbre = None
    reference = ctx.audio_paths.get("reference_audio_url")
    if reference is not None:
        seconds, timbre = _audio_duration(reference, "reference_audio_url", inp.reference_audio_url)
        low, high = CONTROLFOLEY_REFERENCE_S
        if seconds < low - _DURATION_SLACK_S:
            raise ModelError(
                "reference_audio_url",
                f"Reference audio is too short ({seconds:.2f} s). "
                f"It must be between {low:g} and {high:g} seconds.",
                "audio_duration_too_short",
                inp.reference_audio_url,
            )
        if seconds > high + _DURATION_SLACK_S:
            raise ModelError(
                "reference_audio_url",
                f"Reference audio is too long ({seconds:.2f} s). "
                f"It must be between {low:g} and {high:g} seconds.",
                "audio_duration_too_long",
                inp.reference_audio_url,
            )
        ctx.log(f"Reference audio: {seconds:.2f} s")
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
            "reference": timbre,
        },
    )
    pcm = _fit(pcm, inp.duration)  # `duration` seconds, whatever the video's length (default 8)
    out = ctx.work_dir / "controlfoley.mp4"
    synth.mux_audio_into_video(ctx.video_path, pcm, SAMPLE_RATE, out)
    return {"video": _store(ctx, out, "output.mp4", "video/mp4")}


def _segment_error(offset: float, duration: float, video_s: float) -> ModelError:
    return ModelError(
        "duration",
        f"start_offset + duration ({offset + duration:.2f} s) must not exceed the video's "
        f"duration ({video_s:.2f} s).",
        "value_error",
        None,
    )


def mirelo_sfx(ctx: MediaContext) -> dict[str, Any]:
    from emulator import synth

    inp = ctx.input
    assert isinstance(inp, MireloSfxInput)
    analysis = _analyze(ctx)
    if inp.start_offset + inp.duration > analysis.duration_s + _DURATION_SLACK_S:
        raise _segment_error(inp.start_offset, inp.duration, analysis.duration_s)
    start = round(inp.start_offset * SAMPLE_RATE)
    files = []
    for index in range(inp.num_samples):
        ctx.log(f"Generating sample {index + 1} of {inp.num_samples}")
        pcm = synth.render_audio(
            analysis,
            prompt=inp.text_prompt or "",
            seed=inp.seed,
            sample_rate=SAMPLE_RATE,
            params={"sample": index},  # every sample its own take
        )
        pcm = _fit(pcm[:, start:], inp.duration)
        out = ctx.work_dir / f"mirelo-{index}.wav"
        synth.encode_audio(pcm, SAMPLE_RATE, out, "wav")
        files.append(_store(ctx, out, f"sample-{index}.wav", "audio/wav"))
    return {"audio": files}


def sonilo_video_to_music(ctx: MediaContext) -> dict[str, Any]:
    from emulator import synth
    from emulator.synth.voices import music_bed

    inp = ctx.input
    assert isinstance(inp, SoniloVideoToMusicInput)
    analysis = _analyze(ctx)
    offset = inp.start_offset or 0.0
    length = inp.duration if inp.duration is not None else analysis.duration_s - offset
    if length <= 0 or offset + length > analysis.duration_s + _DURATION_SLACK_S:
        raise _segment_error(offset, max(length, 0.0), analysis.duration_s)
    # What was scored is what fal bills (per second of output and per sample).
    inp.duration = round(length, 6)
    prompt = inp.prompt or f"score for {synth.describe_video(analysis)}"
    ctx.log(f"Scoring {length:.2f} s of music: {prompt!r}")
    start, n = round(offset * SAMPLE_RATE), round(length * SAMPLE_RATE)
    # The picture's accents under the bed, so the music moves with the cuts and hits.
    accents = synth.render_audio(analysis, prompt="impacts", sample_rate=SAMPLE_RATE)
    accents = _fit(accents[:, start:], length)
    files = []
    for index in range(inp.num_samples):
        pcm = music_bed(f"{prompt} #{index}", n, SAMPLE_RATE) + 0.15 * accents
        peak = float(np.max(np.abs(pcm))) or 1.0
        pcm = (pcm * (0.89 / peak)).astype(np.float32)
        out = ctx.work_dir / f"sonilo-{index}.m4a"
        synth.encode_audio(pcm, SAMPLE_RATE, out, "m4a")
        files.append(_store(ctx, out, f"music-{index}.m4a", "audio/mp4"))
    return {"audio": files[0], "audios": files}
