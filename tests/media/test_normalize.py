"""fit_audio_to_video: ThinkSound's audio made as long as the video, the video untouched.

The inputs are real MP4s: the bouncing-square video (H.264 with B-frames, so an edit list and
pts != dts) with an AAC track of a chosen length, encoded here with PyAV. The test signal is a
chirp under a slow tremolo, so cross-correlation has one clear peak and the energy envelope a
shape to compare.
"""

from __future__ import annotations

import os
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest

from app.media import (
    FitResult,
    MediaError,
    MediaUnreadableError,
    NoAudioStreamError,
    extract_audio,
    fit_audio_to_video,
    fit_measure_extract,
    probe,
)
from app.media.normalize import DEFAULT_TOLERANCE_S, FADE_S
from tests.media.conftest import write_sine
from tests.support.clips import Clip, audio_packets, make_bouncing_square

RATE = 44_100
VIDEO_S = 4.0
TARGET = round(VIDEO_S * RATE)  # audio samples the fitted file must hold
AAC_FRAME = 1024


def chirp(count: int, rate: int) -> np.ndarray:
    """A 300 Hz → ~4 kHz chirp, 0.3 peak, under a 1.3 Hz tremolo."""
    t = np.arange(count) / rate
    chirp = np.sin(2 * np.pi * (300 * t + 400 * t * t))
    return (0.3 * chirp * (0.6 + 0.4 * np.sin(2 * np.pi * 1.3 * t))).astype(np.float32)


def mux_with_audio(
    video_only: Path,
    out: Path,
    *,
    audio_s: float,
    rate: int = RATE,
    layout: str = "stereo",
    muxer_options: dict[str, str] | None = None,
) -> Path:
    """`video_only`'s video (stream-copied) plus `audio_s` of the test signal as 128 kbps AAC."""
    with (
        av.open(str(video_only)) as source,
        av.open(str(out), "w", format=out.suffix[1:], options=muxer_options or {}) as target,
    ):
        video = source.streams.video[0]
        copy = target.add_stream_from_template(video)
        audio: Any = target.add_stream("aac", rate=rate, layout=layout)
        audio.codec_context.bit_rate = 128_000
        for packet in source.demux(video):
            if packet.size:
                packet.stream = copy
                target.mux(packet)
        total = round(audio_s * rate)
        tone = chirp(total, rate)
        channels = audio.codec_context.channels
        for start in range(0, total, AAC_FRAME):
            chunk = np.repeat(tone[None, start : start + AAC_FRAME], channels, axis=0)
            frame = av.AudioFrame.from_ndarray(chunk, format="fltp", layout=layout)
            frame.sample_rate = rate
            frame.pts = start
            target.mux(audio.encode(frame))
        target.mux(audio.encode(None))
    return out


@pytest.fixture(scope="module")
def video_only(clip_dir: Path) -> Clip:
    return make_bouncing_square(clip_dir / "fit-video-only.mp4", duration_s=VIDEO_S)


@pytest.fixture(scope="module")
def short_audio(clip_dir: Path, video_only: Clip) -> Path:
    """ThinkSound's case: the audio 1 s shorter than the video."""
    return mux_with_audio(video_only.path, clip_dir / "fit-short.mp4", audio_s=3.0)


@pytest.fixture(scope="module")
def long_audio(clip_dir: Path, video_only: Clip) -> Path:
    return mux_with_audio(video_only.path, clip_dir / "fit-long.mp4", audio_s=4.5)


@pytest.fixture(scope="module")
def equal_audio(clip_dir: Path, video_only: Clip) -> Path:
    return mux_with_audio(video_only.path, clip_dir / "fit-equal.mp4", audio_s=VIDEO_S)


@pytest.fixture(scope="module")
def fitted_short(tmp_path_factory: pytest.TempPathFactory, short_audio: Path) -> Path:
    out = tmp_path_factory.mktemp("fitted") / "short.mp4"
    fit_audio_to_video(short_audio, out)
    return out


