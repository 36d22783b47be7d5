"""The sounds themselves: one continuous layer and one hit per preset, a room tone and a
music bed. Everything is mono unless it says stereo; render.py places and pans it.

Levels are nominal: a full-strength hit peaks at 1.0 and the mastering stage scales the sum.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from functools import lru_cache
from typing import Literal

import numpy as np
from scipy.signal import butter, lfilter, sosfilt

Preset = Literal["impacts", "footsteps", "rain", "engine", "glass", "metal", "water"]

# Nominal RMS of the continuous layer at full motion: about 20 dB under a hit so transients
# stay clearly on top and a quiet scene does not turn into a wall of noise.
_CONTINUOUS_LEVEL = 0.1
# Room tone around -52 dBFS RMS before mastering: audible on headphones, never digital zero.
_ROOM_TONE_RMS = 0.0025
_HIT_SECONDS = 0.6
# Whoosh cutoff update period: ~23 ms, about one video frame.
_FILTER_BLOCK = 1024
# Chord roots for the music bed, F2..E3: low enough to sit under the foley.
_MUSIC_ROOTS_HZ = (98.0, 110.0, 130.81, 146.83, 164.81, 87.31)


def preset_continuous(
    preset: Preset, rng: np.random.Generator, envelope: np.ndarray, sr: int, *, asmr: bool
) -> np.ndarray:
    """The layer that follows motion energy (0..1 per sample)."""
    layer = _CONTINUOUS[preset](rng, envelope, sr)
    if asmr:
        # ASMR is close-miked detail: the wash steps back, tiny crackles follow the motion.
        layer = 0.5 * layer + _crackle(rng, envelope, sr)
    return layer


def preset_hit(preset: Preset, rng: np.random.Generator, sr: int, *, asmr: bool) -> np.ndarray:
    """One hit, peak-normalised to 1, starting with its transient at sample 0."""
    t = np.arange(round(_HIT_SECONDS * sr)) / sr
    # ASMR: shorter, brighter, smaller objects.
    decay = 0.5 if asmr else 1.0
    hit = _HITS[preset](rng, t, sr, decay)
    if asmr:
        click = _decaying_noise(rng, t, sr, "highpass", 4000.0, 0.0015)
        hit = hit + 0.6 * click / _peak(click)
    return hit / _peak(hit)


def room_tone(rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
    """Stereo (2, n) pinkish noise, independent per channel like a real room."""
    white = rng.standard_normal((2, n))
    warm = sosfilt(_sos("lowpass", 500.0, sr), white, axis=-1)
    # Mostly low rumble with a little air on top: roughly pink, like HVAC and traffic.
    tone = warm / _rms(warm) + 0.15 * white
    return tone * (_ROOM_TONE_RMS / _rms(tone))


def music_bed(music_prompt: str, n: int, sr: int) -> np.ndarray:
    """Stereo (2, n): a few sine partials of a chord picked from the prompt, slow envelope.

    The chord depends only on the prompt text, so the same prompt always sounds the same.
    """
    words = music_prompt.lower()
    digest = hashlib.sha256(music_prompt.encode()).digest()
    root = _MUSIC_ROOTS_HZ[digest[0] % len(_MUSIC_ROOTS_HZ)]
    if any(w in words for w in ("sad", "dark", "tense", "horror", "mystery", "night", "intense")):
        intervals = (0, 3, 7, 12)
    elif any(w in words for w in ("happy", "bright", "upbeat", "joy", "sunny", "cheer")):
        intervals = (0, 4, 7, 12)
    else:
        intervals = ((0, 3, 7, 12), (0, 4, 7, 12), (0, 5, 7, 12))[digest[1] % 3]
    t = np.arange(n) / sr
    bed = np.zeros((2, n))
    for i, semitones in enumerate(intervals):
        freq = root * 2 ** (semitones / 12)
        level = 1.0 / (1.0 + 0.5 * i)
        # A fraction of a hertz between channels gives width without a phasey centre.
        bed[0] += level * np.sin(2 * np.pi * (freq - 0.15) * t)
        bed[1] += level * np.sin(2 * np.pi * (freq + 0.15) * t)
    fade = min(1.5, n / sr / 4)
    rise = np.clip(t / fade, 0, 1) if fade > 0 else np.ones(n)
    fall = np.clip((t[-1] - t) / fade, 0, 1) if fade > 0 and n else np.ones(n)
    swell = 0.85 + 0.15 * np.sin(2 * np.pi * 0.12 * t)
    total_level = sum(1.0 / (1.0 + 0.5 * i) for i in range(len(intervals)))
    return (0.12 / total_level) * bed * (rise * fall * swell)


# Continuous layers -----------------------------------------------------------------------


def _whoosh(rng: np.random.Generator, envelope: np.ndarray, sr: int) -> np.ndarray:
    """Noise through a low-pass whose cutoff opens with the motion: slow motion rumbles,
    fast motion hisses. Block-wise coefficients, filter state carried across blocks."""
    n = len(envelope)
    noise = rng.standard_normal(n)
    out = np.empty_like(noise)
    starts = np.arange(0, n, _FILTER_BLOCK)
    cutoffs = 150.0 + 3500.0 * np.add.reduceat(envelope, starts) / np.diff(starts, append=n)
    poles = np.exp(-2 * np.pi * cutoffs / sr)
    state = np.zeros(2)
    for start, pole in zip(starts, poles, strict=True):
        stop = start + _FILTER_BLOCK
        # Two one-pole sections in series (one biquad): 12 dB/octave, cheap to retune.
        out[start:stop], state = lfilter(
            [(1 - pole) ** 2], [1, -2 * pole, pole * pole], noise[start:stop], zi=state
        )
    # Narrowing the filter drops the level (noise power ~ cutoff); compensate with a gain
    # interpolated between block centres so it never steps.
    centres = np.minimum(starts + _FILTER_BLOCK / 2, n - 1)
    gain = np.interp(np.arange(n), centres, np.sqrt(sr / (np.pi * cutoffs)))
    return _CONTINUOUS_LEVEL * envelope * out * gain


def _rain(rng: np.random.Generator, envelope: np.ndarray, sr: int) -> np.ndarray:
    n = len(envelope)
    hiss = _filtered_noise(rng, n, sr, "bandpass", (900.0, 7000.0))
    hiss *= 0.5 * _CONTINUOUS_LEVEL / _rms(hiss)
    drops = _resonant_events(
        rng,
        rate=70.0 * (0.6 + envelope),
        sr=sr,
        freqs=(2100.0, 2900.0, 3900.0, 5200.0),
        decay_s=0.004,
        level=(0.05, 0.3),
    )
    return hiss + drops + 0.5 * _whoosh(rng, envelope, sr)


def _engine(rng: np.random.Generator, envelope: np.ndarray, sr: int) -> np.ndarray:
    """A harmonic drone whose pitch (revs) follows the motion, over a noisy rumble."""
    n = len(envelope)
    f0 = 38.0 + 55.0 * envelope
    phase = 2 * np.pi * np.cumsum(f0) / sr
    drone = np.zeros(n)
    for k in range(1, 7):
        drone += np.sin(k * phase) / k
    # Firing pulses: the level pumps at half the fundamental.
    drone = drone * (0.75 + 0.25 * np.sin(0.5 * phase))
    rumble = _filtered_noise(rng, n, sr, "lowpass", 300.0)
    mix = drone / _rms(drone) + 0.4 * rumble / _rms(rumble)
    return 2.0 * _CONTINUOUS_LEVEL * (0.45 + 0.55 * envelope) * mix / _rms(mix)


def _water(rng: np.random.Generator, envelope: np.ndarray, sr: int) -> np.ndarray:
    n = len(envelope)
    flow = _filtered_noise(rng, n, sr, "bandpass", (120.0, 1500.0))
    swirl = 0.7 + 0.3 * np.sin(2 * np.pi * 0.3 * np.arange(n) / sr + rng.uniform(0, 2 * np.pi))
    flow *= _CONTINUOUS_LEVEL * (0.4 + 0.6 * envelope) * swirl / _rms(flow)
    bubbles = _resonant_events(
        rng,
        rate=5.0 + 25.0 * envelope,
        sr=sr,
        freqs=(350.0, 520.0, 760.0, 1100.0),
        decay_s=0.025,
        level=(0.05, 0.2),
    )
    return flow + bubbles


def _soft_whoosh(rng: np.random.Generator, envelope: np.ndarray, sr: int) -> np.ndarray:
    return 0.6 * _whoosh(rng, envelope, sr)


def _crackle(rng: np.random.Generator, envelope: np.ndarray, sr: int) -> np.ndarray:
    return _resonant_events(
        rng,
        rate=40.0 * envelope,
        sr=sr,
        freqs=(3200.0, 4700.0, 6300.0),
        decay_s=0.002,
        level=(0.05, 0.25),
    )


_CONTINUOUS: dict[Preset, Callable[[np.random.Generator, np.ndarray, int], np.ndarray]] = {
    "impacts": _whoosh,
    "footsteps": _soft_whoosh,
    "rain": _rain,
    "engine": _engine,
    "glass": _soft_whoosh,
    "metal": _soft_whoosh,
    "water": _water,
}


# Hits -------------------------------------------------------------------------------------


def _hit_impact(rng: np.random.Generator, t: np.ndarray, sr: int, decay: float) -> np.ndarray:
    """The recipe's hit: a ~15 ms noise burst on a damped 80-120 Hz body (~80 ms)."""
    burst = _decaying_noise(rng, t, sr, "lowpass", 3000.0, 0.005 * decay)
    body_hz = rng.uniform(80.0, 120.0) * (1.5 if decay < 1 else 1.0)
    body = np.sin(2 * np.pi * body_hz * t) * np.exp(-t / (0.027 * decay))
    return 0.8 * burst / _peak(burst) + body


