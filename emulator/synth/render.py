"""Turn a VideoAnalysis into a stereo foley track that stays in sync with the picture."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping

import numpy as np
from scipy.signal import lfilter

from emulator.synth.analysis import VideoAnalysis
from emulator.synth.voices import (
    Preset,
    music_bed,
    preset_continuous,
    preset_hit,
    room_tone,
)

# Mean frame difference (per 1/24 s, 0..1) that counts as vigorous motion; the bouncing-square
# test clip sits around a third of it.
_MOTION_FULL_SCALE = 0.04
_ENVELOPE_SMOOTHING_S = 0.05
_PAN_SMOOTHING_S = 0.08
# Keep sources off the extreme edges: hard-panned foley sounds wrong on headphones.
_PAN_WIDTH = 0.8
_PEAK_TARGET = 10 ** (-1 / 20)
# Peak normalisation would lift a silent scene's room tone to -1 dBFS; cap the make-up gain
# so a still video stays quiet (room tone lands near -40 dBFS RMS).
_MAX_GAIN = 4.0
_FADE_S = 0.010
_HIT_GAIN: dict[Preset, float] = {
    "impacts": 1.0,
    "footsteps": 1.0,
    "rain": 0.7,
    "engine": 0.6,
    "glass": 0.9,
    "metal": 0.9,
    "water": 0.9,
}
# Earliest match in the prompt wins, so "footsteps in the rain" is footsteps.
_PRESET_WORDS: dict[Preset, re.Pattern[str]] = {
    "footsteps": re.compile(
        r"\b(foot ?steps?|steps?|walk\w*|run|runs|running|stomp\w*|boots?|heels?|jog\w*)\b"
    ),
    "rain": re.compile(r"\b(rain\w*|drizzl\w*|storm\w*|downpour\w*|thunder\w*)\b"),
    "engine": re.compile(
        r"\b(engines?|cars?|motor\w*|trucks?|tires?|tyres?|vehicles?|race|races|racing|drag"
        r"|drift\w*|revs?|revving|accelerat\w*|traffic)\b"
    ),
    "glass": re.compile(r"\b(glass\w*|shatter\w*|clink\w*|crystal\w*)\b"),
    "metal": re.compile(r"\b(metal\w*|clang\w*|steel|iron|anvils?|chains?|bells?|hammer\w*)\b"),
    "water": re.compile(
        r"\b(water\w*|splash\w*|rivers?|streams?|ocean\w*|waves?|pour\w*|drip\w*|bubbl\w*"
        r"|swim\w*)\b"
    ),
}


def preset_for_prompt(prompt: str) -> Preset:
    """The sound family a prompt asks for; "impacts" when no known word appears."""
    text = prompt.lower()
    best: tuple[int, Preset] | None = None
    for preset, pattern in _PRESET_WORDS.items():
        match = pattern.search(text)
        if match and (best is None or match.start() < best[0]):
            best = (match.start(), preset)
    return best[1] if best else "impacts"


def render_audio(
    a: VideoAnalysis,
    *,
    prompt: str = "",
    music_prompt: str | None = None,
    asmr: bool = False,
    seed: int | None = None,
    sample_rate: int = 44100,
    params: Mapping[str, object] | None = None,
) -> np.ndarray:
    """Float32 stereo PCM of shape (2, round(duration_s * sample_rate)), peak about -1 dBFS.

    Same inputs give bit-identical output; `seed`, the prompts, `asmr` and `params` all feed
    the random stream, so changing any of them changes the sound. `params` has no other
    effect: it stands in for model knobs (steps, guidance) the DSP does not have.
    """
    n = round(a.duration_s * sample_rate)
    if n <= 0:
        return np.zeros((2, 0), dtype=np.float32)
    rng = np.random.default_rng(_seed(a, prompt, music_prompt, asmr, seed, params))
    preset = preset_for_prompt(prompt)
    sample_times = np.arange(n) / sample_rate

    envelope = _motion_envelope(a, sample_times, sample_rate)
    pan = _pan_curve(a, sample_times, sample_rate)
    mix = room_tone(rng, n, sample_rate)
    mix += _pan(preset_continuous(preset, rng, envelope, sample_rate, asmr=asmr), pan)
    _add_hits(mix, a, preset, rng, sample_rate, asmr=asmr)
    if music_prompt:
        mix += music_bed(music_prompt, n, sample_rate)
    return _master(mix, sample_rate)


def _seed(
    a: VideoAnalysis,
    prompt: str,
    music_prompt: str | None,
    asmr: bool,
    seed: int | None,
    params: Mapping[str, object] | None,
) -> int:
    material = json.dumps(
        [a.digest, prompt, music_prompt, asmr, seed, sorted((params or {}).items())],
        default=repr,
    )
    return int.from_bytes(hashlib.sha256(material.encode()).digest()[:16], "big")


def _motion_envelope(a: VideoAnalysis, sample_times: np.ndarray, sr: int) -> np.ndarray:
    """Motion energy (0..1) per sample. motion[k] describes frames k-1..k, so it is placed
    at their midpoint, then smoothed so frame-rate steps never turn into zipper noise."""
    if len(a.frame_times) < 2:
        return np.zeros(len(sample_times))
    midpoints = (a.frame_times[1:] + a.frame_times[:-1]) / 2
    level = np.clip(a.motion[1:] / _MOTION_FULL_SCALE, 0.0, 1.0) ** 0.7
    return _smooth(np.interp(sample_times, midpoints, level), _ENVELOPE_SMOOTHING_S, sr)


def _pan_curve(a: VideoAnalysis, sample_times: np.ndarray, sr: int) -> np.ndarray:
    """-1 (left) .. 1 (right) per sample, following the centroid's x position."""
    if len(a.frame_times) == 0:
        return np.zeros(len(sample_times))
    x = np.interp(sample_times, a.frame_times, a.centroid_x)
    return _smooth(np.clip((x - 0.5) * 2 * _PAN_WIDTH, -1.0, 1.0), _PAN_SMOOTHING_S, sr)


