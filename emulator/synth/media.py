"""Write rendered PCM out as real media: muxed under the original video, or standalone."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Literal, cast

import av
import numpy as np

from emulator.synth.analysis import VideoDecodeError, primary_video_stream

AudioFormat = Literal["mp3", "m4a", "wav"]


@dataclass(frozen=True)
class _AudioSpec:
    container: str
    codec: str
    sample_format: str
    bit_rate: int | None
    options: Mapping[str, str] = field(default_factory=dict)


# Speed over the last bit of quality: this is an emulator. FFmpeg's "fast" AAC coder is ~3x
# quicker than the default two-loop search; LAME quality 7 ~1.5x quicker than its default.
_AAC_OPTIONS = {"aac_coder": "fast"}
_AAC = _AudioSpec("mp4", "aac", "fltp", 192_000, _AAC_OPTIONS)
_AUDIO_FORMATS: dict[str, _AudioSpec] = {
    "mp3": _AudioSpec("mp3", "libmp3lame", "fltp", 192_000, {"compression_level": "7"}),
    # "ipod" is FFmpeg's name for the .m4a flavour of MP4 (M4A brand, audio only).
    "m4a": _AudioSpec("ipod", "aac", "fltp", 192_000, _AAC_OPTIONS),
    "wav": _AudioSpec("wav", "pcm_s16le", "s16", None),
}


def encode_audio(pcm: np.ndarray, sample_rate: int, out: Path, fmt: AudioFormat) -> None:
    """Encode stereo float PCM (2, n) to an audio file: MP3, M4A (AAC) or 16-bit WAV.

    MP3 gets a LAME/Xing header with the encoder delay and padding, M4A an edit list, so
    decoders return exactly n samples (give or take the codec's documented rounding).
    """
    spec = _AUDIO_FORMATS[fmt]
    with _removed_on_error(Path(out)), av.open(str(out), mode="w", format=spec.container) as dst:
        stream = _add_audio_stream(dst, spec, sample_rate)
        for packet in _encode_pcm(stream, pcm, sample_rate):
            dst.mux(packet)


def mux_audio_into_video(video_in: Path, pcm: np.ndarray, sample_rate: int, out: Path) -> None:
    """Write an MP4 holding the input's first video stream and `pcm` as its only audio
    stream (AAC).

    The video packets are copied byte for byte (timestamps rescaled only). A codec MP4 cannot
    carry at all (VP8, Theora...) is re-encoded to H.264 instead, since fal always answers
    with an MP4. Input audio, subtitle and data streams are dropped. The video timeline is
    shifted to start at zero, where the audio starts.
    """
    with (
        _removed_on_error(Path(out)),
        av.open(str(video_in)) as src,
        av.open(
            str(out), mode="w", format="mp4", container_options={"movflags": "+faststart"}
        ) as dst,
    ):
        source = primary_video_stream(src)
        if source is None:
            raise VideoDecodeError(f"{video_in} has no video stream")
        start = source.start_time or 0
        try:
            # opaque=True reuses the decoder's codec object; the default looks up an encoder
            # by the decoder's name and fails for e.g. libdav1d even though MP4 carries AV1.
            video = dst.add_stream_from_template(source, opaque=True)
            packets = _copied_packets(src, source, video, start)
        except ValueError:
            video = _add_h264_stream(dst, source)
            packets = _transcoded_packets(src, source, video, start)
        audio = _add_audio_stream(dst, _AAC, sample_rate)
        pending = deque(_encode_pcm(audio, pcm, sample_rate))
        for packet in packets:
            moment = _seconds(packet.dts if packet.dts is not None else packet.pts, packet)
            # Interleave by time so players never buffer one stream waiting for the other.
            while pending and _seconds(pending[0].dts, pending[0]) <= moment:
                dst.mux(pending.popleft())
            dst.mux(packet)
        for packet in pending:
            dst.mux(packet)


def _copied_packets(
    src: av.container.InputContainer, source: av.VideoStream, video: av.VideoStream, start: int
) -> Iterator[av.Packet]:
    for packet in src.demux(source):
        # AVI and raw streams may carry decode times only; such inputs have no B-frames, so
        # presentation time equals decode time.
        pts = packet.pts if packet.pts is not None else packet.dts
        if pts is None:
            continue  # the demuxer's end-of-stream marker
        packet.pts = pts - start
        if packet.dts is not None:
            packet.dts -= start
        packet.stream = video
        yield packet


def _add_h264_stream(dst: av.container.OutputContainer, source: av.VideoStream) -> av.VideoStream:
    rate = source.average_rate or source.guessed_rate or Fraction(25)
    time_base = source.time_base or 1 / rate
    video = dst.add_stream("libx264", rate=rate)
    # yuv420p needs even dimensions; dropping one edge pixel beats failing.
    video.width = source.codec_context.width & ~1
    video.height = source.codec_context.height & ~1
    video.pix_fmt = "yuv420p"
    video.time_base = time_base
    video.codec_context.time_base = time_base
    video.options = {"preset": "veryfast", "crf": "20"}
    return video


def _transcoded_packets(
    src: av.container.InputContainer, source: av.VideoStream, video: av.VideoStream, start: int
) -> Iterator[av.Packet]:
    source.thread_type = "AUTO"
    for frame in src.decode(source):
        if frame.pts is None:
            continue
        picture = frame.reformat(width=video.width, height=video.height, format="yuv420p")
        picture.pts = frame.pts - start
        # The codec's time base, not the stream's: the MP4 muxer rewrites the latter.
        picture.time_base = video.codec_context.time_base
        yield from video.encode(picture)
    yield from video.encode(None)


def _add_audio_stream(
    dst: av.container.OutputContainer, spec: _AudioSpec, sample_rate: int
) -> av.AudioStream:
    stream = cast("av.AudioStream", dst.add_stream(spec.codec, rate=sample_rate))
    stream.layout = "stereo"
    stream.format = spec.sample_format
    if spec.bit_rate:
        stream.bit_rate = spec.bit_rate
    stream.codec_context.options = dict(spec.options)
    stream.time_base = Fraction(1, sample_rate)
    return stream


def _encode_pcm(stream: av.AudioStream, pcm: np.ndarray, sample_rate: int) -> Iterator[av.Packet]:
    if pcm.ndim != 2 or pcm.shape[0] != 2:
        raise ValueError(f"expected stereo PCM shaped (2, n), got {pcm.shape}")
    samples = np.ascontiguousarray(np.clip(pcm, -1.0, 1.0), dtype=np.float32)
    # Feed whole codec frames (AAC 1024, MP3 1152); only the last may be short.
    chunk = stream.codec_context.frame_size or 4096
    planar = stream.codec_context.format.is_planar
    for start in range(0, samples.shape[1], chunk):
        block = samples[:, start : start + chunk]
        if planar:
            frame = av.AudioFrame.from_ndarray(block, format=stream.format.name, layout="stereo")
        else:
            interleaved = block.T.reshape(1, -1)
            frame = av.AudioFrame.from_ndarray(
                np.rint(interleaved * 32767).astype(np.int16), format="s16", layout="stereo"
            )
        frame.sample_rate = sample_rate
        frame.pts = start
        frame.time_base = Fraction(1, sample_rate)
        yield from stream.encode(frame)
    yield from stream.encode(None)


def _seconds(timestamp: int | None, packet: av.Packet) -> float:
    if timestamp is None or packet.time_base is None:
        return 0.0
    return float(timestamp * packet.time_base)


@contextmanager
def _removed_on_error(path: Path) -> Iterator[None]:
    """Delete a half-written output if encoding fails, so no caller serves a broken file."""
    try:
        yield
    except BaseException:
        path.unlink(missing_ok=True)
        raise
