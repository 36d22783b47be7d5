"""Audio as blocks of float32 samples: the one decoded form every soundtrack step works on.

A block is an array of shape (channels, frames), float32, at the soundtrack's sample rate.
`AudioReader` decodes a file's first audio stream into such blocks on demand, so a 10-minute
track is never held whole: only the frames still to be handed out (about one decoded packet plus
the fade hold-back) live in memory.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self

import av
import av.container
import numpy as np

from app.media.errors import MediaUnreadableError, NoAudioStreamError
from app.media.probe import open_input, primary_stream

# Where a track stops before the timeline does (a model's audio a little short), its last
# samples fade out over this long so the step to silence is not a click (as in normalize.py).
END_FADE_S = 0.020
# The rates the soundtrack steps accept: every one is a multiple of 10 Hz, so 100 ms (the
# BS.1770 gating step) is a whole number of samples, and every encoder offered takes most of them.
SAMPLE_RATES: tuple[int, ...] = (8_000, 16_000, 22_050, 24_000, 32_000, 44_100, 48_000)
LAYOUTS: dict[int, str] = {1: "mono", 2: "stereo"}


@dataclass(frozen=True)
class PcmFormat:
    """The sample rate and channel count of every block of one soundtrack."""

    rate: int = 48_000
    channels: int = 2

    def __post_init__(self) -> None:
        if self.rate not in SAMPLE_RATES:
            raise ValueError(f"sample rate {self.rate} is not one of {SAMPLE_RATES}")
        if self.channels not in LAYOUTS:
            raise ValueError("channels must be 1 or 2")

    @property
    def layout(self) -> str:
        return LAYOUTS[self.channels]

    @property
    def block(self) -> int:
        """Frames in a pipeline block: one second."""
        return self.rate

    def frames(self, seconds: float) -> int:
        return round(seconds * self.rate)

    def silence(self, frames: int) -> np.ndarray:
        return np.zeros((self.channels, frames), np.float32)


def control_step(rate: int, seconds: float) -> int:
    """The divisor of 100 ms worth of frames closest to `seconds`: a control period (loudness
    chunks, ducking frames) that tiles every gating step and every one-second block exactly."""
    tenth = rate // 10
    divisors = [d for d in range(1, tenth + 1) if tenth % d == 0]
    return min(divisors, key=lambda d: abs(d - seconds * rate))


class AudioReader:
    """The first audio stream of a file, decoded and resampled to `pcm`, read in order.

    Sample 0 is the file's instant `origin_s` (by the audio's timestamps, so an audio that
    starts late is preceded by silence and one that starts early is cut). By default that is
    where the file's video starts, or for an audio file where its audio starts: a gapless MP3
    starts at its encoder delay (~23 ms) once the decoder has dropped the priming samples.
    `read(n)` always returns n frames: past the end of the audio they are silence, and the last
    real samples fade out over `END_FADE_S`. Use it as a context manager, or call `close()`.

    Raises `NoAudioStreamError` when the file has no audio stream, `MediaUnreadableError` when
    FFmpeg cannot read it, `FileNotFoundError` when there is no such file.
    """

    def __init__(
        self, path: str | os.PathLike[str], pcm: PcmFormat, *, origin_s: float | None = None
    ) -> None:
        self.pcm = pcm
        self._context = open_input(path)
        self._container: av.container.InputContainer = self._context.__enter__()
        try:
            stream = primary_stream(self._container, "audio")
            if stream is None:
                raise NoAudioStreamError(f"{os.fspath(path)!s} has no audio stream")
            if origin_s is None:
                origin_s = _start_s(primary_stream(self._container, "video") or stream)
        except BaseException:
            self.close()
            raise
        self._frames = self._container.decode(stream)
        self._resampler = av.AudioResampler(format="fltp", layout=pcm.layout, rate=pcm.rate)
        self._origin_s = origin_s
        self._queue: deque[np.ndarray] = deque()
        self._queued = 0
        self._started = False
        self._ended = False
        self._drop_before = 0  # frames of the file before `origin_s`, still to drop
        self._fade = max(1, pcm.frames(END_FADE_S))

    def read(self, count: int) -> np.ndarray:
        self._fill(count + self._fade)
        out = self.pcm.silence(count)
        filled = 0
        while filled < count and self._queue:
            head = self._queue[0]
            take = min(count - filled, head.shape[1])
            out[:, filled : filled + take] = head[:, :take]
            filled += take
            if take == head.shape[1]:
                self._queue.popleft()
            else:
                self._queue[0] = head[:, take:]
        self._queued -= filled
        return out

    def skip(self, count: int) -> None:
        """Drop `count` frames (read and discarded in blocks: memory stays bounded)."""
        while count > 0:
            step = min(count, self.pcm.block)
            self.read(step)
            count -= step

    def close(self) -> None:
        self._context.__exit__(None, None, None)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _fill(self, wanted: int) -> None:
        while self._queued < wanted and not self._ended:
            frame = next(self._frames, None)
            try:
                converted = self._resampler.resample(frame)
            except av.FFmpegError as exc:
                raise MediaUnreadableError(f"cannot decode the audio: {exc}") from exc
            for out in converted:
                self._push(out)
            if frame is None:
                self._ended = True
                self._fade_tail()

    def _push(self, frame: Any) -> None:
        samples = frame.to_ndarray().astype(np.float32, copy=False)
        if not self._started:
            self._started = True
            start_s = float(frame.time) if frame.time is not None else 0.0
            offset = round((start_s - self._origin_s) * self.pcm.rate)
            if offset > 0:
                self._append(self.pcm.silence(offset))
            elif offset < 0:
                self._drop_before = -offset
        if self._drop_before:
            cut = min(self._drop_before, samples.shape[1])
            samples, self._drop_before = samples[:, cut:], self._drop_before - cut
        self._append(samples)

    def _append(self, samples: np.ndarray) -> None:
        if samples.shape[1]:
            self._queue.append(samples)
            self._queued += samples.shape[1]

    def _fade_tail(self) -> None:
        """Half a raised cosine over the last real samples, so the step to silence is smooth."""
        if not self._queued:
            return
        tail = np.concatenate(list(self._queue), axis=1)
        n = min(self._fade, tail.shape[1])
        ramp = 0.5 * (1 + np.cos(np.pi * np.arange(1, n + 1) / n))
        tail[:, -n:] *= ramp.astype(np.float32)
        self._queue = deque([tail])


def track_blocks(
    path: str | os.PathLike[str], pcm: PcmFormat, *, frames: int, origin_s: float | None = None
) -> Iterator[np.ndarray]:
    """The first audio stream of `path` as `frames` frames in blocks of `pcm.block` (see
    `AudioReader`: silence past its end)."""
    with AudioReader(path, pcm, origin_s=origin_s) as reader:
        for first in range(0, frames, pcm.block):
            yield reader.read(min(pcm.block, frames - first))


def _start_s(stream: Any) -> float:
    if stream.start_time is None or not stream.time_base:
        return 0.0
    return float(stream.start_time * stream.time_base)
