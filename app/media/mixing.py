"""Lay the generated sound under the video's own track (`audio_mode="mix"`).

mix = original · original_gain + generated · generated_gain · duck(t)

`duck(t)` is a sidechain: the original's level (RMS over `DUCK_FRAME_S` frames, in dBFS) is
followed by an envelope that rises fast (`attack_s`) and falls slowly (`release_s`), and the
generated sound is turned down by up to `duck_db` as that envelope goes from `threshold_db` to
`threshold_db + knee_db`. So dialogue stays on top and the sound fills the pauses. The gains
are linear-interpolated frame to frame (no zipper noise). The original itself is never
processed, only scaled by its constant gain, so it comes out intact.

`Ducker` carries the envelope from block to block: the mix streams.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np

from app.media.pcm import PcmFormat, control_step

# The sidechain's level is measured over frames this long: shorter than a syllable.
DUCK_FRAME_S = 0.010
# Below this the original is silence, whatever the settings (log of zero).
_FLOOR_DB = -120.0


@dataclass(frozen=True)
class MixSettings:
    """Gains in dB; `duck_db` is the most the generated sound is turned down (0: no ducking)."""

    original_gain_db: float = 0.0
    generated_gain_db: float = -4.0
    duck_db: float = 12.0
    threshold_db: float = -40.0
    knee_db: float = 15.0
    attack_s: float = 0.015
    release_s: float = 0.350

    def __post_init__(self) -> None:
        if self.duck_db < 0 or self.knee_db <= 0 or self.attack_s <= 0 or self.release_s <= 0:
            raise ValueError("duck_db >= 0 and knee_db, attack_s, release_s > 0")


class Ducker:
    """The ducking gain of the generated sound, block by block of the original."""

    def __init__(self, pcm: PcmFormat, settings: MixSettings) -> None:
        self.settings = settings
        self.frame = control_step(pcm.rate, DUCK_FRAME_S)
        frame_s = self.frame / pcm.rate
        # One-pole coefficients: the envelope covers 1 - 1/e of a step in attack_s / release_s.
        self._attack = 1 - math.exp(-frame_s / settings.attack_s)
        self._release = 1 - math.exp(-frame_s / settings.release_s)
        self._envelope = _FLOOR_DB
        self._last_gain = 1.0

    def gains(self, original: np.ndarray) -> np.ndarray:
        """Per frame of `original` (channels, n), the linear duck gain (1 = untouched)."""
        count = original.shape[1]
        frames = -(-count // self.frame)
        padded = np.zeros((original.shape[0], frames * self.frame), np.float32)
        padded[:, :count] = original
        power = np.square(padded.mean(axis=0)).reshape(frames, self.frame).mean(axis=1)
        levels = 10 * np.log10(np.maximum(power, 10 ** (_FLOOR_DB / 10)))
        s = self.settings
        targets = np.empty(frames)
        envelope = self._envelope
        for i, level in enumerate(levels.tolist()):
            step = self._attack if level > envelope else self._release
            envelope += (level - envelope) * step
            targets[i] = envelope
        self._envelope = envelope
        depth = np.clip((targets - s.threshold_db) / s.knee_db, 0.0, 1.0) * s.duck_db
        frame_gains = 10 ** (-depth / 20)
        # Each frame ramps from the previous frame's gain to its own.
        starts = np.concatenate([[self._last_gain], frame_gains[:-1]])
        ramp = (np.arange(1, self.frame + 1) / self.frame)[None, :]
        per_sample = starts[:, None] + (frame_gains - starts)[:, None] * ramp
        self._last_gain = float(frame_gains[-1])
        return per_sample.ravel()[:count].astype(np.float32)


def mix_blocks(
    original: Iterable[np.ndarray],
    generated: Iterable[np.ndarray],
    *,
    pcm: PcmFormat,
    settings: MixSettings,
) -> Iterator[np.ndarray]:
    """The mix, block by block; `original` and `generated` yield blocks of the same lengths."""
    ducker = Ducker(pcm, settings)
    keep = np.float32(10 ** (settings.original_gain_db / 20))
    under = np.float32(10 ** (settings.generated_gain_db / 20))
    for ours, theirs in zip(original, generated, strict=True):
        yield ours * keep + theirs * (under * ducker.gains(ours))