def _add_hits(
    mix: np.ndarray,
    a: VideoAnalysis,
    preset: Preset,
    rng: np.random.Generator,
    sr: int,
    *,
    asmr: bool,
) -> None:
    if len(a.impacts_s) == 0:
        return
    strength = (
        a.impact_strength
        if len(a.impact_strength) == len(a.impacts_s)
        else np.ones(len(a.impacts_s))
    )
    relative = (strength / max(float(strength.max()), 1e-9)) ** 0.7
    # ASMR compresses the range so the small hits come forward too.
    levels = (0.7 + 0.3 * relative) if asmr else (0.45 + 0.55 * relative)
    pans = np.interp(a.impacts_s, a.frame_times, a.centroid_x) if len(a.frame_times) else None
    n = mix.shape[1]
    for i, instant in enumerate(a.impacts_s):
        start = round(float(instant) * sr)
        if not 0 <= start < n:
            continue
        hit = preset_hit(preset, rng, sr, asmr=asmr) * (levels[i] * _HIT_GAIN[preset])
        hit = hit[: n - start]
        position = 0.0 if pans is None else float(np.clip((pans[i] - 0.5) * 2 * _PAN_WIDTH, -1, 1))
        left, right = _pan_gains(np.array(position))
        mix[0, start : start + len(hit)] += float(left) * hit
        mix[1, start : start + len(hit)] += float(right) * hit


def _pan(mono: np.ndarray, pan: np.ndarray) -> np.ndarray:
    left, right = _pan_gains(pan)
    return np.stack([mono * left, mono * right])


def _pan_gains(pan: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Equal-power panning: loudness stays constant as a source crosses the image."""
    angle = (pan + 1.0) * (np.pi / 4)
    return np.cos(angle) * np.sqrt(2), np.sin(angle) * np.sqrt(2)


def _smooth(x: np.ndarray, seconds: float, sr: int) -> np.ndarray:
    pole = np.exp(-1.0 / (seconds * sr))
    return lfilter([1 - pole], [1, -pole], x, zi=[pole * x[0]])[0] if len(x) else x


def _master(mix: np.ndarray, sr: int) -> np.ndarray:
    """Soft clip, peak-normalise to -1 dBFS (gain capped), 10 ms fades, float32."""
    shaped = np.tanh(mix)
    peak = float(np.max(np.abs(shaped)))
    shaped *= min(_PEAK_TARGET / peak, _MAX_GAIN) if peak > 0 else 1.0
    n = shaped.shape[1]
    fade = min(round(_FADE_S * sr), n // 4)
    if fade > 0:
        ramp = np.sin(np.linspace(0.0, np.pi / 2, fade)) ** 2
        shaped[:, :fade] *= ramp
        shaped[:, n - fade :] *= ramp[::-1]
    return shaped.astype(np.float32)