@pytest.fixture(scope="module")
def fitted_long(tmp_path_factory: pytest.TempPathFactory, long_audio: Path) -> Path:
    out = tmp_path_factory.mktemp("fitted") / "long.mp4"
    fit_audio_to_video(long_audio, out)
    return out


# --- helpers that look at the files -------------------------------------------------------


def video_packets(path: Path) -> list[tuple[bytes, Fraction, Fraction, Fraction, bool]]:
    """Every video packet: its bytes, pts/dts/duration in seconds, keyframe flag."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        tb = Fraction(stream.time_base or 0)
        packets: list[Any] = [p for p in container.demux(stream) if p.size]
        return [(bytes(p), p.pts * tb, p.dts * tb, p.duration * tb, p.is_keyframe) for p in packets]


def decode_audio(path: Path) -> np.ndarray:
    """All decoded samples (channels × n) as FFmpeg returns them: the priming samples dropped by
    the edit list, the last frame whole (its padding included)."""
    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        frames = list(container.decode(stream))
    assert frames[0].pts == 0
    return np.concatenate([frame.to_ndarray() for frame in frames], axis=1)


def rms(samples: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(samples, dtype=np.float64))))


def best_lag(reference: np.ndarray, signal: np.ndarray, max_lag: int = 256) -> int:
    """The shift (samples) at which `signal` best matches `reference`: 0 when aligned."""
    window = slice(max_lag, len(reference) - max_lag)
    scores = [
        float(np.dot(reference[window], signal[window.start + lag : window.stop + lag]))
        for lag in range(-max_lag, max_lag + 1)
    ]
    return int(np.argmax(scores)) - max_lag


def assert_same_content(original: np.ndarray, fitted: np.ndarray, end: int) -> None:
    """`fitted` carries `original`'s audio over [0, end): aligned to the sample, a faithful
    re-encode (SNR), and the same loudness envelope block by block."""
    a, b = original[:, :end], fitted[:, :end]
    assert best_lag(a[0], b[0]) == 0
    noise = a - b
    snr_db = 10 * np.log10(np.sum(np.square(a, dtype=np.float64)) / np.sum(np.square(noise)))
    assert snr_db > 40, snr_db  # ~60 dB measured: AAC at 192 kbps over AAC at 128 kbps
    blocks = end // AAC_FRAME
    envelope_a = [rms(a[:, i * AAC_FRAME : (i + 1) * AAC_FRAME]) for i in range(blocks)]
    envelope_b = [rms(b[:, i * AAC_FRAME : (i + 1) * AAC_FRAME]) for i in range(blocks)]
    np.testing.assert_allclose(envelope_b, envelope_a, rtol=0.02)


def files_in(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


# --- the audio shorter than the video (ThinkSound) ----------------------------------------


def test_short_audio_is_padded_to_the_video_duration(tmp_path: Path, short_audio: Path) -> None:
    out = tmp_path / "fitted.mp4"

    result = fit_audio_to_video(short_audio, out)

    assert result == FitResult(
        changed=True,
        video_duration_s=4.0,
        audio_duration_before_s=3.0,
        audio_duration_after_s=4.0,
        padded_s=1.0,
        trimmed_s=0.0,
    )
    info = probe(out)
    assert info.video is not None and info.audio is not None
    assert (info.container, info.video.codec) == ("mp4", "h264")
    assert info.video.duration_s == VIDEO_S
    assert info.audio.duration_s == VIDEO_S
    assert (info.audio.codec, info.audio.sample_rate, info.audio.channels) == ("aac", RATE, 2)
    assert info.audio.channel_layout == "stereo"
    # Only the new file: the temporary one was renamed.
    assert files_in(tmp_path) == ["fitted.mp4"]


@pytest.mark.parametrize("fitted_name", ["fitted_short", "fitted_long"])
def test_video_packets_are_copied_byte_for_byte(
    request: pytest.FixtureRequest, video_only: Clip, fitted_name: str
) -> None:
    fitted: Path = request.getfixturevalue(fitted_name)

    source = video_packets(video_only.path)
    copied = video_packets(fitted)

    assert len(copied) == len(source) == 96
    # Same bytes, same timestamps (B-frames: pts != dts), same keyframes, in the same order.
    assert copied == source
    assert any(pts != dts for _, pts, dts, _, _ in copied)
    with av.open(str(fitted)) as container, av.open(str(video_only.path)) as original:
        assert container.streams.video[0].codec_context.extradata == (
            original.streams.video[0].codec_context.extradata
        )
        assert [s.type for s in container.streams] == ["video", "audio"]


@pytest.mark.parametrize("fitted_name", ["fitted_short", "fitted_long"])
def test_decoded_audio_is_as_long_as_the_video(
    request: pytest.FixtureRequest, fitted_name: str
) -> None:
    fitted: Path = request.getfixturevalue(fitted_name)

    with av.open(str(fitted)) as container:
        stream = container.streams.audio[0]
        packets: list[Any] = [p for p in container.demux(stream) if p.size]
        # The edit list: exactly TARGET samples. The packets: FFmpeg's 1024 priming samples
        # first (pts -1024), then TARGET samples, the last packet only partly filled.
        assert (stream.time_base, stream.start_time, stream.duration) == (
            Fraction(1, RATE),
            0,
            TARGET,
        )
    assert packets[0].pts == -AAC_FRAME
    assert sum(p.duration for p in packets) == TARGET + AAC_FRAME
    assert packets[-1].duration == TARGET % AAC_FRAME

    # FFmpeg drops the priming but returns the last frame whole: within one AAC frame above.
    decoded = decode_audio(fitted)
    assert TARGET <= decoded.shape[1] < TARGET + AAC_FRAME
    # What lies past the video's end is the encoder's padding: silence.
    assert np.abs(decoded[:, TARGET:]).max() < 1e-3


def test_original_audio_is_kept_at_the_start(short_audio: Path, fitted_short: Path) -> None:
    original = decode_audio(short_audio)
    fitted = decode_audio(fitted_short)
    content_end = 3 * RATE
    fade = round(FADE_S * RATE)

    # Up to the fade (and one AAC frame before it, which the fade's spectrum reaches into).
    assert_same_content(original, fitted, content_end - fade - AAC_FRAME)


def test_padding_is_silence_after_a_fade_out(short_audio: Path, fitted_short: Path) -> None:
    original = decode_audio(short_audio)
    fitted = decode_audio(fitted_short)
    content_end = 3 * RATE
    fade = round(FADE_S * RATE)
    quarter = fade // 4

    # The fade: the last quarter of it is far quieter than the original there, and the level
    # falls quarter by quarter (a ramp down, not a cut).
    assert rms(fitted[:, content_end - quarter : content_end]) < 0.15 * rms(
        original[:, content_end - quarter : content_end]
    )
    levels = [
        rms(fitted[:, content_end - fade + i * quarter : content_end - fade + (i + 1) * quarter])
        for i in range(4)
    ]
    assert levels == sorted(levels, reverse=True)
    # The frame straddling the end of the fade carries a trace of codec noise at most...
    assert rms(fitted[:, content_end : content_end + 2 * AAC_FRAME]) < 1e-3
    # ...after which the padding is digital silence to the video's end (and past it).
    assert np.abs(fitted[:, content_end + 2 * AAC_FRAME :]).max() < 1e-6


# --- the audio longer than the video ------------------------------------------------------


def test_long_audio_is_trimmed_to_the_video_duration(
    tmp_path: Path, long_audio: Path, fitted_long: Path
) -> None:
    result = fit_audio_to_video(long_audio, tmp_path / "fitted.mp4")

    assert result == FitResult(
        changed=True,
        video_duration_s=4.0,
        audio_duration_before_s=4.5,
        audio_duration_after_s=4.0,
        padded_s=0.0,
        trimmed_s=0.5,
    )
    original = decode_audio(long_audio)
    fitted = decode_audio(fitted_long)
    fade = round(FADE_S * RATE)
    assert_same_content(original, fitted, TARGET - fade - AAC_FRAME)
    # Faded out at the video's end instead of cut mid-waveform.
    quarter = fade // 4
    assert rms(fitted[:, TARGET - quarter : TARGET]) < 0.15 * rms(
        original[:, TARGET - quarter : TARGET]
    )


# --- nothing to do ------------------------------------------------------------------------


def test_audio_as_long_as_the_video_is_left_alone(tmp_path: Path, equal_audio: Path) -> None:
    out = tmp_path / "fitted.mp4"

    result = fit_audio_to_video(equal_audio, out)

    assert result == FitResult(
        changed=False,
        video_duration_s=4.0,
        audio_duration_before_s=4.0,
        audio_duration_after_s=4.0,
        padded_s=0.0,
        trimmed_s=0.0,
    )
    assert files_in(tmp_path) == []


def test_a_difference_within_the_tolerance_is_left_alone(
    tmp_path: Path, clip_dir: Path, video_only: Clip
) -> None:
    # 20 ms short: less than one AAC frame at 44.1 kHz (the default tolerance).
    nearly = mux_with_audio(video_only.path, clip_dir / "fit-nearly.mp4", audio_s=3.98)
    assert 0.020 < DEFAULT_TOLERANCE_S < 0.025

    assert not fit_audio_to_video(nearly, tmp_path / "a.mp4").changed
    assert files_in(tmp_path) == []

    # A caller asking for more precision gets it.
    result = fit_audio_to_video(nearly, tmp_path / "b.mp4", tolerance_s=0.005)
    assert result.changed and result.padded_s == pytest.approx(0.02, abs=1e-6)
    assert probe(tmp_path / "b.mp4").audio.duration_s == VIDEO_S  # type: ignore[union-attr]


def test_a_fitted_file_needs_no_second_fit(tmp_path: Path, fitted_short: Path) -> None:
    result = fit_audio_to_video(fitted_short, tmp_path / "again.mp4", tolerance_s=0)

    assert not result.changed
    assert result.audio_duration_before_s == result.video_duration_s == VIDEO_S
    assert files_in(tmp_path) == []


# --- other inputs -------------------------------------------------------------------------


def test_sample_rate_and_channel_layout_are_kept(
    tmp_path: Path, clip_dir: Path, video_only: Clip
) -> None:
    mono = mux_with_audio(
        video_only.path, clip_dir / "fit-mono48k.mp4", audio_s=3.2, rate=48_000, layout="mono"
    )
    out = tmp_path / "fitted.mp4"

    result = fit_audio_to_video(mono, out)

    assert result.padded_s == pytest.approx(0.8, abs=1e-6)
    audio = probe(out).audio
    assert audio is not None
    assert (audio.sample_rate, audio.channels, audio.channel_layout) == (48_000, 1, "mono")
    assert audio.duration_s == VIDEO_S
    decoded = decode_audio(out)
    assert 4 * 48_000 <= decoded.shape[1] < 4 * 48_000 + AAC_FRAME


def test_a_video_that_starts_late_is_moved_to_zero_with_its_audio(
    tmp_path: Path, clip_dir: Path, video_only: Clip
) -> None:
    # Without an edit list the B-frame delay shows: the video starts 2 frames (1/12 s) late,
    # and FFmpeg's muxer stretches the first audio packet (the priming) to keep the sync.
    late = mux_with_audio(
        video_only.path,
        clip_dir / "fit-no-editlist.mp4",
        audio_s=3.0,
        muxer_options={"use_editlist": "0"},
    )
    delay = Fraction(1, 12)
    with av.open(str(late)) as container:
        video: Any = container.streams.video[0]
        audio: Any = container.streams.audio[0]
        assert video.start_time * video.time_base == delay
        # The input audio on its own timeline: sample i at i / RATE.
        timeline = np.zeros((2, 5 * RATE), np.float32)
        frame: Any
        for frame in container.decode(audio):
            timeline[:, frame.pts : frame.pts + frame.samples] = frame.to_ndarray()
    out = tmp_path / "fitted.mp4"

    result = fit_audio_to_video(late, out)

    assert result.changed and result.video_duration_s == VIDEO_S
    info = probe(out)
    assert info.video is not None and info.audio is not None
    assert info.video.duration_s == info.audio.duration_s == VIDEO_S
    # The same packets, all timestamps moved by the same 1/12 s.
    source, copied = video_packets(late), video_packets(out)
    assert [p[0] for p in copied] == [p[0] for p in source]
    assert [(pts + delay, dts + delay) for _, pts, dts, _, _ in copied] == [
        (pts, dts) for _, pts, dts, _, _ in source
    ]
    # The audio moved with the video: what played at t plays at t - 1/12 s.
    fitted = decode_audio(out)
    offset = round(delay * RATE)
    original = timeline[:, offset : offset + 3 * RATE]
    fade = round(FADE_S * RATE)
    assert_same_content(original, fitted, 3 * RATE - fade - AAC_FRAME)


# --- the gateway's next step --------------------------------------------------------------


def test_extract_audio_works_on_the_fitted_file(tmp_path: Path, fitted_short: Path) -> None:
    info = extract_audio(fitted_short, tmp_path / "audio.m4a")

    assert (info.container, info.major_brand, info.has_video) == ("mp4", "M4A ", False)
    assert info.audio is not None
    assert (info.audio.codec, info.audio.sample_rate, info.audio.channels) == ("aac", RATE, 2)
    assert info.duration_s == VIDEO_S
    decoded = decode_audio(tmp_path / "audio.m4a")
    assert TARGET <= decoded.shape[1] < TARGET + AAC_FRAME


# --- errors: nothing is left behind -------------------------------------------------------


def test_garbage_is_unreadable_and_nothing_is_written(tmp_path: Path) -> None:
    garbage = tmp_path / "in" / "video.mp4"
    garbage.parent.mkdir()
    garbage.write_bytes(os.urandom(64 * 1024))
    out_dir = tmp_path / "out"
    out_dir.mkdir()

    with pytest.raises(MediaUnreadableError):
        fit_audio_to_video(garbage, out_dir / "fitted.mp4")

    assert files_in(out_dir) == []


def test_a_failure_while_writing_leaves_nothing_behind(
    tmp_path: Path, short_audio: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Overwrite a run of audio packets in the middle with noise: the file opens and measures
    # fine, the video copy starts, and the AAC decoder fails part way.
    damaged = tmp_path / "damaged.mp4"
    data = bytearray(short_audio.read_bytes())
    with av.open(str(short_audio)) as container:
        packets: list[Any] = [p for p in container.demux(container.streams.audio[0]) if p.size]
    rng = np.random.default_rng(5)
    for packet in packets[60:70]:
        data[packet.pos : packet.pos + packet.size] = rng.bytes(packet.size)
    damaged.write_bytes(bytes(data))
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    # The cleanup's witness: what was still beside the target when it was removed.
    removed: list[str] = []
    unlink = Path.unlink

    def witness(self: Path, missing_ok: bool = False) -> None:
        if self.parent == out_dir and self.exists():
            removed.append(self.name)
        unlink(self, missing_ok=missing_ok)

    with monkeypatch.context() as patched, pytest.raises(MediaUnreadableError, match="cannot fit"):
        patched.setattr(Path, "unlink", witness)
        fit_audio_to_video(damaged, out_dir / "fitted.mp4")

    # There was a temporary file beside the target, written when the failure came; it is gone.
    assert len(removed) == 1 and removed[0].startswith(".fitted.mp4.")
    assert files_in(out_dir) == []


def test_video_without_audio_is_refused(tmp_path: Path, mp4_without_audio: Clip) -> None:
    with pytest.raises(NoAudioStreamError):
        fit_audio_to_video(mp4_without_audio.path, tmp_path / "fitted.mp4")

    assert files_in(tmp_path) == []


def test_audio_without_video_is_refused(tmp_path: Path) -> None:
    m4a = tmp_path / "in" / "audio.m4a"
    m4a.parent.mkdir()
    write_sine(m4a, codec="aac", muxer="ipod", duration_s=2.0)
    out_dir = tmp_path / "out"
    out_dir.mkdir()

    with pytest.raises(MediaUnreadableError, match="no video stream"):
        fit_audio_to_video(m4a, out_dir / "fitted.mp4")

    assert files_in(out_dir) == []


def test_a_container_other_than_mp4_or_mov_is_refused(
    tmp_path: Path, webm_with_audio: Clip
) -> None:
    with pytest.raises(MediaError, match="only MP4/MOV"):
        fit_audio_to_video(webm_with_audio.path, tmp_path / "fitted.mp4", tolerance_s=0)

    assert files_in(tmp_path) == []


def test_a_video_codec_mp4_cannot_carry_is_refused(tmp_path: Path, clip_dir: Path) -> None:
    prores = make_bouncing_square(
        clip_dir / "fit-prores.mov",
        duration_s=1.0,
        container="mov",
        codec="prores_ks",
        pix_fmt="yuv422p10le",
    )
    source = mux_with_audio(prores.path, tmp_path / "prores-short.mov", audio_s=0.5)
    out_dir = tmp_path / "out"
    out_dir.mkdir()

    with pytest.raises(MediaError, match="cannot be copied into an MP4"):
        fit_audio_to_video(source, out_dir / "fitted.mp4")

    assert files_in(out_dir) == []


def test_a_missing_file_is_not_found(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        fit_audio_to_video(tmp_path / "nope.mp4", tmp_path / "fitted.mp4")


# --- fitted, measured and its audio copied out, opening the file once ---------------------


@pytest.mark.parametrize("clip_name", ["equal_audio", "short_audio", "long_audio"])
def test_fit_measure_extract_gives_what_the_three_steps_give(
    tmp_path: Path, request: pytest.FixtureRequest, clip_name: str
) -> None:
    clip: Path = request.getfixturevalue(clip_name)
    apart, together = tmp_path / "apart", tmp_path / "together"
    apart.mkdir()
    together.mkdir()
    fit = fit_audio_to_video(clip, apart / "fitted.mp4")
    kept = apart / "fitted.mp4" if fit.changed else clip
    media = probe(kept)
    audio = extract_audio(kept, apart / "audio.m4a")

    made = fit_measure_extract(clip, together / "fitted.mp4", together / "audio.m4a")

    assert made.fit == fit and made.fit.changed is (clip_name != "equal_audio")
    assert made.path == (together / "fitted.mp4" if fit.changed else clip)
    assert made.media == media
    assert made.audio == audio
    # the same M4A, packet for packet
    assert audio_packets(together / "audio.m4a") == audio_packets(apart / "audio.m4a")
    assert (together / "audio.m4a").read_bytes() == (apart / "audio.m4a").read_bytes()
    assert sorted(files_in(together)) == sorted(files_in(apart))


def test_fit_measure_extract_refuses_what_the_steps_refuse(
    tmp_path: Path, video_only: Clip, clip_dir: Path
) -> None:
    with pytest.raises(NoAudioStreamError):
        fit_measure_extract(video_only.path, tmp_path / "f.mp4", tmp_path / "a.m4a")
    cut = clip_dir / "fit-equal-cut.mp4"
    whole = (clip_dir / "fit-equal.mp4").read_bytes()
    cut.write_bytes(whole[: len(whole) * 2 // 3])
    with pytest.raises(MediaUnreadableError) as apart:
        probe(cut)
    with pytest.raises(MediaUnreadableError) as together:
        fit_measure_extract(cut, tmp_path / "f.mp4", tmp_path / "a.m4a")
    assert str(together.value) == str(apart.value)
    assert files_in(tmp_path) == []
