from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import av
import pytest

from app.media import MediaInfo, MediaUnreadableError, probe
from app.media.probe import SAFE_DEMUXERS
from app.media.samples import ensure_sample_video
from tests.media.conftest import write_sine
from tests.support.clips import Clip, Container, make_bouncing_square


@pytest.mark.parametrize(
    ("container", "expected", "video_codec"),
    [
        ("mp4", "mp4", "h264"),
        ("mov", "mov", "h264"),
        ("webm", "webm", "vp8"),
        ("mkv", "matroska", "h264"),
        ("avi", "avi", "mpeg4"),
    ],
)
def test_container_is_reported_by_content_not_extension(
    tmp_path: Path, container: Container, expected: str, video_codec: str
) -> None:
    # Every file is named .mp4: only the bytes can tell them apart.
    clip = make_bouncing_square(tmp_path / "upload.mp4", container=container, duration_s=1.0)

    info = probe(clip.path)

    assert info.container == expected
    assert info.video is not None
    assert (info.video.codec, info.video.width, info.video.height) == (video_codec, 320, 240)
    assert info.video.fps == pytest.approx(24.0)
    assert info.size_bytes == clip.path.stat().st_size


@pytest.mark.parametrize("container", ["mp4", "mov", "webm", "mkv"])
def test_duration_matches_the_clip_duration(tmp_path: Path, container: Container) -> None:
    clip = make_bouncing_square(tmp_path / f"clip.{container}", container=container, duration_s=3.5)

    info = probe(clip.path)

    # Within a millisecond: Matroska stores times in milliseconds.
    assert info.duration_s == pytest.approx(clip.duration_s, abs=1e-3)
    assert info.video is not None
    assert info.video.duration_s == pytest.approx(clip.duration_s, abs=1e-3)


def test_video_with_audio_reports_both_streams(mp4_with_audio: Clip) -> None:
    info = probe(mp4_with_audio.path)

    assert info.has_audio and info.has_video
    assert info.audio is not None
    assert info.audio.codec == "aac"
    assert (info.audio.sample_rate, info.audio.channels) == (44_100, 2)
    assert info.audio.channel_layout == "stereo"
    # The MP4 edit list hides the AAC priming samples: exactly the clip's length.
    assert info.audio.duration_s == pytest.approx(mp4_with_audio.duration_s, abs=1e-3)
    assert info.duration_s == pytest.approx(mp4_with_audio.duration_s, abs=1e-3)


def test_video_without_audio_has_no_audio(mp4_without_audio: Clip) -> None:
    info = probe(mp4_without_audio.path)

    assert info.has_audio is False
    assert info.audio is None
    assert info.video is not None and info.video.pix_fmt == "yuv420p"


def test_mp3_duration_is_exact(tmp_path: Path) -> None:
    path = tmp_path / "audio.mp3"
    samples = write_sine(path, codec="libmp3lame", muxer="mp3", duration_s=3.0)

    info = probe(path)

    assert (info.container, info.format_name, info.has_video) == ("mp3", "mp3", False)
    assert info.audio is not None
    assert info.audio.codec == "mp3"  # the codec, not the decoder's name "mp3float"
    assert (info.audio.sample_rate, info.audio.channels) == (44_100, 1)
    assert info.duration_s == pytest.approx(samples / 44_100, abs=1e-6)


def test_truncated_mp3_is_measured_by_its_samples_not_its_header(tmp_path: Path) -> None:
    # An MP3 cut short (say, a download that stopped) keeps a header claiming the full length.
    whole = tmp_path / "whole.mp3"
    write_sine(whole, codec="libmp3lame", muxer="mp3", duration_s=4.0)
    cut = tmp_path / "cut.mp3"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])

    info = probe(cut)

    assert info.duration_s is not None
    assert 1.5 < info.duration_s < 2.5


def test_mp3_cover_art_is_not_video(tmp_path: Path) -> None:
    path = tmp_path / "cover.mp3"
    write_sine(path, codec="libmp3lame", muxer="mp3", duration_s=1.0, cover_art=True)

    info = probe(path)

    assert info.video is None
    assert info.has_audio
    assert info.duration_s == pytest.approx(1.0, abs=1e-6)


def test_m4a_is_an_audio_only_mp4(tmp_path: Path) -> None:
    path = tmp_path / "audio.m4a"
    write_sine(path, codec="aac", muxer="ipod", duration_s=3.0)

    info = probe(path)

    assert (info.container, info.major_brand) == ("mp4", "M4A ")
    assert info.video is None
    assert info.audio is not None and info.audio.codec == "aac"
    # The edit list's length, not the decoder's (which keeps the encoder's last-frame padding).
    assert info.duration_s == pytest.approx(3.0, abs=1e-6)


def test_garbage_bytes_are_unreadable(tmp_path: Path) -> None:
    path = tmp_path / "video.mp4"
    path.write_bytes(bytes(range(256)) * 40)

    with pytest.raises(MediaUnreadableError):
        probe(path)


@pytest.fixture
def header_first_mp4(tmp_path: Path) -> bytes:
    """`foley up`'s sample (4 s, its index before its media data, ~10 kB): cut anywhere after
    the index, it still opens and its header still says 4 s."""
    data = ensure_sample_video(tmp_path / "sample").read_bytes()
    assert probe(data).duration_s == pytest.approx(4.0)
    return data


def _packet_offsets(data: bytes) -> list[int]:
    with av.open(io.BytesIO(data)) as container:
        return [packet.pos for packet in container.demux() if packet.size]


