"""analyze_video / describe_video against real clips whose ground truth is analytic."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import av
import numpy as np
import pytest

from emulator.synth import VideoDecodeError, analyze_video, describe_video, encode_audio
from tests.support.clips import Clip, make_bouncing_square, make_static_clip

# Analysis places hits between frames by path intersection; at 10-60 fps it lands within a
# few ms of the truth (see the clip docstring), 20 ms leaves room for codec noise.
IMPACT_TOLERANCE_S = 0.020


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("analysis-clips")


@pytest.mark.parametrize(
    ("name", "options"),
    [
        ("mp4-24fps.mp4", {"container": "mp4"}),
        ("mov.mov", {"container": "mov"}),
        ("vp8.webm", {"container": "webm"}),
        ("mkv-30fps.mkv", {"container": "mkv", "fps": 30}),
        ("mpeg4.avi", {"container": "avi"}),
        ("12fps.mp4", {"fps": 12}),
        ("60fps.mp4", {"fps": 60}),
        ("vfr.mp4", {"vfr": True}),
        ("grainy.mp4", {"grain": 4.0}),
    ],
)
def test_impacts_land_on_the_true_bounce_times(
    clips: Path, name: str, options: dict[str, object]
) -> None:
    clip = make_bouncing_square(clips / name, **options)  # type: ignore[arg-type]

    found = analyze_video(clip.path).impacts_s

    truth = np.array(clip.impact_times)
    misses = [t for t in truth if np.min(np.abs(found - t)) > IMPACT_TOLERANCE_S]
    extras = [t for t in found if np.min(np.abs(truth - t)) > IMPACT_TOLERANCE_S]
    assert misses == [], f"impacts not found: {misses}, found {found}"
    assert extras == [], f"spurious impacts: {extras}"


def test_geometry_duration_rate_and_audio_are_reported(clips: Path) -> None:
    clip = make_bouncing_square(clips / "with-audio.mp4", with_audio=True, fps=25)

    a = analyze_video(clip.path)

    assert (a.width, a.height) == (320, 240)
    assert a.fps == pytest.approx(25.0)
    assert a.duration_s == pytest.approx(clip.duration_s, abs=1e-6)
    assert a.has_audio is True
    assert len(a.frame_times) == len(a.motion) == len(a.centroid_x) == 100
    assert np.allclose(a.frame_times, clip.frame_times, atol=1e-6)
    assert 0.0 < a.mean_brightness < 0.2  # a small bright square on a dark ground
    assert a.motion_mean > 0.005


def test_variable_frame_rate_uses_real_timestamps(clips: Path) -> None:
    clip = make_bouncing_square(clips / "vfr-times.mp4", vfr=True)

    a = analyze_video(clip.path)

    assert np.allclose(a.frame_times, clip.frame_times, atol=1e-6)
    # The last frame's length comes from the MP4 time base (1/16000 here), not from 1 ms ticks.
    assert a.duration_s == pytest.approx(clip.duration_s, abs=1e-3)


def test_odd_frame_size_is_analysed(clips: Path) -> None:
    clip = make_bouncing_square(clips / "odd.mp4", width=321, height=241, pix_fmt="yuv444p")

    a = analyze_video(clip.path)

    assert (a.width, a.height) == (321, 241)
    assert len(a.impacts_s) == len(clip.impact_times)


@pytest.mark.parametrize("frames", [1, 2, 5])
def test_very_short_video_is_analysed(clips: Path, frames: int) -> None:
    clip = make_bouncing_square(clips / f"short-{frames}.mp4", duration_s=frames / 24)

    a = analyze_video(clip.path)

    assert a.duration_s == pytest.approx(frames / 24, abs=1e-6)
    assert len(a.frame_times) == frames
    assert len(a.impacts_s) == 0


def test_static_video_has_no_motion_and_no_impacts(clips: Path) -> None:
    clip = make_static_clip(clips / "static.mp4")

    a = analyze_video(clip.path)

    assert a.motion_mean < 1e-4
    assert len(a.impacts_s) == 0
    assert a.duration_s == pytest.approx(4.0, abs=1e-6)


@pytest.mark.parametrize(
    ("container", "suffix", "expected"),
    [
        ("mp4", ".mp4", "mp4"),
        ("mov", ".mov", "mov"),
        ("mov", ".mp4", "mov"),  # a QuickTime file named .mp4 is still QuickTime
        ("webm", ".mp4", "webm"),  # a WebM renamed .mp4 must not pass as MP4
        ("mkv", ".mp4", "matroska"),
        ("avi", ".mp4", "avi"),
    ],
)
def test_container_is_named_from_content_not_extension(
    clips: Path, container: str, suffix: str, expected: str
) -> None:
    made = make_bouncing_square(clips / f"named.{container}", container=container, duration_s=0.5)  # type: ignore[arg-type]
    renamed = clips / f"renamed-{container}{suffix}"
    shutil.copyfile(made.path, renamed)

    a = analyze_video(renamed)

    assert a.container == expected
    family = {"mp4": "mov,", "mov": "mov,", "webm": "matroska", "matroska": "matroska"}
    assert a.format_name.startswith(family.get(expected, expected))


def test_unreadable_inputs_raise_video_decode_error(clips: Path) -> None:
    text = clips / "notes.mp4"
    text.write_text("this is not a video\n" * 50)
    empty = clips / "empty.mp4"
    empty.write_bytes(b"")
    truncated = clips / "truncated.mp4"
    whole = make_bouncing_square(clips / "whole.mp4", duration_s=1.0).path.read_bytes()
    truncated.write_bytes(whole[:1500])  # no moov box: the header never arrives
    audio_only = clips / "tone.wav"
    encode_audio(np.zeros((2, 4410), np.float32), 44100, audio_only, "wav")
    cover_art = write_mp3_with_cover_art(clips / "song.mp3")
    still = write_png(clips / "still.mp4")  # an image, misnamed

    for path in (text, empty, truncated, audio_only, cover_art, still, clips / "missing.mp4"):
        with pytest.raises(VideoDecodeError):
            analyze_video(path)
    assert issubclass(VideoDecodeError, ValueError)


def write_mp3_with_cover_art(path: Path) -> Path:
    """An MP3 with an embedded picture, which FFmpeg lists as a one-frame video stream."""
    with av.open(str(path), "w", format="mp3") as out:
        audio = out.add_stream("libmp3lame", rate=44100, layout="stereo")
        picture = out.add_stream("mjpeg")
        picture.width, picture.height, picture.pix_fmt = 64, 64, "yuvj420p"
        still = av.VideoFrame.from_ndarray(np.full((64, 64, 3), 90, np.uint8), format="rgb24")
        out.mux(picture.encode(still.reformat(format="yuvj420p")) + picture.encode(None))
        tone = np.zeros((2, 1152), np.float32)
        frame = av.AudioFrame.from_ndarray(tone, format="fltp", layout="stereo")
        frame.sample_rate, frame.pts = 44100, 0
        out.mux(audio.encode(frame) + audio.encode(None))
    return path


def write_png(path: Path) -> Path:
    image = av.VideoFrame.from_ndarray(np.full((48, 64), 128, np.uint8), format="gray")
    with av.open(str(path), "w", format="image2") as out:
        stream = out.add_stream("png")
        stream.width, stream.height, stream.pix_fmt = 64, 48, "gray"
        out.mux(stream.encode(image) + stream.encode(None))
    return path


def test_analysis_is_deterministic_and_digest_is_the_file_sha256(clips: Path) -> None:
    clip = make_bouncing_square(clips / "digest.mp4", duration_s=1.0)

    first, second = analyze_video(clip.path), analyze_video(clip.path)

    assert first.digest == hashlib.sha256(clip.path.read_bytes()).hexdigest()
    assert first.digest == second.digest
    assert np.array_equal(first.impacts_s, second.impacts_s)
    assert np.array_equal(first.motion, second.motion)
    assert not first.motion.flags.writeable


@pytest.fixture(scope="module")
def described(clips: Path) -> dict[str, str]:
    made: dict[str, Clip] = {
        "moving": make_bouncing_square(clips / "d-moving.mp4"),
        "dark": make_static_clip(clips / "d-dark.mp4", brightness=20),
        "bright": make_static_clip(clips / "d-bright.mp4", brightness=220),
    }
    return {name: describe_video(analyze_video(clip.path)) for name, clip in made.items()}


def test_describe_video_is_deterministic(clips: Path, described: dict[str, str]) -> None:
    again = describe_video(analyze_video(clips / "d-moving.mp4"))

    assert again == described["moving"]
    for sentence in described.values():
        assert sentence[0].isupper() and sentence.endswith(".")


def test_describe_video_tells_dark_from_bright_and_still_from_moving(
    described: dict[str, str],
) -> None:
    assert described["dark"] != described["bright"]
    assert "dark" in described["dark"]
    assert "bright" in described["bright"]
    assert described["moving"] != described["dark"]
    assert "impacts" in described["moving"]
    assert "no motion" in described["dark"] and "no motion" not in described["moving"]
