"""Take the audio out of a video without re-encoding it."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import av

from app.media.errors import AudioCopyError, NoAudioStreamError
from app.media.probe import MediaInfo, open_input, primary_stream, probe

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
            audio = primary_stream(source, "audio")
            if audio is None:
                raise NoAudioStreamError(f"{Path(video_path).name} has no audio stream")
            codec = audio.codec_context.codec.canonical_name
            if codec not in M4A_AUDIO_CODECS:
                raise AudioCopyError(
                    f"the audio codec {codec!r} cannot be copied into an .m4a file "
                    f"(supported: {', '.join(sorted(M4A_AUDIO_CODECS))})"
                )
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
        if isinstance(exc, OSError):  # disk full, permissions: not the media's fault
            raise
        raise AudioCopyError(f"cannot copy the audio stream: {exc}") from exc
    finally:
        tmp_path.unlink(missing_ok=True)
    return probe(out_path)
