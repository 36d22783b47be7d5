"""Measure a media file with PyAV: container, duration, streams.

`probe()` is used on the gateway's outputs (video with audio, MP3, M4A) and, later, on untrusted
inputs before any upstream request is paid for, so it is

* **by content**: the container comes from the demuxer FFmpeg picked after sniffing the bytes,
  never from the file name;
* **fast**: it reads headers and lets FFmpeg look at the first packets; video is never decoded.
  Only a short audio-only file is decoded, because that is the one case where the header's
  duration can be an estimate (see `_audio_only_duration`);
* **whole**: a file with a video stream has every packet read (demuxed, not decoded), so a file
  cut short (an upload or download that stopped, a header written first that promises more
  than follows) is refused instead of being measured by its header and paid for (see
  `_check_whole`; ~0.5 ms per MiB from the page cache, bench/README.md);
* **contained**: only the demuxers in `SAFE_DEMUXERS` and the `file` protocol are allowed (no
  protocol at all for bytes in memory), so a playlist or concat script posing as a video cannot
  make FFmpeg open other files or URLs.

It is synchronous and CPU/IO bound: from async code call it through `asyncio.to_thread` (the
preflight probes small inputs already in memory in place: `app.jobs.preflight`).
"""

from __future__ import annotations

import io
import os
import re
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from fractions import Fraction
from pathlib import Path
from typing import Any, Self

import av
import av.container
import av.stream
from pydantic import BaseModel, ConfigDict, computed_field

from app.media.errors import MediaUnreadableError

# Demuxers probe() may use (FFmpeg's short names). Everything a video or audio upload or a model
# output plausibly is; notably absent are `hls`, `dash` and `concat` (they open further files or
# URLs named inside the input) and the image demuxers.
SAFE_DEMUXERS: frozenset[str] = frozenset(
    {
        "mov", "mp4", "m4a", "3gp", "3g2", "mj2",
        "matroska", "webm",
        "avi", "flv", "mpegts", "mpeg",
        "ogg", "mp3", "aac", "wav", "flac",
    }
)  # fmt: skip

# A video's packets may end this much before the duration its header declares (muxers round
# the last frame's duration), or two frame intervals if that is more; a wider gap means the
# file was cut short.
WHOLE_TOLERANCE_S = 0.1

# Audio-only files at most this long (by their header) are decoded to count their samples.
# Decoding an MP3 costs about 2 ms per second of audio, so this bounds the cost at ~0.25 s.
EXACT_AUDIO_MAX_S = 120.0

_ISO_BMFF_DEMUXER = "mov,mp4,m4a,3gp,3g2,mj2"
_MATROSKA_DEMUXER = "matroska,webm"
_DURATION_TAG = re.compile(r"^(\d+):(\d{2}):(\d{2}(?:\.\d+)?)$")
# A protocol whitelist no protocol matches: bytes in memory are read through PyAV's own I/O, and
# anything a demuxer would open besides (another file, a URL) is refused.
_NO_PROTOCOL = "none"

