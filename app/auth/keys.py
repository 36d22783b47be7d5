"""API key material. Keys are 256-bit random strings with a recognisable prefix (so secret
scanners and people can tell what leaked); only their SHA-256 is stored. A slow hash buys nothing
for keys of this entropy and would cost every request."""

from __future__ import annotations

import hashlib
import secrets

KEY_PREFIX = "fk_live_"
DISPLAY_CHARS = 12


def generate_api_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_api_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def display_prefix(key: str) -> str:
    return key[:DISPLAY_CHARS]
