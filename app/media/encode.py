"""Encode a soundtrack's blocks: as an audio file, or muxed onto a video whose stream is copied.

Formats (PyAV 18's FFmpeg build has every encoder below; checked with `av.codec.Codec(name,
"w")`: `aac` is FFmpeg's native encoder, `libmp3lame`, `flac` and `pcm_s16le` are there, and
Opus is `libopus` (the name "opus" resolves to it too); there is no libfdk_aac and no Vorbis):

| format | codec | audio file | in a video | rates |
| --- | --- | --- | --- | --- |
| aac  | aac, 96 kbps per channel | .m4a (MP4 audio) | MP4 | all `SAMPLE_RATES` |
| mp3  | libmp3lame, 128 kbps per channel | .mp3 | MP4 | all |
| wav  | pcm_s16le | .wav | MOV (PCM in MP4 plays almost nowhere) | all |
| flac | flac, 16 bit | .flac | MP4 | all |
| opus | libopus, 64 kbps per channel | .opus (Ogg) | MP4 | 48 kHz only |

Opus is refused at other rates: libopus takes 8/12/16/24 kHz too, but an Opus stream always
decodes at 48 kHz (the rate in its header is only informative), so the file would not have the
rate the job asked for.

Lossy encoders round peaks up a little (the decoded waveform is not the input's), so lossy formats
get `LOSSY_HEADROOM_DB` more room under the true-peak ceiling (see `headroom_for`).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from enum import StrEnum
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import av.container
import numpy as np

from app.media.errors import MediaError
from app.media.pcm import SAMPLE_RATES, PcmFormat
from app.media.probe import open_input, primary_stream

# Room under the true-peak ceiling. Lossy: decoded AAC / MP3 / Opus peak higher than what went
# in: on hits limited to -2.2 dBTP, AAC and Opus decoded at up to -1.46 dBTP, MP3 -1.94
# (tests/media/test_loudness.py's signals). PCM: the oversampler reads sharp hits a little low
# (see app.media.loudness): -1.6 planned came out at -1.54 by scipy's resampler.
LOSSY_HEADROOM_DB = 1.2
PCM_HEADROOM_DB = 0.6
# Audio is encoded ahead of the copied video by at most this much, so the muxer interleaves
# without buffering the video.
_AUDIO_LEAD_S = 0.5


class AudioFormat(StrEnum):
    AAC = "aac"
    MP3 = "mp3"
    WAV = "wav"
    FLAC = "flac"
    OPUS = "opus"


@dataclass(frozen=True)
class _Spec:
    codec: str
    muxer: str  # for the audio file alone
    suffix: str
    sample_format: str
    bit_rate_per_channel: int | None
    rates: tuple[int, ...] = SAMPLE_RATES
    video_muxer: str = "mp4"
    video_suffix: str = ".mp4"

    @property
    def lossy(self) -> bool:
        return self.bit_rate_per_channel is not None


SPECS: dict[AudioFormat, _Spec] = {
    AudioFormat.AAC: _Spec("aac", "ipod", ".m4a", "fltp", 96_000),
    AudioFormat.MP3: _Spec("libmp3lame", "mp3", ".mp3", "fltp", 128_000),
    AudioFormat.WAV: _Spec("pcm_s16le", "wav", ".wav", "s16", None, video_muxer="mov",
                           video_suffix=".mov"),
    AudioFormat.FLAC: _Spec("flac", "flac", ".flac", "s16", None),
    AudioFormat.OPUS: _Spec("libopus", "ogg", ".opus", "flt", 64_000, rates=(48_000,)),
}  # fmt: skip


def check_format(fmt: AudioFormat, pcm: PcmFormat) -> None:
    """Raise ValueError when `fmt` cannot be encoded at `pcm`'s sample rate."""
    rates = SPECS[fmt].rates
    if pcm.rate not in rates:
        raise ValueError(f"{fmt} encodes at {', '.join(str(r) for r in rates)} Hz, not {pcm.rate}")


def headroom_for(fmt: AudioFormat) -> float:
    return LOSSY_HEADROOM_DB if SPECS[fmt].lossy else PCM_HEADROOM_DB


def file_suffix(fmt: AudioFormat, *, with_video: bool) -> str:
    """The file name suffix for an output: e.g. `.m4a` alone, `.mp4` with the video."""
    spec = SPECS[fmt]
    return spec.video_suffix if with_video else spec.suffix


