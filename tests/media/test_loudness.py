"""Loudness: the streamed BS.1770 meter against pyloudnorm, the true-peak limiter, and whole
soundtracks landing on the target (checked with pyloudnorm and scipy, not with app.media)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyloudnorm
import pytest

from app.media import (
    AudioFormat,
    AudioMode,
    LoudnessTarget,
    Segment,
    SegmentAudio,
    build_soundtrack,
)
from app.media.loudness import LoudnessMeter, limiter_curve, plan_gain
from app.media.pcm import PcmFormat
from tests.media.conftest import decode_audio, true_peak_dbtp
from tests.support.soundtrack_clips import (
    SceneClip,
    impulse_track,
    make_scene_clip,
    speechlike_track,
    write_audio,
)

RATE = 48_000


def measure(audio: np.ndarray, rate: int = RATE) -> LoudnessMeter:
    meter = LoudnessMeter(PcmFormat(rate, audio.shape[0]))
    for first in range(0, audio.shape[1], rate):
        meter.push(audio[:, first : first + rate])
    return meter


def foley(seconds: float, *, seed: int) -> np.ndarray:
    """Hits on a bed, over a slow dialogue-like layer: something with peaks and pauses."""
    hits = impulse_track(seconds, RATE, list(np.arange(0.3, seconds, 0.7)), seed=seed, bed_db=-30)
    return hits + 0.5 * speechlike_track(seconds, RATE, seed=seed)


@pytest.mark.parametrize("rate", [48_000, 44_100, 16_000])
def test_the_streamed_meter_reads_what_pyloudnorm_reads(rate: int) -> None:
    rng = np.random.default_rng(rate)
    t = np.arange(12 * rate) / rate
    audio = np.stack(
        [0.2 * np.sin(2 * np.pi * 440 * t) * (t % 3 < 2), 0.05 * rng.standard_normal(t.size)]
    )
    audio[:, 4 * rate : 6 * rate] = 0  # silence, for the gates to drop

    ours = measure(audio.astype(np.float32), rate).result().integrated_lufs

    assert ours == pytest.approx(pyloudnorm.Meter(rate).integrated_loudness(audio.T), abs=0.05)


def test_a_full_scale_1khz_sine_is_minus_3_lufs_and_0_dbtp() -> None:
    sine = np.sin(2 * np.pi * 997 * np.arange(5 * RATE) / RATE).astype(np.float32)[None, :]

    result = measure(sine).result()

    # BS.1770's calibration: a 0 dBFS sine in one channel reads -3.01 LKFS.
    assert result.integrated_lufs == pytest.approx(-3.01, abs=0.06)
    assert result.true_peak_dbtp == pytest.approx(0.0, abs=0.05)


def test_the_true_peak_sees_between_the_samples() -> None:
    # A quarter-rate sine sampled at 45 degrees: every sample at 0.707, the wave at 1.0.
    sine = np.sin(np.pi / 2 * np.arange(RATE) + np.pi / 4).astype(np.float32)[None, :]

    result = measure(sine).result()

    assert 20 * np.log10(np.abs(sine).max()) == pytest.approx(-3.01, abs=0.01)
    assert result.true_peak_dbtp == pytest.approx(0.0, abs=0.2)


def test_the_limiter_holds_every_peak_and_leaves_the_rest_alone() -> None:
    peaks = np.full(2000, 0.3)
    peaks[[500, 501, 1500]] = [2.0, 1.5, 4.0]

    gains = limiter_curve(peaks, ceiling=0.9, chunk_s=0.001)

    assert (peaks * gains <= 0.9 + 1e-6).all()
    # A neighbour of a peak is held too (the gain is interpolated between chunks).
    assert gains[499] * 2.0 <= 0.9 + 1e-6 and gains[1501] * 4.0 <= 0.9 + 1e-6
    # Away from the peaks, the gain is 1.
    assert (gains[:480] == 1).all() and (gains[600:1480] == 1).all() and (gains[1560:] == 1).all()


def test_silence_is_left_as_it_is() -> None:
    plan = plan_gain(measure(np.zeros((2, 3 * RATE), np.float32)).result(), LoudnessTarget())

    assert plan.gain_db == 0.0
    assert (plan.gains(0, RATE) == 1).all()


@pytest.fixture(scope="module")
def clip_10s(clip_dir: Path) -> SceneClip:
    return make_scene_clip(clip_dir / "loudness-10s.mp4", shots=(10.0,))


@pytest.mark.parametrize(
    ("level_db", "target_lufs", "audio_format"),
    [
        (-30.0, -16.0, AudioFormat.WAV),  # quiet
        (-30.0, -23.0, AudioFormat.WAV),
        (0.0, -16.0, AudioFormat.WAV),  # loud: peaks at full scale
        (0.0, -23.0, AudioFormat.FLAC),
        (0.0, -16.0, AudioFormat.AAC),
        (0.0, -16.0, AudioFormat.MP3),
        (0.0, -16.0, AudioFormat.OPUS),
        (-30.0, -16.0, AudioFormat.AAC),
    ],
)
def test_the_output_lands_on_the_target_with_its_true_peak_under_minus_1_dbtp(
    tmp_path: Path,
    clip_10s: SceneClip,
    level_db: float,
    target_lufs: float,
    audio_format: AudioFormat,
) -> None:
    sound = foley(10.0, seed=3)
    sound *= 10 ** (level_db / 20) / np.abs(sound).max()
    generated = write_audio(tmp_path / "generated.wav", sound, RATE, codec="pcm_f32le", muxer="wav")
    out = tmp_path / f"out.{audio_format}"

    result = build_soundtrack(
        clip_10s.path,
        [SegmentAudio(Segment(0.0, 10.0), generated)],
        out,
        mode=AudioMode.GENERATED_ONLY,
        audio_format=audio_format,
        loudness=LoudnessTarget(integrated_lufs=target_lufs),
    )

    audio, rate = decode_audio(out)
    assert pyloudnorm.Meter(rate).integrated_loudness(audio.T) == pytest.approx(
        target_lufs, abs=1.0
    )
    assert true_peak_dbtp(audio) <= -1.0
    assert result.expected_lufs == pytest.approx(target_lufs, abs=0.1)
