from __future__ import annotations

from pathlib import Path

import av
import pytest

from app.media import AudioCopyError, NoAudioStreamError, extract_audio, probe
from tests.support.clips import Clip, audio_packets


def test_audio_is_copied_packet_for_packet(tmp_path: Path, mp4_with_audio: Clip) -> None:
    out = tmp_path / "audio.m4a"

    extract_audio(mp4_with_audio.path, out)

    source = audio_packets(mp4_with_audio.path)
    copied = audio_packets(out)
    assert len(copied) == len(source) > 100
    # Same bytes and the same timestamps: a remux, not a re-encode.
    assert copied == source
    with av.open(str(out)) as container:
        assert [s.type for s in container.streams] == ["audio"]


def test_extracted_audio_is_an_m4a_as_long_as_the_source_audio(
    tmp_path: Path, mp4_with_audio: Clip
) -> None:
    source = probe(mp4_with_audio.path)

    info = extract_audio(mp4_with_audio.path, tmp_path / "audio.m4a")

    assert (info.container, info.major_brand, info.has_video) == ("mp4", "M4A ", False)
    assert info.audio is not None and source.audio is not None
    assert info.audio.codec == "aac"
    assert (info.audio.sample_rate, info.audio.channels) == (44_100, 2)
    # The edit list came along, so the priming samples stay hidden.
    assert info.duration_s == pytest.approx(source.audio.duration_s, abs=1e-6)
    assert info == probe(tmp_path / "audio.m4a")


def test_video_without_audio_is_refused_and_nothing_is_written(
    tmp_path: Path, mp4_without_audio: Clip
) -> None:
    with pytest.raises(NoAudioStreamError):
        extract_audio(mp4_without_audio.path, tmp_path / "audio.m4a")

    assert list(tmp_path.iterdir()) == []


def test_audio_that_would_need_a_reencode_is_refused(tmp_path: Path, webm_with_audio: Clip) -> None:
    # Opus cannot live in an M4A; extract_audio never re-encodes.
    with pytest.raises(AudioCopyError, match="opus"):
        extract_audio(webm_with_audio.path, tmp_path / "audio.m4a")

    assert list(tmp_path.iterdir()) == []
