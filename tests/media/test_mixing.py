"""`audio_mode`: mix keeps the video's own track intact under the generated sound, ducked where
the original is loud; replace drops it; generated_only writes the audio alone."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from app.media import (
    AudioFormat,
    AudioMode,
    MixSettings,
    Segment,
    SegmentAudio,
    build_soundtrack,
    probe,
)
from app.media.mixing import Ducker, mix_blocks
from app.media.pcm import PcmFormat, track_blocks
from app.media.stitch import stitch_blocks
from tests.media.conftest import decode_audio
from tests.support.soundtrack_clips import (
    SceneClip,
    impulse_track,
    make_scene_clip,
    speechlike_track,
    write_audio,
)

RATE = 48_000
PCM = PcmFormat(RATE, 2)
SETTINGS = MixSettings()


def correlation(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a.ravel(), b.ravel())[0, 1])


def test_quiet_original_leaves_the_generated_sound_alone_and_loud_one_ducks_it() -> None:
    ducker = Ducker(PCM, SETTINGS)
    silence = np.zeros((2, RATE), np.float32)
    loud = np.full((2, RATE), 0.3, np.float32)  # -10 dBFS, far past threshold + knee

    assert ducker.gains(silence).min() == 1.0
    gains = ducker.gains(loud)
    # Down by the full depth within the attack (a few time constants), smoothly.
    reached = np.flatnonzero(gains <= 10 ** (-(SETTINGS.duck_db - 0.5) / 20))[0]
    assert reached < 0.1 * RATE
    assert gains[-1] == pytest.approx(10 ** (-SETTINGS.duck_db / 20), rel=1e-3)
    assert np.abs(np.diff(gains)).max() < 5e-3  # a click would be a step of ~0.75
    # And back up, more slowly than it went down.
    released = ducker.gains(silence)
    assert np.flatnonzero(released >= 10 ** (-0.5 / 20))[0] > 2 * reached


def test_the_mix_minus_the_ducked_stem_is_the_original() -> None:
    original = speechlike_track(6.0, RATE, seed=1)
    generated = impulse_track(6.0, RATE, [0.5, 1.5, 2.5, 3.5], seed=2, bed_db=-20)
    blocks = [
        (original[:, i : i + RATE], generated[:, i : i + RATE]) for i in range(0, 6 * RATE, RATE)
    ]

    mixed = np.concatenate(
        list(
            mix_blocks((o for o, _ in blocks), (g for _, g in blocks), pcm=PCM, settings=SETTINGS)
        ),
        axis=1,
    )
    ducker = Ducker(PCM, SETTINGS)
    stem = np.concatenate(
        [g * 10 ** (SETTINGS.generated_gain_db / 20) * ducker.gains(o) for o, g in blocks], axis=1
    )

    np.testing.assert_allclose(mixed - stem, original, atol=1e-6)


@pytest.fixture(scope="module")
def generated_30s(
    tmp_path_factory: pytest.TempPathFactory, dialogue_clip_30s: SceneClip
) -> list[SegmentAudio]:
    """Two overlapping segments' sound, with hits on the clip's impacts."""
    directory = tmp_path_factory.mktemp("generated")
    plan = [Segment(0.0, 15.5), Segment(14.5, 30.0)]
    tracks = []
    for i, segment in enumerate(plan):
        inside = [
            t - segment.start_s
            for t in dialogue_clip_30s.impacts
            if segment.start_s <= t < segment.end_s
        ]
        audio = impulse_track(segment.duration_s, RATE, inside, seed=10 + i, bed_db=-30)
        tracks.append(
            SegmentAudio(
                segment,
                write_audio(directory / f"{i}.wav", audio, RATE, codec="pcm_f32le", muxer="wav"),
            )
        )
    return tracks


def test_in_mix_the_original_track_is_intact_under_the_generated_sound(
    tmp_path: Path, dialogue_clip_30s: SceneClip, generated_30s: list[SegmentAudio]
) -> None:
    out = tmp_path / "mixed.mov"

    result = build_soundtrack(
        dialogue_clip_30s.path, generated_30s, out, mode=AudioMode.MIX, audio_format=AudioFormat.WAV
    )

    assert result.mode is AudioMode.MIX and result.gain_db is not None
    audio, rate = decode_audio(out)
    frames = 30 * RATE
    assert rate == RATE and audio.shape == (2, frames)
    # The generated stem as it went in: stitched, turned down, ducked by the original (the
    # original decoded from the clip, as the gateway reads it), then the loudness gain.
    original = np.concatenate(
        list(track_blocks(dialogue_clip_30s.path, PCM, frames=frames)), axis=1
    )
    stitched = np.concatenate(list(stitch_blocks(generated_30s, duration_s=30.0, pcm=PCM)), axis=1)
    ducker = Ducker(PCM, SETTINGS)
    ducking = np.concatenate(
        [ducker.gains(original[:, i : i + RATE]) for i in range(0, frames, RATE)]
    )
    stem = (
        stitched * 10 ** (SETTINGS.generated_gain_db / 20) * ducking * 10 ** (result.gain_db / 20)
    )

    assert correlation(audio - stem, original) >= 0.95
    # The ducking did act: in the dialogue the generated sound was turned well down.
    speaking = np.abs(original).max(axis=0) > 0.05
    assert ducking[speaking].mean() < 10 ** (-6 / 20) < ducking[~speaking].mean()
    # The original alone (what "replace" would have lost) is far less like the output.
    assert correlation(audio, original) < correlation(audio - stem, original)


def test_replace_drops_the_original_track(
    tmp_path: Path, dialogue_clip_30s: SceneClip, generated_30s: list[SegmentAudio]
) -> None:
    out = tmp_path / "replaced.mp4"

    build_soundtrack(dialogue_clip_30s.path, generated_30s, out, audio_format=AudioFormat.FLAC)

    audio, _ = decode_audio(out)
    original = np.concatenate(
        list(track_blocks(dialogue_clip_30s.path, PCM, frames=30 * RATE)), axis=1
    )
    assert abs(correlation(audio[:, : 30 * RATE], original)) < 0.05


def test_mix_on_a_video_without_sound_is_replace(tmp_path: Path) -> None:
    clip = make_scene_clip(tmp_path / "silent.mp4", shots=(5.0,))
    sound = write_audio(
        tmp_path / "g.wav",
        impulse_track(5.0, RATE, [1.0], seed=1),
        RATE,
        codec="pcm_f32le",
        muxer="wav",
    )

    result = build_soundtrack(
        clip.path, [SegmentAudio(Segment(0.0, 5.0), sound)], tmp_path / "o.mp4", mode=AudioMode.MIX
    )

    assert result.mode is AudioMode.REPLACE
    assert probe(tmp_path / "o.mp4").has_audio


def test_generated_only_writes_the_audio_file_alone(
    tmp_path: Path, dialogue_clip_30s: SceneClip, generated_30s: list[SegmentAudio]
) -> None:
    out = tmp_path / "sound.mp3"

    build_soundtrack(
        dialogue_clip_30s.path,
        generated_30s,
        out,
        mode=AudioMode.GENERATED_ONLY,
        audio_format=AudioFormat.MP3,
    )

    info = probe(out)
    assert (info.container, info.has_video) == ("mp3", False)
    assert info.audio is not None and info.audio.codec == "mp3"
    assert info.duration_s == pytest.approx(30.0, abs=0.03)