# What probe() reads: a file, or a small file's bytes already in memory (no temporary file).
Source = str | os.PathLike[str] | bytes


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (what goes into a JSONB column or an API response)."""
        return self.model_dump(mode="json")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Self:
        return cls.model_validate(data)


class VideoInfo(_Frozen):
    codec: str
    width: int
    height: int
    fps: float | None
    duration_s: float | None
    pix_fmt: str | None
    bit_rate: int | None = None


class AudioInfo(_Frozen):
    codec: str
    sample_rate: int
    channels: int
    channel_layout: str | None
    duration_s: float | None
    bit_rate: int | None = None


class MediaInfo(_Frozen):
    """What `probe()` measured.

    `container` is normalised from the demuxer FFmpeg chose by content:

    * the ISO-BMFF demuxer ("mov,mp4,m4a,3gp,3g2,mj2") is told apart by the `ftyp` major brand:
      `qt  ` (or no `ftyp` box at all, as in classic QuickTime files) → ``"mov"``, `3gp*` →
      ``"3gp"``, `3g2*` → ``"3g2"``, anything else (`isom`, `mp42`, `M4A ` …) → ``"mp4"``; an
      M4A file therefore reports ``"mp4"`` with `major_brand` ``"M4A "``;
    * the Matroska demuxer ("matroska,webm") by the EBML DocType: ``"webm"`` or ``"matroska"``;
    * any other demuxer by its first short name (``"mp3"``, ``"avi"``, ``"ogg"``, ``"wav"`` …).

    `format_name` is FFmpeg's raw demuxer name. `duration_s` is the primary stream's duration
    (the video stream's when there is one, else the audio stream's), falling back to the
    container's; stream durations are what a player shows and what model limits mean.
    """

    container: str
    format_name: str
    major_brand: str | None
    duration_s: float | None
    size_bytes: int
    bit_rate: int | None
    video: VideoInfo | None
    audio: AudioInfo | None

    @computed_field  # type: ignore[prop-decorator]
    @property
    def has_audio(self) -> bool:
        return self.audio is not None

    @computed_field  # type: ignore[prop-decorator]
    @property
    def has_video(self) -> bool:
        return self.video is not None


@contextmanager
def open_input(
    source: Source, *, demuxers: Iterable[str] = SAFE_DEMUXERS
) -> Iterator[av.container.InputContainer]:
    """Open a local media file (or its bytes) for reading, restricted to `demuxers` and the file
    protocol (bytes: no protocol).

    Raises `FileNotFoundError` for a missing file and `MediaUnreadableError` for anything FFmpeg
    cannot open (garbage, an empty file, a format outside `demuxers`).
    """
    options = {"format_whitelist": ",".join(sorted(demuxers))}
    target: str | io.BytesIO
    if isinstance(source, bytes):
        target = io.BytesIO(source)
        options["protocol_whitelist"] = _NO_PROTOCOL
    else:
        path = Path(source)
        if not path.is_file():
            raise FileNotFoundError(path)
        target = str(path)
        options["protocol_whitelist"] = "file"
    try:
        container = av.open(target, "r", options=options)
    except av.FFmpegError as exc:
        raise MediaUnreadableError(f"not a readable media file: {_reason(exc)}") from exc
    with container:
        yield container


def probe(
    source: Source,
    *,
    demuxers: Iterable[str] = SAFE_DEMUXERS,
    exact_audio_max_s: float = EXACT_AUDIO_MAX_S,
) -> MediaInfo:
    """Measure the media file at `source`, a path or the file's bytes (see the module docstring
    and `MediaInfo`).

    Raises `MediaUnreadableError` when FFmpeg cannot open the file or it has neither a video nor
    an audio stream, `FileNotFoundError` when there is no such file.
    """
    src = source if isinstance(source, bytes) else Path(source)
    with open_input(src, demuxers=demuxers) as container:
        return measure(container, src, exact_audio_max_s=exact_audio_max_s)


def measure(
    container: av.container.InputContainer,
    source: Path | bytes,
    *,
    exact_audio_max_s: float = EXACT_AUDIO_MAX_S,
    on_packet: Callable[[av.Packet], None] | None = None,
) -> MediaInfo:
    """``probe`` of a file already open (``source``: its path or bytes), which it reads to its
    end. ``on_packet`` sees every packet of a video's whole-file read, once checked (the
    caller may copy them elsewhere: one read of the file instead of two); an audio-only file
    is read without it."""
    try:
        return _measure(container, source, exact_audio_max_s, on_packet)
    except av.FFmpegError as exc:
        raise MediaUnreadableError(f"cannot read media streams: {_reason(exc)}") from exc


def _reason(exc: av.FFmpegError) -> str:
    """FFmpeg's reason without the file name it appends: the name is a storage path (with the
    tenant's id in it), and the message reaches the tenant."""
    return str(exc.strerror or type(exc).__name__)


