"""Request tags: the `X-Fal-Tags: k=v,k=v` header of a submit, read the way fal documents it.

fal's rules: at most 10 pairs; key `^[a-z0-9._-]+$` of at most 64 characters, not starting
with the reserved prefix `fal.`; value printable ASCII without a comma, at most 256 characters;
at most 1,024 bytes in all. fal drops bad tags silently and never fails the request for them.

The emulator's reading where fal is silent:
- a header over 1,024 bytes drops every tag (there is no sensible part to keep);
- otherwise each offending pair is dropped and the others kept: a pair without `=`, a bad key,
  a bad or empty value, a key already given (the first wins), and every pair after the tenth
  accepted one;
- whitespace around a pair (`a=1, b=2`) is ignored; inside a pair it counts.
"""

from __future__ import annotations

import re

HEADER = b"x-fal-tags"
MAX_TAGS = 10
MAX_KEY_CHARS = 64
MAX_VALUE_CHARS = 256
MAX_HEADER_BYTES = 1024
RESERVED_PREFIX = "fal."

_KEY = re.compile(r"[a-z0-9._-]+")
_VALUE = re.compile(r"[\x20-\x2b\x2d-\x7e]+")  # printable ASCII without ','


def key_ok(key: str) -> bool:
    return (
        len(key) <= MAX_KEY_CHARS
        and _KEY.fullmatch(key) is not None
        and not key.startswith(RESERVED_PREFIX)
    )


def value_ok(value: str) -> bool:
    return len(value) <= MAX_VALUE_CHARS and _VALUE.fullmatch(value) is not None


def parse_tags(raw: bytes | None) -> dict[str, str]:
    """The accepted tags of a raw `X-Fal-Tags` header value (never raises)."""
    if not raw or len(raw) > MAX_HEADER_BYTES:
        return {}
    tags: dict[str, str] = {}
    for pair in raw.decode("latin-1").split(","):
        key, sep, value = pair.strip().partition("=")
        if not sep or key in tags or not key_ok(key) or not value_ok(value):
            continue
        tags[key] = value
        if len(tags) == MAX_TAGS:
            break
    return tags
