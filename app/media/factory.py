"""Build the configured storage backend.

`build_storage` is the one place that knows the backends by name, so the settings can choose one
with a string (`FOLEY_STORAGE_BACKEND=local|s3`) and callers only ever see `Storage`.
"""

from __future__ import annotations

from typing import Any, Literal

from app.media.s3 import S3Storage
from app.media.storage import LocalStorage, Storage

StorageKind = Literal["local", "s3"]


def build_storage(kind: StorageKind, **options: Any) -> Storage:
    """The backend `kind`, built with `options`, its constructor's keyword arguments.

    * `local`: `root` (a directory; created on the first write);
    * `s3`: `bucket`, and optionally `prefix`, `endpoint_url`, `region`, `access_key_id`,
      `secret_access_key`, `force_path_style`, `presign_expires_s`, `part_size` … (see
      `S3Storage`).

    An unknown kind raises `ValueError`, a missing or unknown option `TypeError` (from the
    constructor), so a configuration mistake fails at startup.
    """
    if kind == "local":
        return LocalStorage(**options)
    if kind == "s3":
        return S3Storage(**options)
    raise ValueError(f"unknown storage backend {kind!r}: expected 'local' or 's3'")
