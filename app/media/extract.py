"""Take the audio out of a video without re-encoding it."""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import av
import av.container

from app.media.errors import AudioCopyError, NoAudioStreamError
from app.media.normalize import FitResult, fit_opened
from app.media.probe import MediaInfo, measure, open_input, primary_stream, probe

# What FFmpeg's "ipod" muxer (the .m4a flavour of MP4) accepts; anything else would need a
# re-encode, which extract_audio() never does.
M4A_AUDIO_CODECS: frozenset[str] = frozenset({"aac", "alac"})


def extract_audio(
    video_path: str | os.PathLike[str], out_path: str | os.PathLike[str]
) -> MediaInfo:
    """Copy the first audio stream of `video_path` into an M4A file at `out_path`.

    The packets are remuxed untouched (stream copy): no decode, no re-encode, so the audio is
    bit-identical to what the model produced, and the MP4 edit list that hides the AAC priming
    samples is carried over. The file appears at `out_path` only when complete (written beside it,
    then renamed). Returns the probe of the new file.

    Raises `NoAudioStreamError` when the input has no audio, `AudioCopyError` when its codec
    cannot live in an M4A (e.g. Opus or MP3), `MediaUnreadableError` for an unreadable input.
    It is synchronous: from async code call it through `asyncio.to_thread`.
    """
    out_path = Path(out_path)
    tmp_path = out_path.with_name(f".{out_path.name}.{uuid.uuid4().hex}.tmp")
    try:
        with open_input(video_path) as source:
            audio = _copyable_audio(source, Path(video_path))
            # The temporary name has no .m4a extension, so the muxer is named explicitly.
            with av.open(str(tmp_path), "w", format="ipod") as target:
                copy = target.add_stream_from_template(audio)
                for packet in source.demux(audio):
                    if packet.dts is None:  # the demuxer's end-of-stream marker
                        continue
                    packet.stream = copy
                    target.mux(packet)
        os.replace(tmp_path, out_path)
    except av.FFmpegError as exc:
        _raise_copy_error(exc)
    finally:
        tmp_path.unlink(missing_ok=True)
    return probe(out_path)


def _copyable_audio(source: av.container.InputContainer, name: Path) -> Any:
    audio = primary_stream(source, "audio")
    if audio is None:
        raise NoAudioStreamError(f"{name.name} has no audio stream")
    codec = audio.codec_context.codec.canonical_name
    if codec not in M4A_AUDIO_CODECS:
        raise AudioCopyError(
            f"the audio codec {codec!r} cannot be copied into an .m4a file "
            f"(supported: {', '.join(sorted(M4A_AUDIO_CODECS))})"
        )
    return audio


def _raise_copy_error(exc: av.FFmpegError) -> NoReturn:
    if isinstance(exc, OSError):  # disk full, permissions: not the media's fault
        raise exc
    raise AudioCopyError(f"cannot copy the audio stream: {exc}") from exc


@dataclass(frozen=True)
class FittedVideo:
    """A model's video with its sound, made ready to store: its audio fitted to the video
    (``path``: the fitted copy, or the video itself when nothing changed), measured, and its
    audio copied out (``audio``: the M4A's probe)."""

    fit: FitResult
    path: Path
    media: MediaInfo
    audio: MediaInfo


def fit_measure_extract(
    video_path: str | os.PathLike[str],
    fitted_path: str | os.PathLike[str],
    audio_path: str | os.PathLike[str],
) -> FittedVideo:
    """``fit_audio_to_video``, then ``probe`` and ``extract_audio`` of the video that results,
    with the same results and errors, opening the video once when its audio already fits (the
    usual case): the fit reads its headers, and one read of its packets both checks it whole
    and copies its audio (three openings and two reads before).

    It is synchronous: from async code call it through `asyncio.to_thread`."""
    video_path = Path(video_path)
    with open_input(video_path) as source:
        fit = fit_opened(source, video_path, fitted_path)
        if not fit.changed:
            media = _measure_and_copy(source, video_path, Path(audio_path))
            return FittedVideo(fit, video_path, media, probe(audio_path))
    fitted = Path(fitted_path)
    with open_input(fitted) as source:
        media = _measure_and_copy(source, fitted, Path(audio_path))
    return FittedVideo(fit, fitted, media, probe(audio_path))


def _measure_and_copy(
    source: av.container.InputContainer, video_path: Path, out_path: Path
) -> MediaInfo:
    """``probe`` of the unread video ``source``, copying its audio into an M4A at ``out_path``
    as the probe reads its packets (``extract_audio``'s copy). The probe's errors come first,
    as when it ran before ``extract_audio``."""
    if primary_stream(source, "video") is None:  # read without its packets seen: copied apart
        media = measure(source, video_path)
        extract_audio(video_path, out_path)
        return media
    try:
        audio = _copyable_audio(source, video_path)
    except (NoAudioStreamError, AudioCopyError):
        measure(source, video_path)
        raise
    tmp_path = out_path.with_name(f".{out_path.name}.{uuid.uuid4().hex}.tmp")
    failed: list[av.FFmpegError] = []
    try:
        # The temporary name has no .m4a extension, so the muxer is named explicitly.
        with av.open(str(tmp_path), "w", format="ipod") as target:
            copy = target.add_stream_from_template(audio)

            def take(packet: av.Packet) -> None:
                # dts None: the demuxer's end-of-stream marker
                if failed or packet.stream_index != audio.index or packet.dts is None:
                    return
                packet.stream = copy
                try:
                    target.mux(packet)
                except av.FFmpegError as exc:
                    failed.append(exc)

            media = measure(source, video_path, on_packet=take)
            if failed:
                raise failed[0]
        os.replace(tmp_path, out_path)
    except av.FFmpegError as exc:
        _raise_copy_error(exc)
    finally:
        tmp_path.unlink(missing_ok=True)
    return media
