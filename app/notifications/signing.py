"""Standard Webhooks signing: secrets, and the three headers of an attempt.

Signing is the ``standardwebhooks`` package's own (``Webhook.sign``), the code receivers verify
with, so the two cannot drift apart. A secret is ``whsec_`` + base64 of 32 random bytes.
"""

from __future__ import annotations

import base64
import functools
import secrets
from datetime import UTC, datetime

from standardwebhooks import Webhook

SECRET_PREFIX = "whsec_"  # noqa: S105 (the format's prefix, not a secret)


def new_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode("ascii")


@functools.lru_cache(maxsize=4096)
def _signer(secret: str) -> Webhook:
    # Decoding the secret once per secret, not per attempt.
    return Webhook(secret)


def signed_headers(
    message_id: str, body: str, signing_secrets: list[str], *, now: datetime | None = None
) -> dict[str, str]:
    """The attempt's headers: the message id, this attempt's time and one signature per secret
    (two during a rotation's grace), space-separated."""
    at = (now or datetime.now(UTC)).replace(microsecond=0)
    payload = body.encode()
    signature = " ".join(_signer(s).sign(message_id, at, payload) for s in signing_secrets)
    return {
        "webhook-id": message_id,
        "webhook-timestamp": str(int(at.timestamp())),
        "webhook-signature": signature,
        "content-type": "application/json",
    }