def _hit_footstep(rng: np.random.Generator, t: np.ndarray, sr: int, decay: float) -> np.ndarray:
    """Heel thud with a gritty scuff, then a softer toe ~70 ms later."""
    thud = np.sin(2 * np.pi * rng.uniform(60.0, 90.0) * t) * np.exp(-t / (0.02 * decay))
    scuff = _decaying_noise(rng, t, sr, "bandpass", (400.0, 2500.0), 0.018 * decay)
    scuff /= _peak(scuff)
    heel = thud + 0.7 * scuff
    toe_at = round(rng.uniform(0.06, 0.08) * sr)
    step = heel.copy()
    step[toe_at:] += 0.35 * heel[: len(t) - toe_at]
    return step


def _hit_glass(rng: np.random.Generator, t: np.ndarray, sr: int, decay: float) -> np.ndarray:
    """Bright tick plus inharmonic high partials (a free glass plate) that ring."""
    # Ratios of a free plate's first modes; higher modes die faster.
    ring = _ringing(
        t,
        rng.uniform(1800.0, 2600.0),
        ((1.0, 0.25, 1.0), (2.76, 0.16, 0.5), (5.40, 0.09, 0.33), (8.93, 0.05, 0.25)),
        decay,
    )
    tick = _decaying_noise(rng, t, sr, "highpass", 3000.0, 0.003 * decay)
    return 0.6 * ring / _peak(ring) + tick / _peak(tick)


