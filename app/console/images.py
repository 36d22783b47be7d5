"""A sound's waveform and spectrogram as PNG images, drawn on the server from the stored audio
(PyAV decodes, numpy draws). Server-side, so the console shows the same picture whatever codecs
the browser has, and a page holds no decoded audio."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path
from typing import Literal

import av
import numpy as np

from app.media.probe import open_input, primary_stream

Kind = Literal["waveform", "spectrogram"]

RATE = 16_000  # Hz: what the pictures show (up to 8 kHz) needs no more
MAX_SECONDS = 600  # a longer sound is drawn from its first ten minutes
WIDTH = 800
WAVE_HEIGHT = 120
SPECTRUM_BINS = 256  # rows: an FFT of 512 samples (32 ms), 31 Hz a row

# Light background, the console's accent for the wave (contrast 6.7:1 on white).
BACKGROUND_COLOUR = np.array([255, 255, 255], np.uint8)
WAVE_COLOUR = np.array([29, 78, 216], np.uint8)
AXIS_COLOUR = np.array([203, 213, 225], np.uint8)


def decode_mono(path: Path) -> np.ndarray:
    """The file's first audio stream, mono float32 at RATE (empty when it has none)."""
    blocks: list[np.ndarray] = []
    total = 0
    with open_input(path) as container:
        stream = primary_stream(container, "audio")
        if stream is None:
            return np.zeros(0, np.float32)
        resampler = av.AudioResampler(format="flt", layout="mono", rate=RATE)
        for frame in container.decode(stream):
            for out in resampler.resample(frame):
                block = out.to_ndarray().reshape(-1)
                blocks.append(block)
                total += block.size
            if total >= RATE * MAX_SECONDS:
                break
        for out in resampler.resample(None):
            blocks.append(out.to_ndarray().reshape(-1))
    if not blocks:
        return np.zeros(0, np.float32)
    return np.concatenate(blocks)[: RATE * MAX_SECONDS].astype(np.float32)


def waveform(samples: np.ndarray) -> np.ndarray:
    """Each column the range (min to max) of its share of the samples, about a centre line."""
    image = np.empty((WAVE_HEIGHT, WIDTH, 3), np.uint8)
    image[:] = BACKGROUND_COLOUR
    mid = WAVE_HEIGHT // 2
    image[mid, :] = AXIS_COLOUR
    if samples.size == 0:
        return image
    edges = np.linspace(0, samples.size, WIDTH + 1).astype(int)
    rows = np.arange(WAVE_HEIGHT)[:, None]
    lo = np.zeros(WIDTH)
    hi = np.zeros(WIDTH)
    for x in range(WIDTH):
        part = samples[edges[x] : max(edges[x + 1], edges[x] + 1)]
        lo[x], hi[x] = part.min(), part.max()
    peak = max(float(np.abs(samples).max()), 1e-6)
    top = np.clip(mid - np.round(hi / peak * (mid - 2)), 0, WAVE_HEIGHT - 1)
    bottom = np.clip(mid - np.round(lo / peak * (mid - 2)), 0, WAVE_HEIGHT - 1)
    inside = (rows >= top[None, :]) & (rows <= bottom[None, :])
    image[inside] = WAVE_COLOUR
    return image


def spectrogram(samples: np.ndarray) -> np.ndarray:
    """Magnitude in dB (80 dB below the loudest is black), low frequencies at the bottom."""
    n_fft = SPECTRUM_BINS * 2
    if samples.size < n_fft:
        samples = np.pad(samples, (0, n_fft - samples.size))
    starts = np.linspace(0, samples.size - n_fft, WIDTH).astype(int)
    frames = samples[starts[:, None] + np.arange(n_fft)[None, :]] * np.hanning(n_fft)
    power = np.abs(np.fft.rfft(frames, axis=1))[:, :SPECTRUM_BINS] ** 2
    db = 10 * np.log10(power + 1e-12)
    level = np.clip((db - (db.max() - 80)) / 80, 0, 1)
    return _colour(level.T[::-1])


def _colour(level: np.ndarray) -> np.ndarray:
    """Black, through blue and magenta, to yellow: louder is brighter."""
    stops = np.array([[0, 0, 0], [40, 30, 140], [190, 40, 120], [250, 150, 30], [255, 250, 190]])
    at = level * (len(stops) - 1)
    i = np.minimum(at.astype(int), len(stops) - 2)
    f = (at - i)[..., None]
    return (stops[i] * (1 - f) + stops[i + 1] * f).astype(np.uint8)


def png(image: np.ndarray) -> bytes:
    """An RGB image (height, width, 3) as PNG bytes (no library: zlib and the chunk format)."""
    height, width, _ = image.shape
    raw = np.concatenate([np.zeros((height, 1), np.uint8), image.reshape(height, -1)], axis=1)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data))
            + kind
            + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
        )

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(raw.tobytes(), 6))
        + chunk(b"IEND", b"")
    )


def render(path: Path, kind: Kind) -> bytes:
    samples = decode_mono(path)
    return png(waveform(samples) if kind == "waveform" else spectrogram(samples))
