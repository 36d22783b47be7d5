"""Loudness normalization: EBU R128 integrated loudness to a target, true peak under a ceiling.

Measuring (`LoudnessMeter`, one streamed pass):
* **integrated loudness** per ITU-R BS.1770-4: K-weighting (pyloudnorm's own filter
  coefficients, run with carried state, so blocks join seamlessly), 400 ms blocks every 100 ms,
  the -70 LUFS absolute and -10 LU relative gates. pyloudnorm's `Meter.integrated_loudness`
  wants the whole signal as float64 (460 MB for 10 minutes of 48 kHz stereo), so the gating is
  done here from K-weighted energies kept per ~1 ms chunk; the tests hold it to pyloudnorm's
  figure on the same signals.
* **true peak**: the largest sample of the signal oversampled 4x, kept per chunk. BS.1770-4
  Annex 2 sketches a 48-tap interpolator (12 taps per phase); on sharp noise hits that reads
  up to ~1 dB under a high-quality resampler, so this one has 96 taps (24 per phase, Kaiser
  beta 8: passband to ~19 kHz at 48 kHz) for ~0.3 s of CPU per minute of stereo.

Planning (`plan_gain`, pure, on those arrays: float32, 2.4 MB each for 10 minutes): one gain brings
the loudness to the target; where that gain would push a true peak over the ceiling, a look-ahead
limiter lowers the gain around that peak only (a 3 ms ramp down before it, a 15 ms hold, a ramp
back up). The limiter lowers the loudness, so more gain is searched for (bisection) until the
loudness the limited signal will have is on target; it is computed from the chunk energies, so no
second pass over the audio is needed. Applying (`GainPlan.gains`) is a multiplication per block.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from app.media.pcm import PcmFormat, control_step

# scipy (and pyloudnorm, which imports scipy.signal) is imported where it is used, not here:
# importing scipy.signal cost 2.2 s of CPU, a third of every API and worker process's start, and
# only a job that builds a soundtrack measures loudness.

DEFAULT_TARGET_LUFS = -16.0
DEFAULT_TRUE_PEAK_DBTP = -1.0
# A signal this quiet (or silence) is not lifted further: noise, not content.
MAX_GAIN_DB = 40.0
CHUNK_S = 0.001
OVERSAMPLING = 4
_TAPS = 96
_ABSOLUTE_GATE_LUFS = -70.0
_RELATIVE_GATE_LU = -10.0
# The limiter: ramps of ATTACK_S down before a peak and back up after it, the gain held down for
# HOLD_S after the peak. Short, because foley is hits: a 50 ms hold turned a whole 30 ms hit
# down with its peak, and sparse hits then lost as much loudness as the limiter took off their
# peaks (the target was out of reach); 3 ms / 15 ms only touches the attack.
ATTACK_S = 0.003
HOLD_S = 0.015
# The limiter may be driven this far past the plain gain to make up for the loudness it takes
# away (a signal whose peaks stand 20+ dB over its loudness, like sparse hits, needs it).
LIMITER_PUSH_DB = 12.0
# Re-planning stops once the planned loudness is this close to the target (or after so many
# bisection rounds: 12 dB / 2^10 is ~0.01 dB).
_PLAN_TOLERANCE_LU = 0.05
_PLAN_ROUNDS = 10


@dataclass(frozen=True)
class LoudnessTarget:
    """`headroom_db` is kept below `true_peak_dbtp` when limiting: room for what the gain's
    interpolation and a lossy encoder add to the peaks (see `app.media.encode`)."""

    integrated_lufs: float = DEFAULT_TARGET_LUFS
    true_peak_dbtp: float = DEFAULT_TRUE_PEAK_DBTP
    headroom_db: float = 0.5

    def __post_init__(self) -> None:
        if not -70 < self.integrated_lufs < 0 or self.true_peak_dbtp > 0 or self.headroom_db < 0:
            raise ValueError("need -70 < integrated_lufs < 0, true_peak_dbtp <= 0, headroom >= 0")


@dataclass(frozen=True)
class LoudnessMeasurement:
    """Per chunk of `chunk` frames: `energy`, the channel-weighted sum of squared K-weighted
    samples; `peak`, the largest absolute value of the 4x oversampled signal."""

    rate: int
    chunk: int
    energy: np.ndarray
    peak: np.ndarray

    @property
    def integrated_lufs(self) -> float:
        return integrated_loudness(self.energy, chunk=self.chunk, rate=self.rate)

    @property
    def true_peak_dbtp(self) -> float:
        return _db(float(self.peak.max(initial=0.0)))


class LoudnessMeter:
    """Streams blocks (channels, n) through the K-weighting and the oversampler. Every block but
    the last must be a whole number of chunks (the pipeline's one-second blocks are)."""

    def __init__(self, pcm: PcmFormat) -> None:
        self.pcm = pcm
        self.chunk = control_step(pcm.rate, CHUNK_S)
        self._sos = k_weighting(pcm.rate)
        self._zi = np.zeros((self._sos.shape[0], pcm.channels, 2))
        self._taps = interpolation_filter()
        self._history = np.zeros((pcm.channels, _TAPS // OVERSAMPLING - 1), np.float64)
        self._energy: list[np.ndarray] = []
        self._peak: list[np.ndarray] = []
        self._ended = False

    def push(self, block: np.ndarray) -> None:
        if self._ended:
            raise ValueError("a block shorter than a chunk was the last one")
        count = block.shape[1]
        chunks = -(-count // self.chunk)
        if chunks * self.chunk != count:
            self._ended = True
        samples = np.zeros((block.shape[0], chunks * self.chunk), np.float64)
        samples[:, :count] = block
        from scipy.signal import sosfilt

        weighted, self._zi = sosfilt(self._sos, samples, axis=1, zi=self._zi)
        # BS.1770 channel weights are 1 for left, right and mono.
        squares = np.square(weighted).sum(axis=0)
        # float32 per chunk (7 digits) is plenty; sums over 100 ms are taken in float64.
        self._energy.append(squares.reshape(chunks, self.chunk).sum(axis=1).astype(np.float32))
        self._peak.append(self._true_peaks(samples[:, :count], chunks))

    def result(self) -> LoudnessMeasurement:
        energy = np.concatenate(self._energy) if self._energy else np.zeros(0)
        peak = np.concatenate(self._peak) if self._peak else np.zeros(0)
        return LoudnessMeasurement(self.pcm.rate, self.chunk, energy, peak)

    def _true_peaks(self, samples: np.ndarray, chunks: int) -> np.ndarray:
        """The oversampled peak of each chunk; the filter's history carries across blocks."""
        joined = np.concatenate([self._history, samples], axis=1)
        self._history = joined[:, -self._history.shape[1] :]
        from scipy.signal import upfirdn

        over = upfirdn(self._taps, joined, up=OVERSAMPLING, axis=1)
        # Outputs that depend on the history only, and the filter's tail past the input: out.
        start = self._history.shape[1] * OVERSAMPLING
        over = np.abs(over[:, start : start + samples.shape[1] * OVERSAMPLING]).max(axis=0)
        padded = np.zeros(chunks * self.chunk * OVERSAMPLING)
        padded[: over.shape[0]] = over
        peaks = padded.reshape(chunks, -1).max(axis=1)
        sample_peaks = np.zeros(chunks * self.chunk)
        sample_peaks[: samples.shape[1]] = np.abs(samples).max(axis=0)
        peaks = np.maximum(peaks, sample_peaks.reshape(chunks, -1).max(axis=1))
        return peaks.astype(np.float32)


@dataclass(frozen=True)
class GainPlan:
    """The gain to apply: `gain_db` everywhere, times the limiter's per-chunk `limiter` (<= 1),
    interpolated between chunk centres. `expected_*` is what the output will measure."""

    gain_db: float
    chunk: int
    limiter: np.ndarray
    measured_lufs: float
    measured_true_peak_dbtp: float
    expected_lufs: float
    expected_true_peak_dbtp: float

    @property
    def limited_db(self) -> float:
        """The deepest limiter reduction, dB (0: the limiter never acted)."""
        return -_db(float(self.limiter.min(initial=1.0)))

    def gains(self, first: int, count: int) -> np.ndarray:
        """The linear gain of frames [first, first + count)."""
        base = 10 ** (self.gain_db / 20)
        if not self.limiter.size or self.limiter.min() >= 1.0:
            return np.full(count, base, np.float32)
        low = max(0, first // self.chunk - 1)
        high = min(self.limiter.size, (first + count) // self.chunk + 2)
        centres = (np.arange(low, high) + 0.5) * self.chunk
        at = np.arange(first, first + count) + 0.5
        return (base * np.interp(at, centres, self.limiter[low:high])).astype(np.float32)

    def apply(self, block: np.ndarray, first: int) -> np.ndarray:
        return block * self.gains(first, block.shape[1])


def plan_gain(measurement: LoudnessMeasurement, target: LoudnessTarget) -> GainPlan:
    """The gain plan that takes the measured audio to `target` (see the module docstring).
    Silence, or audio too short to gate (< 0.4 s), is left as it is."""
    measured = measurement.integrated_lufs
    peak = measurement.peak
    if not math.isfinite(measured):
        flat = np.ones(peak.size, np.float32)
        return GainPlan(0.0, measurement.chunk, flat, measured, measurement.true_peak_dbtp,
                        measured, measurement.true_peak_dbtp)  # fmt: skip
    ceiling = 10 ** ((target.true_peak_dbtp - target.headroom_db) / 20)
    chunk_s = measurement.chunk / measurement.rate

    def outcome(gain_db: float) -> tuple[np.ndarray, float]:
        """The limiter at this gain, and the loudness the limited signal will have."""
        gain = 10 ** (gain_db / 20)
        limiter = limiter_curve(peak * np.float32(gain), ceiling=ceiling, chunk_s=chunk_s)
        energy = measurement.energy * np.float32(gain**2) * np.square(limiter)
        return limiter, integrated_loudness(energy, chunk=measurement.chunk, rate=measurement.rate)

    # Without limiting, this gain lands on the target exactly.
    low = min(MAX_GAIN_DB, target.integrated_lufs - measured)
    limiter, expected = outcome(low)
    gain_db = low
    if target.integrated_lufs - expected > _PLAN_TOLERANCE_LU:
        # The limiter took some loudness away: more gain, found by bisection (the loudness of
        # the limited signal rises with the gain, ever more slowly), at most LIMITER_PUSH_DB.
        high = min(MAX_GAIN_DB, low + LIMITER_PUSH_DB)
        best = (low, limiter, expected)
        for _ in range(_PLAN_ROUNDS):
            middle = (low + high) / 2
            tried, loudness = outcome(middle)
            if loudness <= target.integrated_lufs:
                low, best = middle, (middle, tried, loudness)
            else:
                high = middle
            if abs(target.integrated_lufs - loudness) < _PLAN_TOLERANCE_LU:
                best = (middle, tried, loudness)
                break
        gain_db, limiter, expected = best
    expected_peak = _db(float((peak * 10 ** (gain_db / 20) * limiter).max(initial=0.0)))
    return GainPlan(
        gain_db=gain_db,
        chunk=measurement.chunk,
        limiter=limiter,
        measured_lufs=measured,
        measured_true_peak_dbtp=measurement.true_peak_dbtp,
        expected_lufs=expected,
        expected_true_peak_dbtp=expected_peak,
    )


def limiter_curve(peaks: np.ndarray, *, ceiling: float, chunk_s: float) -> np.ndarray:
    """Per chunk, a gain <= 1 that keeps `peaks` (linear, after the global gain) under `ceiling`.

    The gain each chunk needs is held over [k - ramp - hold - 1, k + ramp + 1] (a minimum
    filter) and then averaged over [k - ramp, k + ramp]: every average is of values that are
    each at most what chunk k (and its neighbours, for the interpolation between centres) needs,
    so the peak is always covered, while the gain moves in straight ramps."""
    need = np.minimum(np.float32(1.0), np.float32(ceiling) / np.maximum(peaks, np.float32(1e-12)))
    if need.size == 0 or need.min() >= 1.0:
        return np.ones(peaks.size, np.float32)
    ramp = max(1, round(ATTACK_S / chunk_s))
    hold = round(HOLD_S / chunk_s)
    held = _window_min(need, before=ramp + hold + 1, after=ramp + 1)
    from scipy.ndimage import uniform_filter1d

    return np.minimum(1.0, uniform_filter1d(held, size=2 * ramp + 1, mode="nearest")).astype(
        np.float32
    )


def integrated_loudness(energy: np.ndarray, *, chunk: int, rate: int) -> float:
    """BS.1770-4 gated loudness (LUFS) from per-chunk K-weighted energies; -inf for silence or
    less than one 400 ms block."""
    per_step = rate // 10 // chunk
    steps = energy.size // per_step
    if steps < 4:
        return -math.inf
    tenths = energy[: steps * per_step].reshape(steps, per_step).sum(axis=1, dtype=np.float64)
    blocks = (tenths[:-3] + tenths[1:-2] + tenths[2:-1] + tenths[3:]) / (0.4 * rate)
    with np.errstate(divide="ignore"):
        levels = -0.691 + 10 * np.log10(blocks)
    gated = blocks[levels > _ABSOLUTE_GATE_LUFS]
    if not gated.size:
        return -math.inf
    relative = -0.691 + 10 * math.log10(gated.mean()) + _RELATIVE_GATE_LU
    kept = blocks[(levels > relative) & (levels > _ABSOLUTE_GATE_LUFS)]
    return -0.691 + 10 * math.log10(kept.mean())


def k_weighting(rate: int) -> np.ndarray:
    """BS.1770's K-weighting as second-order sections, from pyloudnorm's filter definitions (the
    two stages its Meter uses), so both measure the same thing."""
    from pyloudnorm.iirfilter import IIRfilter

    stages = (
        IIRfilter(4.0, 1 / math.sqrt(2), 1500.0, rate, "high_shelf"),
        IIRfilter(0.0, 0.5, 38.0, rate, "high_pass"),
    )
    return np.array([[*stage.b, *stage.a] for stage in stages], dtype=np.float64)


def interpolation_filter() -> np.ndarray:
    """The 4x oversampler's low-pass: cut at the original Nyquist, gain 4 (zero stuffing loses
    3/4 of the amplitude)."""
    from scipy.signal import firwin

    return OVERSAMPLING * firwin(_TAPS, 1 / OVERSAMPLING, window=("kaiser", 8.0))


def _window_min(values: np.ndarray, *, before: int, after: int) -> np.ndarray:
    """min(values[k - before : k + after + 1]) for every k (1.0 past the ends)."""
    size = before + after + 1
    padded = np.pad(values, (before, after), constant_values=1.0)
    from scipy.ndimage import minimum_filter1d

    centred = minimum_filter1d(padded, size=size, mode="nearest")
    return centred[size // 2 : size // 2 + values.size]


def _db(linear: float) -> float:
    return 20 * math.log10(linear) if linear > 0 else -math.inf
