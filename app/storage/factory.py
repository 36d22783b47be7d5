"""Build the configured storage backend.

`build_storage` is the one place that knows the backends by name, so the settings can choose one
with a string (`FOLEY_STORAGE_BACKEND=local|s3`) and callers only ever see `Storage`.
`storage_from_settings` is what the API and the worker call at startup.
"""

from __future__ import annotations

from typing import Any, Literal

from app.config import Settings
from app.storage.base import Storage
from app.storage.local import LocalStorage
from app.storage.s3 import S3Storage

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


def storage_from_settings(settings: Settings) -> Storage:
    """The backend the settings choose: the local filesystem under the data directory (default),
    or S3-compatible storage (`FOLEY_STORAGE_BACKEND=s3`, `FOLEY_S3_*`)."""
    if settings.storage_backend == "s3":
        if not settings.s3_bucket:
            raise ValueError("FOLEY_S3_BUCKET must be set when FOLEY_STORAGE_BACKEND=s3")
        return build_storage(
            "s3",
            bucket=settings.s3_bucket,
            prefix=settings.s3_prefix,
            endpoint_url=settings.s3_endpoint_url,
            region=settings.s3_region,
            access_key_id=(
                settings.s3_access_key_id.get_secret_value() if settings.s3_access_key_id else None
            ),
            secret_access_key=(
                settings.s3_secret_access_key.get_secret_value()
                if settings.s3_secret_access_key
                else None
            ),
            force_path_style=settings.s3_force_path_style,
            presign_expires_s=int(settings.signed_url_ttl.total_seconds()),
        )
    return build_storage("local", root=settings.data_dir / "files")