def _measure(
    container: av.container.InputContainer,
    source: Path | bytes,
    exact_audio_max_s: float,
    on_packet: Callable[[av.Packet], None] | None = None,
) -> MediaInfo:
    video_stream = primary_stream(container, "video")
    audio_stream = primary_stream(container, "audio")
    if video_stream is None and audio_stream is None:
        raise MediaUnreadableError("the file has no video or audio stream")

    format_name = container.format.name
    major_brand = (
        container.metadata.get("major_brand") if format_name == _ISO_BMFF_DEMUXER else None
    )
    container_duration = (
        container.duration / av.time_base if container.duration and container.duration > 0 else None
    )

    video = _video_info(video_stream, container_duration) if video_stream else None
    if video_stream is not None and video is not None:
        _check_whole(container, video_stream, video, on_packet)
    audio = None
    if audio_stream is not None:
        if video_stream is None:
            duration = _audio_only_duration(
                container, audio_stream, container_duration, exact_audio_max_s
            )
        else:
            duration = _stream_duration(audio_stream) or container_duration
        audio = _audio_info(audio_stream, duration)

    primary = video or audio
    duration_s = primary.duration_s if primary and primary.duration_s else container_duration
    return MediaInfo(
        container=_container_name(format_name, major_brand, source),
        format_name=format_name,
        major_brand=major_brand,
        duration_s=_round(duration_s),
        size_bytes=len(source) if isinstance(source, bytes) else source.stat().st_size,
        bit_rate=container.bit_rate or None,
        video=video,
        audio=audio,
    )


def _check_whole(
    container: av.container.InputContainer,
    stream: Any,
    video: VideoInfo,
    on_packet: Callable[[av.Packet], None] | None = None,
) -> None:
    """Read every packet of the file (without decoding) and refuse it when one cannot be read
    whole or the video's packets end short of the duration the header declares.

    A header-first MP4 cut anywhere after its index still opens and reports its full length;
    only reading the packets shows they are missing (FFmpeg flags the one cut in half as
    corrupt and then reaches the end of the file)."""
    end = 0
    for packet in container.demux():
        if packet.is_corrupt:
            raise MediaUnreadableError("the file is damaged or cut short (a corrupt packet)")
        if packet.stream_index == stream.index and packet.pts is not None:
            end = max(end, packet.pts + (packet.duration or 0))
        if on_packet is not None:
            on_packet(packet)
    if video.duration_s is None or stream.time_base is None:
        return
    start = stream.start_time or 0
    measured = float((end - start) * stream.time_base)
    frame = 1 / video.fps if video.fps else 0.0
    if measured < video.duration_s - max(WHOLE_TOLERANCE_S, 2 * frame):
        raise MediaUnreadableError(
            f"the file is cut short: its video ends at {measured:.2f} s of the "
            f"{video.duration_s:.2f} s its header declares"
        )


def primary_stream(container: av.container.InputContainer, kind: str) -> Any:
    """The first `kind` ("video" or "audio") stream that is real media, or `None`."""
    for stream in container.streams:
        if stream.type != kind:
            continue
        # Cover art in an MP3 or M4A is a one-frame "video" stream; it is not video.
        if stream.disposition & av.stream.Disposition.attached_pic:
            continue
        return stream
    return None


def _video_info(stream: Any, container_duration: float | None) -> VideoInfo:
    ctx = stream.codec_context
    rate: Fraction | None = stream.average_rate or stream.guessed_rate or stream.base_rate
    fps = float(rate) if rate else None
    duration = _stream_duration(stream)
    if duration is None and stream.frames and fps:
        duration = stream.frames / fps
    if duration is None:
        duration = container_duration
    return VideoInfo(
        codec=_codec_name(stream),
        width=ctx.width,
        height=ctx.height,
        fps=_round(fps),
        duration_s=_round(duration),
        pix_fmt=ctx.pix_fmt,
        bit_rate=ctx.bit_rate or None,
    )


def _audio_info(stream: Any, duration: float | None) -> AudioInfo:
    ctx = stream.codec_context
    layout = ctx.layout.name if ctx.channels else None
    return AudioInfo(
        codec=_codec_name(stream),
        sample_rate=ctx.sample_rate,
        channels=ctx.channels,
        channel_layout=layout or None,
        duration_s=_round(duration),
        bit_rate=ctx.bit_rate or None,
    )


