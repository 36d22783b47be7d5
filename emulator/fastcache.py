"""Fast mode's cached outputs, written once at start without the audio engine.

In fast mode a request does no media work (no download, no analysis, no rendering): it answers
with these files. They are real, decodable media (a 4 s clip of a bouncing square with a click
on every bounce), written directly with PyAV so that fast mode starts in well under a second and
never imports the audio engine. Only ThinkSound's `prompt` and the number of files of a model
making several (`num_samples`) follow the request.
"""

from __future__ import annotations

import wave
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np

from emulator.catalog import MireloSfxInput, SoniloVideoToMusicInput, ThinkSoundInput
from emulator.storage import FileStore, StoredFile

SAMPLE_RATE = 44_100
DESCRIPTION = "Rhythmic impacts of a small object bouncing in a dark room."
_W, _H, _FPS, _SECONDS = 96, 64, 12, 4.0
_BOUNCE_S = 0.5


def _pcm() -> np.ndarray:
    """Stereo float PCM: a quiet bed and a decaying click on every bounce."""
    n = int(_SECONDS * SAMPLE_RATE)
    rng = np.random.default_rng(7)
    mono = rng.normal(0, 0.01, n).astype(np.float32)
    click = np.exp(-np.arange(int(0.08 * SAMPLE_RATE)) / (0.015 * SAMPLE_RATE))
    click = (click * np.sin(2 * np.pi * 110 * np.arange(click.size) / SAMPLE_RATE)).astype(
        np.float32
    )
    for t in np.arange(_BOUNCE_S, _SECONDS, 2 * _BOUNCE_S):
        start = int(t * SAMPLE_RATE)
        end = min(start + click.size, n)
        mono[start:end] += 0.8 * click[: end - start]
    return np.stack([mono, mono])


def _frames() -> list[np.ndarray]:
    frames = []
    for index in range(int(_FPS * _SECONDS)):
        t = index / _FPS
        phase = (t % (2 * _BOUNCE_S)) / (2 * _BOUNCE_S)
        y = int((1 - abs(1 - 2 * phase)) * (_H - 16))
        x = int(t / _SECONDS * (_W - 16))
        rgb = np.full((_H, _W, 3), 24, dtype=np.uint8)
        rgb[y : y + 16, x : x + 16] = 230
        frames.append(rgb)
    return frames


def _encode_audio(container: Any, stream: Any, pcm: np.ndarray) -> None:
    frame_size = stream.codec_context.frame_size or 1152
    for start in range(0, pcm.shape[1], frame_size):
        chunk = np.ascontiguousarray(pcm[:, start : start + frame_size])
        frame = av.AudioFrame.from_ndarray(chunk, format="fltp", layout="stereo")
        frame.sample_rate = SAMPLE_RATE
        frame.pts = start
        for packet in stream.encode(frame):
            container.mux(packet)
    for packet in stream.encode():
        container.mux(packet)


def _write_mp4(path: Path, pcm: np.ndarray) -> None:
    with av.open(str(path), "w", format="mp4") as container:
        video = container.add_stream("libx264", rate=_FPS)
        video.width, video.height, video.pix_fmt = _W, _H, "yuv420p"
        video.codec_context.time_base = Fraction(1, _FPS)
        audio = container.add_stream("aac", rate=SAMPLE_RATE, layout="stereo")
        for index, rgb in enumerate(_frames()):
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            frame.pts = index
            for packet in video.encode(frame):
                container.mux(packet)
        for packet in video.encode():
            container.mux(packet)
        _encode_audio(container, audio, pcm)


def _write_mp3(path: Path, pcm: np.ndarray) -> None:
    with av.open(str(path), "w", format="mp3") as container:
        stream = container.add_stream("libmp3lame", rate=SAMPLE_RATE, layout="stereo")
        _encode_audio(container, stream, pcm)


def _write_wav(path: Path, pcm: np.ndarray) -> None:
    pcm16 = (np.clip(pcm.T, -1, 1) * 32767).astype("<i2")
    with wave.open(str(path), "wb") as handle:
        handle.setnchannels(2)
        handle.setsampwidth(2)
        handle.setframerate(SAMPLE_RATE)
        handle.writeframes(pcm16.tobytes())


class FastCache:
    def __init__(self, outputs: dict[str, dict[str, Any]]) -> None:
        self.outputs = outputs
        self.description = DESCRIPTION

    @classmethod
    def build(cls, store: FileStore, work_dir: Path) -> FastCache:
        work_dir.mkdir(parents=True, exist_ok=True)
        pcm = _pcm()
        written: dict[str, StoredFile] = {}
        for name, writer, content_type in (
            ("output.mp4", _write_mp4, "video/mp4"),
            ("output.mp3", _write_mp3, "audio/mpeg"),
            ("output.wav", _write_wav, "audio/wav"),
        ):
            path = work_dir / name
            writer(path, pcm)
            written[name] = store.save_path(path, name, content_type, bucket="fast")
        video = written["output.mp4"].as_fal_file()
        return cls(
            {
                "fal-ai/thinksound": {"video": video, "prompt": DESCRIPTION},
                "fal-ai/thinksound/audio": {
                    "audio": written["output.wav"].as_fal_file(),
                    "prompt": DESCRIPTION,
                },
                "fal-ai/kling-video/video-to-audio": {
                    "video": video,
                    "audio": written["output.mp3"].as_fal_file(),
                },
                "fal-ai/mmaudio-v2": {"video": video},
                "fal-ai/hunyuan-video-foley": {"video": video},
                "fal-ai/controlfoley": {"video": video},
                "mirelo-ai/sfx-v1.5/video-to-audio": {"audio": written["output.wav"].as_fal_file()},
                "sonilo/v1.1/video-to-music": {"audio": written["output.wav"].as_fal_file()},
            }
        )

    def output_for(self, endpoint_id: str, inp: Any) -> dict[str, Any]:
        output = self.outputs[endpoint_id]
        if isinstance(inp, ThinkSoundInput) and inp.prompt.strip():
            return {**output, "prompt": inp.prompt}
        if isinstance(inp, MireloSfxInput):  # one file per sample
            return {"audio": [output["audio"]] * inp.num_samples}
        if isinstance(inp, SoniloVideoToMusicInput):
            return {"audio": output["audio"], "audios": [output["audio"]] * inp.num_samples}
        return output
