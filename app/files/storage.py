"""The storage backend chosen by the settings (local filesystem by default, or S3-compatible)."""

from __future__ import annotations

from app.config import Settings
from app.media.factory import build_storage
from app.media.storage import Storage


def storage_from_settings(settings: Settings) -> Storage:
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
