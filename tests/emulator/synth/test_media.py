"""mux_audio_into_video / encode_audio, checked by decoding what they wrote with PyAV."""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from scipy.signal import correlate

from emulator.synth import (
    VideoAnalysis,
    analyze_video,
    encode_audio,
    mux_audio_into_video,
    render_audio,
)
from tests.support.clips import Clip, make_bouncing_square

SR = 44_100
AAC_FRAME = 1024
MP3_FRAME = 1152


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("media")


@pytest.fixture(scope="module")
def rendered(work: Path) -> tuple[Clip, VideoAnalysis, np.ndarray]:
    clip = make_bouncing_square(work / "source.mp4")
    analysis = analyze_video(clip.path)
    return clip, analysis, render_audio(analysis, sample_rate=SR)


def seconds(value: int | None, time_base: Fraction | None) -> float:
    assert value is not None and time_base is not None
    return float(value * time_base)


def video_packets(path: Path) -> list[tuple[bytes, bool, float]]:
    """(payload, keyframe, presentation time) of every video packet, in file order."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        return [
            (bytes(packet), packet.is_keyframe, seconds(packet.pts, packet.time_base))
            for packet in container.demux(stream)
            if packet.size
        ]


@dataclass(frozen=True)
class DecodedAudio:
    samples: np.ndarray  # float64, (channels, n)
    rate: int
    codec: str
    time_base: Fraction
    declared_s: float  # the stream's duration as the container states it (edit list applied)


def decode_audio(path: Path) -> DecodedAudio:
    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        chunks = []
        for frame in container.decode(stream):
            samples = frame.to_ndarray()
            if not frame.format.is_planar:
                samples = samples.reshape(-1, frame.layout.nb_channels).T
            if samples.dtype == np.int16:
                samples = samples / 32768.0
            chunks.append(samples.astype(np.float64))
        assert stream.time_base is not None
        return DecodedAudio(
            samples=np.concatenate(chunks, axis=1),
            rate=stream.codec_context.sample_rate,
            codec=stream.codec_context.name,
            time_base=stream.time_base,
            declared_s=seconds(stream.duration, stream.time_base) if stream.duration else 0.0,
        )


def best_lag(reference: np.ndarray, decoded: np.ndarray, search: int = 2048) -> int:
    """Shift (samples) that best aligns decoded audio with the reference: 0 means encoder
    priming was removed exactly."""
    length = min(len(reference), len(decoded)) - 2 * search
    scores = correlate(
        decoded[: length + 2 * search], reference[search : search + length], mode="valid"
    )
    return int(np.argmax(scores)) - search


@pytest.mark.parametrize(
    ("name", "options"),
    [
        ("h264-bframes.mp4", {"container": "mp4"}),
        ("quicktime.mov", {"container": "mov"}),
        ("h264.mkv", {"container": "mkv", "fps": 30}),
        ("mpeg4.avi", {"container": "avi"}),
        ("vp9.webm", {"container": "webm", "codec": "libvpx-vp9"}),
    ],
)
def test_video_packets_are_copied_byte_for_byte(
    work: Path, name: str, options: dict[str, object]
) -> None:
    clip = make_bouncing_square(work / name, duration_s=2.0, **options)  # type: ignore[arg-type]
    out = work / f"{name}.out.mp4"

    mux_audio_into_video(clip.path, render_audio(analyze_video(clip.path)), SR, out)

    source, copied = video_packets(clip.path), video_packets(out)
    assert [p[0] for p in copied] == [p[0] for p in source]
    assert [p[1] for p in copied] == [p[1] for p in source]
    # Timestamps are rescaled to the MP4 time base, never moved.
    assert np.allclose([p[2] for p in copied], [p[2] for p in source], atol=1e-3)
    with av.open(str(out)) as container:
        assert container.format.name.startswith("mov,")
        assert sum(1 for _ in container.decode(video=0)) == len(clip.frame_times)


def test_muxed_audio_lasts_as_long_as_the_video_and_is_in_sync(
    work: Path, rendered: tuple[Clip, VideoAnalysis, np.ndarray]
) -> None:
    clip, _, pcm = rendered
    out = work / "synced.mp4"

    mux_audio_into_video(clip.path, pcm, SR, out)

    audio = decode_audio(out)
    decoded = audio.samples
    with av.open(str(out)) as container:
        video = container.streams.video[0]
        video_s = seconds(video.duration, video.time_base)
    expected = round(video_s * SR)
    assert audio.rate == SR and decoded.shape[0] == 2
    assert video_s == pytest.approx(clip.duration_s, abs=1e-6)
    # The edit list declares exactly the rendered length...
    assert audio.declared_s == pytest.approx(pcm.shape[1] / SR, abs=1 / SR)
    assert pcm.shape[1] == expected
    # ...and a decoder returns it within one AAC frame: FFmpeg drops the 1024 priming
    # samples but keeps the encoder's padding of the last frame.
    assert abs(decoded.shape[1] - expected) < AAC_FRAME
    # Priming removed exactly: sample 0 of the decoded audio is sample 0 of the render.
    assert best_lag(pcm[0].astype(np.float64), decoded[0]) == 0
    assert np.corrcoef(pcm[0, :40_000], decoded[0, :40_000])[0, 1] > 0.99


def test_input_audio_is_replaced(work: Path) -> None:
    clip = make_bouncing_square(work / "has-sine.mp4", with_audio=True, duration_s=2.0)
    pcm = render_audio(analyze_video(clip.path))
    out = work / "replaced.mp4"

    mux_audio_into_video(clip.path, pcm, SR, out)

    with av.open(str(out)) as container:
        assert len(container.streams.audio) == 1
        assert len(container.streams.video) == 1
    decoded = decode_audio(out).samples
    n = min(pcm.shape[1], decoded.shape[1])
    assert np.corrcoef(pcm[0, :n], decoded[0, :n])[0, 1] > 0.99


def test_two_muxes_of_the_same_render_decode_identically(
    work: Path, rendered: tuple[Clip, VideoAnalysis, np.ndarray]
) -> None:
    clip, analysis, _ = rendered
    first, second = work / "first.mp4", work / "second.mp4"

    mux_audio_into_video(clip.path, render_audio(analysis, seed=5), SR, first)
    mux_audio_into_video(clip.path, render_audio(analysis, seed=5), SR, second)

    assert np.array_equal(decode_audio(first).samples, decode_audio(second).samples)


def test_codec_mp4_cannot_carry_is_reencoded_to_h264(work: Path) -> None:
    clip = make_bouncing_square(work / "vp8.webm", container="webm", duration_s=2.0)
    out = work / "vp8.out.mp4"

    mux_audio_into_video(clip.path, render_audio(analyze_video(clip.path)), SR, out)

    with av.open(str(out)) as container:
        assert container.streams.video[0].codec_context.name == "h264"
        frames = list(container.decode(video=0))
    assert len(frames) == len(clip.frame_times)
    assert [f.time for f in frames] == pytest.approx(clip.frame_times, abs=1e-3)
    assert analyze_video(out).duration_s == pytest.approx(clip.duration_s, abs=2e-3)


def test_mp3_is_44k1_stereo_with_the_right_duration(
    work: Path, rendered: tuple[Clip, VideoAnalysis, np.ndarray]
) -> None:
    _, _, pcm = rendered
    out = work / "kling.mp3"

    encode_audio(pcm, SR, out, "mp3")

    audio = decode_audio(out)
    decoded = audio.samples
    with av.open(str(out)) as container:
        assert container.format.name == "mp3"
    assert audio.codec in ("mp3", "mp3float")
    assert audio.rate == SR and decoded.shape[0] == 2
    assert abs(decoded.shape[1] - pcm.shape[1]) <= MP3_FRAME
    # The LAME header's delay is honoured: no offset between render and decode.
    assert best_lag(pcm[0].astype(np.float64), decoded[0]) == 0


def test_m4a_and_wav_decode_to_the_render(
    work: Path, rendered: tuple[Clip, VideoAnalysis, np.ndarray]
) -> None:
    _, _, pcm = rendered
    m4a, wav = work / "out.m4a", work / "out.wav"

    encode_audio(pcm, SR, m4a, "m4a")
    encode_audio(pcm, SR, wav, "wav")

    aac = decode_audio(m4a)
    assert aac.rate == SR and abs(aac.samples.shape[1] - pcm.shape[1]) < AAC_FRAME
    with av.open(str(m4a)) as container:
        assert container.metadata.get("major_brand", "").strip() == "M4A"
    pcm16 = decode_audio(wav)
    assert pcm16.rate == SR and pcm16.codec == "pcm_s16le"
    assert pcm16.samples.shape == pcm.shape
    assert np.max(np.abs(pcm16.samples - pcm)) <= 1.5 / 32768


def test_bad_pcm_is_rejected_and_leaves_no_file(work: Path) -> None:
    out = work / "mono.mp3"

    with pytest.raises(ValueError, match="stereo"):
        encode_audio(np.zeros(4410, np.float32), SR, out, "mp3")

    assert not out.exists()


def test_audio_time_base_is_the_sample_rate(
    work: Path, rendered: tuple[Clip, VideoAnalysis, np.ndarray]
) -> None:
    clip, _, pcm = rendered
    out = work / "48k.mp4"
    pcm48 = render_audio(analyze_video(clip.path), sample_rate=48_000)

    mux_audio_into_video(clip.path, pcm48, 48_000, out)

    audio = decode_audio(out)
    assert audio.rate == 48_000
    assert audio.time_base == Fraction(1, 48_000)
    assert abs(audio.samples.shape[1] - pcm48.shape[1]) < AAC_FRAME
    assert pcm.shape[1] != pcm48.shape[1]
