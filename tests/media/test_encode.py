"""The five audio formats, alone and on a video whose stream is copied untouched."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest

from app.media import AudioFormat, PcmFormat, file_suffix, probe
from app.media.encode import check_format, copy_audio_track, mux_onto_video, write_audio_file
from app.media.errors import MediaError
from tests.media.conftest import decode_audio
from tests.support.clips import Clip

# (format, rate, what probe() says: container, codec)
CASES = [
    (AudioFormat.AAC, 48_000, "mp4", "aac"),
    (AudioFormat.AAC, 22_050, "mp4", "aac"),
    (AudioFormat.MP3, 44_100, "mp3", "mp3"),
    (AudioFormat.MP3, 24_000, "mp3", "mp3"),
    (AudioFormat.WAV, 16_000, "wav", "pcm_s16le"),
    (AudioFormat.FLAC, 44_100, "flac", "flac"),
    (AudioFormat.OPUS, 48_000, "ogg", "opus"),
]


def tone_blocks(pcm: PcmFormat, seconds: float) -> list[np.ndarray]:
    frames = pcm.frames(seconds)
    t = np.arange(frames) / pcm.rate
    tone = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    audio = np.repeat(tone[None, :], pcm.channels, axis=0)
    return [audio[:, i : i + pcm.block] for i in range(0, frames, pcm.block)]


@pytest.mark.parametrize(("fmt", "rate", "container", "codec"), CASES)
def test_every_format_is_written_at_the_chosen_rate(
    tmp_path: Path, fmt: AudioFormat, rate: int, container: str, codec: str
) -> None:
    pcm = PcmFormat(rate, 2)
    out = tmp_path / f"sound{file_suffix(fmt, with_video=False)}"

    write_audio_file(tone_blocks(pcm, 3.3), out, fmt=fmt, pcm=pcm)

    info = probe(out)
    assert (info.container, info.has_video) == (container, False)
    assert info.audio is not None
    assert (info.audio.codec, info.audio.sample_rate, info.audio.channels) == (codec, rate, 2)
    # Lossy encoders' priming and padding are hidden (edit list, LAME header, Opus pre-skip).
    assert info.duration_s == pytest.approx(3.3, abs=0.005)
    audio, decoded_rate = decode_audio(out)
    assert decoded_rate == rate
    middle = audio[0, rate : 2 * rate]
    assert np.sqrt(np.mean(middle**2)) == pytest.approx(0.3 / np.sqrt(2), rel=0.05)


@pytest.mark.parametrize("rate", [44_100, 16_000])
def test_opus_is_48khz_only(rate: int) -> None:
    # An Opus stream decodes at 48 kHz whatever it was encoded from.
    with pytest.raises(ValueError, match="opus"):
        check_format(AudioFormat.OPUS, PcmFormat(rate, 2))


@pytest.mark.parametrize("fmt", list(AudioFormat))
def test_the_sound_goes_onto_the_video_copied_packet_for_packet(
    tmp_path: Path, mp4_with_audio: Clip, fmt: AudioFormat
) -> None:
    pcm = PcmFormat(48_000, 2)
    out = tmp_path / f"video{file_suffix(fmt, with_video=True)}"

    mux_onto_video(mp4_with_audio.path, tone_blocks(pcm, 4.0), out, fmt=fmt, pcm=pcm)

    with av.open(str(out)) as made, av.open(str(mp4_with_audio.path)) as original:
        assert [bytes(p) for p in made.demux(video=0) if p.size] == [
            bytes(p) for p in original.demux(video=0) if p.size
        ]
        assert len(made.streams.audio) == 1
    info = probe(out)
    assert info.container == ("mov" if fmt is AudioFormat.WAV else "mp4")
    assert info.audio is not None and info.audio.codec == probe_codec(fmt)
    assert info.duration_s == pytest.approx(4.0)
    assert info.audio.duration_s == pytest.approx(4.0, abs=0.005)


def probe_codec(fmt: AudioFormat) -> str:
    return {"wav": "pcm_s16le"}.get(fmt.value, fmt.value)


@pytest.mark.parametrize("fmt", list(AudioFormat))
def test_the_audio_alone_is_copied_out_of_the_video_packet_for_packet(
    tmp_path: Path, mp4_with_audio: Clip, fmt: AudioFormat
) -> None:
    pcm = PcmFormat(48_000, 2)
    video = tmp_path / f"video{file_suffix(fmt, with_video=True)}"
    mux_onto_video(mp4_with_audio.path, tone_blocks(pcm, 4.0), video, fmt=fmt, pcm=pcm)
    alone = tmp_path / f"audio{file_suffix(fmt, with_video=False)}"

    copy_audio_track(video, alone, fmt=fmt)

    with av.open(str(alone)) as copied, av.open(str(video)) as source:
        # The same bytes (a WAV demuxer cuts PCM into packets of its own size)
        assert b"".join(bytes(p) for p in copied.demux(audio=0) if p.size) == b"".join(
            bytes(p) for p in source.demux(audio=0) if p.size
        )
    info = probe(alone)
    assert info.video is None and info.audio is not None
    assert info.audio.codec == probe_codec(fmt) and info.audio.sample_rate == 48_000
    assert info.duration_s == pytest.approx(4.0, abs=0.03)
    # ...decoding to the same sound (Ogg trims Opus's end padding, which MP4 leaves in)
    ours, theirs = decode_audio(alone)[0], decode_audio(video)[0]
    assert ours.shape[1] == pytest.approx(4.0 * 48_000, abs=0.03 * 48_000)
    n = min(ours.shape[1], theirs.shape[1])
    np.testing.assert_allclose(ours[:, :n], theirs[:, :n], atol=1e-6)


def test_a_file_without_sound_has_no_audio_to_copy(tmp_path: Path, mp4_without_audio: Clip) -> None:
    with pytest.raises(MediaError, match="no audio"):
        copy_audio_track(mp4_without_audio.path, tmp_path / "a.m4a", fmt=AudioFormat.AAC)
    assert list(tmp_path.iterdir()) == []