def _audio_only_duration(
    container: av.container.InputContainer,
    stream: Any,
    container_duration: float | None,
    exact_audio_max_s: float,
) -> float | None:
    """The duration of an audio-only file.

    In ISO-BMFF (M4A) the edit list gives the exact playable length, while decoding would count
    the encoder's padding too (an AAC encoder's last frame is padded to 1024 samples), so the
    header wins there. Elsewhere (MP3, ADTS, WAV, Ogg …) the header may be an estimate from the
    bit rate, e.g. for an MP3 without a Xing/LAME frame, so a short file is decoded and its
    samples counted; gapless (encoder delay/padding) info is applied by the decoder.
    """
    header = _stream_duration(stream) or container_duration
    if container.format.name == _ISO_BMFF_DEMUXER or header is None:
        return header
    if header > exact_audio_max_s or not stream.codec_context.sample_rate:
        return header
    samples = 0
    try:
        for frame in container.decode(stream):
            samples += frame.samples
    except av.FFmpegError:
        # A damaged tail should not make a playable file unmeasurable.
        return header
    return samples / stream.codec_context.sample_rate if samples else header


def _stream_duration(stream: Any) -> float | None:
    if stream.duration is not None and stream.duration > 0 and stream.time_base:
        return float(stream.duration * stream.time_base)
    # Matroska/WebM keep per-stream durations in a DURATION tag (written by every muxer we know).
    for key, value in stream.metadata.items():
        if key.upper().startswith("DURATION"):
            match = _DURATION_TAG.match(value.strip())
            if match:
                hours, minutes, seconds = match.groups()
                return int(hours) * 3600 + int(minutes) * 60 + float(seconds)
    return None


def _codec_name(stream: Any) -> str:
    # The codec's canonical name ("mp3"), not the decoder's ("mp3float").
    codec = stream.codec_context.codec
    return str(getattr(codec, "canonical_name", None) or stream.codec_context.name)


def _container_name(format_name: str, major_brand: str | None, source: Path | bytes) -> str:
    if format_name == _ISO_BMFF_DEMUXER:
        if major_brand is None or major_brand == "qt  ":
            return "mov"
        if major_brand.startswith("3gp"):
            return "3gp"
        if major_brand.startswith("3g2"):
            return "3g2"
        return "mp4"
    if format_name == _MATROSKA_DEMUXER:
        return _ebml_doctype(source) or "matroska"
    return format_name.split(",", 1)[0]


def _ebml_doctype(source: Path | bytes) -> str | None:
    """The DocType ("webm" or "matroska") from a Matroska file's EBML header.

    FFmpeg does not export it; the header is the first few dozen bytes of the file.
    """
    if isinstance(source, bytes):
        data = source[:256]
    else:
        with source.open("rb") as f:
            data = f.read(256)
    if data[:4] != b"\x1a\x45\xdf\xa3":
        return None
    pos = 4
    header_size, pos = _read_vint(data, pos)
    end = min(len(data), pos + header_size) if header_size is not None else len(data)
    while pos < end:
        element_id, pos = _read_element_id(data, pos)
        size, pos = _read_vint(data, pos)
        if element_id is None or size is None or pos + size > len(data):
            return None
        if element_id == 0x4282:
            doctype = data[pos : pos + size].rstrip(b"\x00").decode("ascii", "replace")
            return doctype if doctype in ("webm", "matroska") else None
        pos += size
    return None


def _vint_length(first: int) -> int:
    for length in range(1, 9):
        if first & (0x80 >> (length - 1)):
            return length
    return 0


def _read_element_id(data: bytes, pos: int) -> tuple[int | None, int]:
    if pos >= len(data):
        return None, pos
    length = _vint_length(data[pos])
    if not length or length > 4 or pos + length > len(data):
        return None, pos
    return int.from_bytes(data[pos : pos + length], "big"), pos + length


def _read_vint(data: bytes, pos: int) -> tuple[int | None, int]:
    if pos >= len(data):
        return None, pos
    length = _vint_length(data[pos])
    if not length or pos + length > len(data):
        return None, pos
    value = data[pos] & (0xFF >> length)
    for byte in data[pos + 1 : pos + length]:
        value = (value << 8) | byte
    return value, pos + length


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 6)