class _Encoder:
    """One audio stream of `container`, fed float32 blocks in order."""

    def __init__(
        self, container: av.container.OutputContainer, fmt: AudioFormat, pcm: PcmFormat
    ) -> None:
        check_format(fmt, pcm)
        spec = SPECS[fmt]
        self.pcm = pcm
        stream: Any = container.add_stream(spec.codec, rate=pcm.rate, layout=pcm.layout)
        stream.format = spec.sample_format
        if spec.bit_rate_per_channel:
            stream.codec_context.bit_rate = spec.bit_rate_per_channel * pcm.channels
        stream.time_base = Fraction(1, pcm.rate)
        self.stream = stream
        # PCM and FLAC take frames of any size (0): 4096 is FLAC's usual block.
        frame_size = stream.codec_context.frame_size or 4096
        self._resampler = av.AudioResampler(
            format=spec.sample_format, layout=pcm.layout, rate=pcm.rate, frame_size=frame_size
        )
        self.frames = 0

    @property
    def time_s(self) -> float:
        return self.frames / self.pcm.rate

    def encode(self, block: np.ndarray | None) -> list[av.Packet]:
        """Packets for `block` (None: the rest, then the encoder's flush)."""
        frame = None
        if block is not None:
            frame = av.AudioFrame.from_ndarray(
                np.ascontiguousarray(block, dtype=np.float32), format="fltp", layout=self.pcm.layout
            )
            frame.sample_rate = self.pcm.rate
            frame.time_base = Fraction(1, self.pcm.rate)
            frame.pts = self.frames
            self.frames += block.shape[1]
        packets: list[av.Packet] = []
        for chunk in self._resampler.resample(frame):
            packets.extend(self.stream.encode(chunk))
        if block is None:
            packets.extend(self.stream.encode(None))
        return packets


def write_audio_file(
    blocks: Iterable[np.ndarray],
    out_path: str | os.PathLike[str],
    *,
    fmt: AudioFormat,
    pcm: PcmFormat,
) -> None:
    """Encode `blocks` into an audio file of format `fmt` at `out_path` (written beside it and
    renamed: only ever complete)."""
    spec = SPECS[fmt]
    with replaced_path(Path(out_path)) as tmp:
        with av.open(str(tmp), "w", format=spec.muxer) as target:
            encoder = _Encoder(target, fmt, pcm)
            for block in blocks:
                target.mux(encoder.encode(block))
            target.mux(encoder.encode(None))


def mux_onto_video(
    video_path: str | os.PathLike[str],
    blocks: Iterable[np.ndarray],
    out_path: str | os.PathLike[str],
    *,
    fmt: AudioFormat,
    pcm: PcmFormat,
) -> None:
    """Write the first video stream of `video_path` packet for packet (timestamps moved so it
    starts at 0, as `fit_audio_to_video` does) with `blocks` encoded as its only audio, starting
    at the video's first instant. The muxer is MP4 (MOV for wav), with the index first."""
    spec = SPECS[fmt]
    pending: Iterator[np.ndarray] = iter(blocks)
    options = {"movflags": "+faststart"}
    with replaced_path(Path(out_path)) as tmp, open_input(video_path) as source:
        video_in = primary_stream(source, "video")
        if video_in is None:
            raise MediaError("the file has no video stream to put the sound on")
        with av.open(str(tmp), "w", format=spec.video_muxer, options=options) as target:
            try:
                video_out = target.add_stream_from_template(video_in)
            except ValueError as exc:  # PyAV: the muxer cannot carry this codec
                raise MediaError(f"the video stream cannot be copied: {exc}") from exc
            encoder = _Encoder(target, fmt, pcm)
            shift = video_in.start_time or 0
            for packet in source.demux(video_in):
                if packet.size == 0:  # the demuxer's end-of-stream marker
                    continue
                if packet.dts is not None:
                    at = float((packet.dts - shift) * video_in.time_base)
                    # Audio up to a little past this packet first: the file stays interleaved.
                    while encoder.time_s < at + _AUDIO_LEAD_S:
                        block = next(pending, None)
                        if block is None:
                            break
                        target.mux(encoder.encode(block))
                packet.pts = None if packet.pts is None else packet.pts - shift
                packet.dts = None if packet.dts is None else packet.dts - shift
                packet.stream = video_out
                target.mux(packet)
            for block in pending:
                target.mux(encoder.encode(block))
            target.mux(encoder.encode(None))


class replaced_path:
    """A temporary path beside `path`, renamed to it when the block succeeds, removed always."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")

    def __enter__(self) -> Path:
        return self.tmp

    def __exit__(self, kind: type[BaseException] | None, *rest: object) -> None:
        try:
            if kind is None:
                os.replace(self.tmp, self.path)
        finally:
            self.tmp.unlink(missing_ok=True)


def copy_audio_track(
    source_path: str | os.PathLike[str], out_path: str | os.PathLike[str], *, fmt: AudioFormat
) -> None:
    """The first audio stream of `source_path` (a video `mux_onto_video` wrote in `fmt`) as an
    audio file of its own, packet for packet: the audio alone, without encoding it again."""
    spec = SPECS[fmt]
    with replaced_path(Path(out_path)) as tmp, open_input(source_path) as source:
        audio_in = primary_stream(source, "audio")
        if audio_in is None:
            raise MediaError("the file has no audio stream to copy")
        with av.open(str(tmp), "w", format=spec.muxer) as target:
            audio_out = target.add_stream_from_template(audio_in)
            for packet in source.demux(audio_in):
                if packet.size == 0:  # the demuxer's end-of-stream marker
                    continue
                packet.stream = audio_out
                target.mux(packet)
