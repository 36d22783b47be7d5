"""The request headers that shape how a job request is answered: ``Prefer: wait[=N]`` (RFC 7240),
``Cancel-After`` and ``Last-Event-ID`` (the event stream's resume point), parsed."""

from __future__ import annotations

import re
from datetime import timedelta

from app.kit.problems import BadRequest

# Replicate's limit: a held request answers within a minute, whatever was asked.
WAIT_MAX_S = 60
# A deadline past the longest a job may live (FOLEY_JOB_TIMEOUT) is meaningless; this bound only
# keeps the arithmetic in range.
CANCEL_AFTER_MAX = timedelta(days=30)
MAX_SEQ = 2**31 - 1  # job_events.seq is an integer column


class InvalidHeader(BadRequest):
    code = "invalid_header"


def wait_preference(values: list[str], *, max_s: int = WAIT_MAX_S) -> int | None:
    """Seconds to hold the request, from the ``Prefer`` header's values: ``wait`` alone means
    the longest, ``wait=N`` N seconds at most ``max_s``. None when wait is not asked. A
    preference the server does not understand is ignored (RFC 7240 §2), so a malformed wait
    is as if not sent; the first wait wins (§2: a repeated preference is the first's)."""
    for value in values:
        for preference in value.split(","):
            token, _, raw = preference.split(";", 1)[0].partition("=")
            if token.strip().lower() != "wait":
                continue
            raw = raw.strip().strip('"')
            if not raw:
                return max_s
            if not raw.isdigit():
                return None
            return min(int(raw), max_s)
    return None


_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def cancel_after(value: str) -> timedelta:
    """``Cancel-After`` as a duration: Go's form, as Replicate takes it (``90s``, ``5m``,
    ``1h30m``, ``500ms``), or plain seconds (``90``)."""
    text = value.strip()
    seconds: float | None = None
    if re.fullmatch(r"\d+(?:\.\d+)?", text):
        seconds = float(text)
    elif text and _PART.sub("", text) == "":
        seconds = sum(float(n) * _UNIT_S[unit] for n, unit in _PART.findall(text))
    if seconds is None or seconds <= 0 or seconds > CANCEL_AFTER_MAX.total_seconds():
        raise InvalidHeader(
            f"Cancel-After must be a positive duration of at most {CANCEL_AFTER_MAX.days} days, "
            f"like 90s, 5m or 1h30m (got {value!r}).",
            param="Cancel-After",
        )
    return timedelta(seconds=seconds)


def last_event_id(value: str | None) -> int | None:
    """The seq an event stream resumes after (the ``id:`` of the last event the client saw)."""
    if value is None:
        return None
    text = value.strip()
    if not text.isdigit() or int(text) > MAX_SEQ:
        raise InvalidHeader(
            f"Last-Event-ID must be an event's seq (a whole number), not {value!r}.",
            param="Last-Event-ID",
        )
    return int(text)
