"""The job token carried in the webhook URL we give fal.

fal signs its webhooks, but a webhook only names fal's request id. If the submit's answer was lost
(an ambiguous submit) we never learnt that id; the token in the URL still says which job the
request belongs to, and its HMAC means nobody can attach a request to a job of their choosing.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import uuid
from pathlib import Path
from urllib.parse import urlencode

from app.config import Environment, Settings

SECRET_FILE = "webhook_secret"  # noqa: S105 - a file name, not a secret


def resolve_webhook_secret(settings: Settings) -> bytes:
    """The configured secret, or (outside production) one generated once and kept in the data
    directory, so API and worker processes sharing it agree."""
    if settings.webhook_secret is not None:
        return settings.webhook_secret.get_secret_value().encode()
    if settings.env is Environment.production:
        raise RuntimeError("FOLEY_WEBHOOK_SECRET must be set in production")
    path = Path(settings.data_dir) / SECRET_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        tmp = path.with_suffix(f".{uuid.uuid4().hex}.tmp")
        tmp.write_text(secrets.token_urlsafe(32))
        tmp.chmod(0o600)
        try:
            os.link(tmp, path)  # atomic; a concurrent process that won keeps its secret
        except FileExistsError:
            pass
        finally:
            tmp.unlink(missing_ok=True)
    return path.read_text().strip().encode()


class JobTokens:
    def __init__(self, secret: bytes) -> None:
        self._secret = secret

    @property
    def secret(self) -> bytes:
        return self._secret

    def sign(self, job_id: uuid.UUID) -> str:
        return hmac.new(self._secret, f"job:{job_id}".encode(), hashlib.sha256).hexdigest()[:32]

    def verify(self, job_id: uuid.UUID, token: str) -> bool:
        return hmac.compare_digest(self.sign(job_id), token)

    def webhook_url(self, public_url: str, job_id: uuid.UUID) -> str:
        query = urlencode({"job": str(job_id), "token": self.sign(job_id)})
        return f"{public_url.rstrip('/')}/v1/webhooks/fal?{query}"
