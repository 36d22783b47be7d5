"""Ed25519 webhook signing, as fal documents it.

The keypair is generated at first start and kept in `<data_dir>/webhook_ed25519.pem`, so a
restarted emulator keeps signing with the key receivers have cached. The public key is served
as a JWKS at `/.well-known/jwks.json`.
"""

from __future__ import annotations

import base64
import hashlib
import os
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

KEY_FILE = "webhook_ed25519.pem"


class WebhookSigner:
    def __init__(self, private_key: Ed25519PrivateKey) -> None:
        self._key = private_key
        raw = private_key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        self.public_x = base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    @classmethod
    def load_or_create(cls, data_dir: Path) -> WebhookSigner:
        path = data_dir / KEY_FILE
        if path.exists():
            key = serialization.load_pem_private_key(path.read_bytes(), password=None)
            if not isinstance(key, Ed25519PrivateKey):
                raise ValueError(f"{path} does not hold an Ed25519 private key")
            return cls(key)
        key = Ed25519PrivateKey.generate()
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(pem)
        tmp.replace(path)
        return cls(key)

    def jwks(self) -> dict[str, Any]:
        return {"keys": [{"kty": "OKP", "crv": "Ed25519", "x": self.public_x}]}

    def signature(self, request_id: str, user_id: str, timestamp: str, body: bytes) -> str:
        """Hex signature over `request_id\\nuser_id\\ntimestamp\\nsha256_hex(body)`."""
        message = "\n".join((request_id, user_id, timestamp, hashlib.sha256(body).hexdigest()))
        return self._key.sign(message.encode()).hex()
