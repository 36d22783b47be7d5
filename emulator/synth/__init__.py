"""Procedural foley for the fal emulator: analyse a video, render audio that follows it,
and write real media. Deterministic, no model weights."""

from emulator.synth.analysis import VideoAnalysis, VideoDecodeError, analyze_video, describe_video
from emulator.synth.media import AudioFormat, encode_audio, mux_audio_into_video
from emulator.synth.render import preset_for_prompt, render_audio

__all__ = [
    "AudioFormat",
    "VideoAnalysis",
    "VideoDecodeError",
    "analyze_video",
    "describe_video",
    "encode_audio",
    "mux_audio_into_video",
    "preset_for_prompt",
    "render_audio",
]