def test_a_video_cut_short_is_unreadable(tmp_path: Path, header_first_mp4: bytes) -> None:
    cut = header_first_mp4[:3000]  # the index and a few frames, then a frame cut in half
    (tmp_path / "cut.mp4").write_bytes(cut)

    for source in (cut, tmp_path / "cut.mp4"):
        with pytest.raises(MediaUnreadableError, match="cut short"):
            probe(source)


def test_a_video_cut_between_two_frames_is_unreadable(header_first_mp4: bytes) -> None:
    # No packet is damaged: half of them are simply not there.
    offsets = _packet_offsets(header_first_mp4)
    cut = header_first_mp4[: offsets[len(offsets) // 2]]

    with pytest.raises(MediaUnreadableError, match=r"ends at 2\.\d+ s of the 4\.00 s"):
        probe(cut)


def test_unreadable_messages_do_not_name_the_file(tmp_path: Path, header_first_mp4: bytes) -> None:
    # Upload paths hold the tenant's id; the message reaches the tenant.
    directory = tmp_path / "uploads" / "0b9d6f0e-tenant"
    directory.mkdir(parents=True)
    for name, data in (("garbage", bytes(range(256)) * 40), ("cut", header_first_mp4[:3000])):
        (directory / name).write_bytes(data)
        with pytest.raises(MediaUnreadableError) as caught:
            probe(directory / name)
        assert str(tmp_path) not in str(caught.value)
        assert "tenant" not in str(caught.value)


def test_empty_file_is_unreadable(tmp_path: Path) -> None:
    path = tmp_path / "empty.mp4"
    path.touch()

    with pytest.raises(MediaUnreadableError):
        probe(path)


def test_missing_file_is_not_found(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        probe(tmp_path / "nope.mp4")


def test_playlists_and_concat_scripts_are_refused(tmp_path: Path, mp4_without_audio: Clip) -> None:
    # Both formats make FFmpeg open files or URLs named inside them (plain av.open() follows
    # these two); an input must not.
    shutil.copy(mp4_without_audio.path, tmp_path / "real.mp4")
    concat = tmp_path / "concat.mp4"
    concat.write_text("ffconcat version 1.0\nfile real.mp4\n")
    playlist = tmp_path / "playlist.m3u8"
    playlist.write_text(
        "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:4\n#EXT-X-MEDIA-SEQUENCE:0\n"
        "#EXTINF:4.0,\nreal.mp4\n#EXT-X-ENDLIST\n"
    )
    assert (_demuxer_of(concat), _demuxer_of(playlist)) == ("concat", "hls")

    for path in (concat, playlist):
        with pytest.raises(MediaUnreadableError):
            probe(path)


def _demuxer_of(path: Path) -> str:
    with av.open(str(path)) as container:
        return str(container.format.name)


@pytest.mark.parametrize("container", ["mp4", "mov", "webm", "mkv", "avi"])
def test_bytes_in_memory_measure_as_the_file_does(tmp_path: Path, container: Container) -> None:
    clip = make_bouncing_square(tmp_path / "clip.bin", container=container, duration_s=1.5)

    assert probe(clip.path.read_bytes()) == probe(clip.path)


def test_audio_only_bytes_in_memory_are_decoded_as_the_file_is(tmp_path: Path) -> None:
    whole = tmp_path / "whole.mp3"
    write_sine(whole, codec="libmp3lame", muxer="mp3", duration_s=4.0)
    cut = whole.read_bytes()[: whole.stat().st_size // 2]
    (tmp_path / "cut.mp3").write_bytes(cut)

    assert probe(cut) == probe(tmp_path / "cut.mp3")


def test_unreadable_bytes_in_memory(mp4_without_audio: Clip) -> None:
    for data in (b"", bytes(range(256)) * 40):
        with pytest.raises(MediaUnreadableError):
            probe(data)
    # Bytes are never taken for a path, however short.
    with pytest.raises(MediaUnreadableError):
        probe(str(mp4_without_audio.path).encode())


def test_playlists_and_concat_scripts_in_memory_are_refused(
    tmp_path: Path, mp4_without_audio: Clip
) -> None:
    shutil.copy(mp4_without_audio.path, tmp_path / "real.mp4")
    for data in (
        f"ffconcat version 1.0\nfile {tmp_path / 'real.mp4'}\n".encode(),
        (
            "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:4\n#EXT-X-MEDIA-SEQUENCE:0\n"
            f"#EXTINF:4.0,\nfile://{tmp_path / 'real.mp4'}\n#EXT-X-ENDLIST\n"
        ).encode(),
    ):
        with pytest.raises(MediaUnreadableError):
            probe(data)


def test_bytes_in_memory_may_make_ffmpeg_open_nothing_else(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mp4_without_audio: Clip
) -> None:
    # The concat demuxer (let in here on purpose) opens the files its script names: from a file
    # it can (the file protocol is allowed), from bytes in memory it cannot (no protocol is).
    monkeypatch.chdir(tmp_path)
    shutil.copy(mp4_without_audio.path, tmp_path / "real.mp4")
    script = tmp_path / "script.ffconcat"
    script.write_text("ffconcat version 1.0\nfile real.mp4\n")
    demuxers = SAFE_DEMUXERS | {"concat"}

    assert probe(script, demuxers=demuxers).video is not None
    with pytest.raises(MediaUnreadableError):
        probe(script.read_bytes(), demuxers=demuxers)


def test_media_info_round_trips_through_json(mp4_with_audio: Clip) -> None:
    info = probe(mp4_with_audio.path)

    data = json.loads(json.dumps(info.to_dict()))

    assert data["has_audio"] is True and data["has_video"] is True
    assert data["video"]["width"] == 320
    assert MediaInfo.from_dict(data) == info