def _hit_metal(rng: np.random.Generator, t: np.ndarray, sr: int, decay: float) -> np.ndarray:
    """A clang: low-mid inharmonic partials with long, uneven decays."""
    ring = _ringing(
        t,
        rng.uniform(300.0, 700.0),
        (
            (1.0, 0.35, 1.0),
            (1.59, 0.3, 0.67),
            (2.14, 0.22, 0.5),
            (2.30, 0.2, 0.4),
            (2.65, 0.15, 0.33),
        ),
        decay,
    )
    strike = _decaying_noise(rng, t, sr, "bandpass", (800.0, 6000.0), 0.004 * decay)
    return ring / _peak(ring) + 0.7 * strike / _peak(strike)


def _hit_water(rng: np.random.Generator, t: np.ndarray, sr: int, decay: float) -> np.ndarray:
    """A splash: a band of noise with a fast attack, then a few rising bubbles."""
    splash = _decaying_noise(rng, t, sr, "bandpass", (400.0, 4000.0), 0.06 * decay)
    splash /= _peak(splash)
    for _ in range(3):
        start = rng.uniform(0.01, 0.09)
        local = np.clip(t - start, 0, None)
        chirp_hz = rng.uniform(300.0, 600.0) * (1 + 2.0 * local)
        bubble = np.sin(2 * np.pi * np.cumsum(chirp_hz) / sr) * np.exp(-local / (0.02 * decay))
        splash += 0.4 * np.where(t >= start, bubble, 0.0)
    return splash


