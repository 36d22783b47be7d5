"""Server-sent events (the WHATWG "event stream" format), decoded incrementally from bytes.

Only what a status stream needs: the data of each event. Lines end in CRLF, LF or CR and nothing
else: httpx's ``aiter_lines`` also splits on U+2028 and U+0085, which JSON leaves unescaped inside
strings, so a log line holding one would cut an event in two. CR and LF never occur inside a
multi-byte UTF-8 sequence, so lines are split as bytes and decoded whole.

Per the standard: comments (``:`` lines) and the ``event``, ``id`` and ``retry`` fields are
ignored here, the ``data`` lines of one event are joined with ``\\n``, a blank line ends the event,
and an event the stream leaves unfinished is dropped.
"""

from __future__ import annotations

import re

# A status carries every log line so far; a runaway line must still not grow without bound.
MAX_EVENT_BYTES = 8 * 1024 * 1024

_LINE_END = re.compile(rb"\r\n|\r|\n")


class EventTooLarge(ValueError):
    """One event (or one unfinished line) grew past the decoder's limit."""


class EventDataDecoder:
    """Feed it the body's chunks in order; it returns the data of each event they complete."""

    def __init__(self, max_event_bytes: int = MAX_EVENT_BYTES) -> None:
        self._max = max_event_bytes
        self._line = bytearray()  # the current line, not yet ended
        self._after_cr = False  # the last chunk ended in CR: a LF opening the next belongs to it
        self._data: list[str] = []  # the data lines of the event being read
        self._size = 0
        self._first_line = True

    def feed(self, chunk: bytes) -> list[str]:
        if not chunk:  # would otherwise forget a CR that ended the last chunk
            return []
        events: list[str] = []
        start = 1 if self._after_cr and chunk[:1] == b"\n" else 0
        self._after_cr = False
        for end in _LINE_END.finditer(chunk, start):
            self._line += chunk[start : end.start()]
            data = self._end_line(bytes(self._line))
            self._line.clear()
            if data is not None:
                events.append(data)
            start = end.end()
            self._after_cr = end.group() == b"\r" and start == len(chunk)
        self._line += chunk[start:]
        if len(self._line) + self._size > self._max:
            raise EventTooLarge(f"an event exceeds {self._max} bytes")
        return events

    def _end_line(self, raw: bytes) -> str | None:
        line = raw.decode("utf-8", errors="replace")
        if self._first_line:
            self._first_line = False
            line = line.removeprefix("\ufeff")  # the standard allows one leading BOM
        if not line:
            if not self._data:
                return None
            data = "\n".join(self._data)
            self._data = []
            self._size = 0
            return data
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        if name == "data":
            self._data.append(value.removeprefix(" "))
            self._size += len(raw)
        return None