def _hit_clunk(rng: np.random.Generator, t: np.ndarray, sr: int, decay: float) -> np.ndarray:
    return 0.6 * _hit_impact(rng, t, sr, decay) + 0.4 * _hit_metal(rng, t, sr, 0.4 * decay)


def _hit_rain(rng: np.random.Generator, t: np.ndarray, sr: int, decay: float) -> np.ndarray:
    burst = _decaying_noise(rng, t, sr, "bandpass", (500.0, 6000.0), 0.008 * decay)
    return 0.7 * burst / _peak(burst) + 0.5 * _hit_impact(rng, t, sr, decay)


_HITS: dict[Preset, Callable[[np.random.Generator, np.ndarray, int, float], np.ndarray]] = {
    "impacts": _hit_impact,
    "footsteps": _hit_footstep,
    "rain": _hit_rain,
    "engine": _hit_clunk,
    "glass": _hit_glass,
    "metal": _hit_metal,
    "water": _hit_water,
}


# Building blocks --------------------------------------------------------------------------


def _ringing(
    t: np.ndarray,
    f0: float,
    partials: tuple[tuple[float, float, float], ...],
    decay: float,
) -> np.ndarray:
    """Exponentially decaying sine partials: (frequency ratio, time constant s, gain)."""
    out = np.zeros(len(t))
    for ratio, tau, gain in partials:
        out += gain * np.sin(2 * np.pi * f0 * ratio * t) * np.exp(-t / (tau * decay))
    return out


def _resonant_events(
    rng: np.random.Generator,
    *,
    rate: np.ndarray,
    sr: int,
    freqs: tuple[float, ...],
    decay_s: float,
    level: tuple[float, float],
) -> np.ndarray:
    """Many tiny events (drops, bubbles, crackles): a Poisson impulse train whose density per
    second follows `rate`, each impulse ringing a randomly chosen resonator."""
    n = len(rate)
    at = np.flatnonzero(rng.random(n) < rate / sr)
    amplitudes = rng.uniform(*level, size=len(at))
    choice = rng.integers(0, len(freqs), size=len(at))
    out = np.zeros(n)
    for i, freq in enumerate(freqs):
        impulses = np.zeros(n)
        impulses[at[choice == i]] = amplitudes[choice == i]
        b, a = _resonator(freq, decay_s, sr)
        out += lfilter(b, a, impulses)
    return out


@lru_cache(maxsize=64)
def _resonator(freq: float, decay_s: float, sr: int) -> tuple[np.ndarray, np.ndarray]:
    """Two-pole resonator whose impulse response is r^n sin((n+1)w): a decaying sine, peak ~1."""
    r = np.exp(-1.0 / (decay_s * sr))
    w = 2 * np.pi * freq / sr
    return np.array([np.sin(w)]), np.array([1.0, -2 * r * np.cos(w), r * r])


@lru_cache(maxsize=64)
def _sos(kind: str, cutoff: float | tuple[float, float], sr: int) -> np.ndarray:
    return butter(2, cutoff, btype=kind, fs=sr, output="sos")


def _decaying_noise(
    rng: np.random.Generator,
    t: np.ndarray,
    sr: int,
    kind: Literal["lowpass", "highpass", "bandpass"],
    cutoff: float | tuple[float, float],
    tau_s: float,
) -> np.ndarray:
    """Filtered noise under an exponential decay, computed only where it is audible
    (10 time constants, -87 dB) and zero after: hits are mostly silence."""
    out = np.zeros(len(t))
    m = min(len(t), round(10 * tau_s * sr) + 1)
    out[:m] = _filtered_noise(rng, m, sr, kind, cutoff) * np.exp(-t[:m] / tau_s)
    return out


def _filtered_noise(
    rng: np.random.Generator,
    n: int,
    sr: int,
    kind: Literal["lowpass", "highpass", "bandpass"],
    cutoff: float | tuple[float, float],
) -> np.ndarray:
    return sosfilt(_sos(kind, cutoff, sr), rng.standard_normal(n))


def _peak(x: np.ndarray) -> float:
    return float(np.max(np.abs(x))) or 1.0


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x)))) or 1.0
