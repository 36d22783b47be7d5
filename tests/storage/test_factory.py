"""`build_storage` builds each backend by name, and refuses an unknown one or a wrong option;
`storage_from_settings` builds the one the settings choose."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from pydantic import SecretStr

from app.config import Settings
from app.storage import LocalStorage, S3Storage, build_storage, storage_from_settings

# --- build_storage --------------------------------------------------------------------------------


def test_build_storage_makes_a_local_storage(tmp_path: Path) -> None:
    storage = build_storage("local", root=tmp_path / "files")

    assert isinstance(storage, LocalStorage)
    assert storage.root == (tmp_path / "files").resolve()


def test_build_storage_makes_an_s3_storage() -> None:
    storage = build_storage(
        "s3",
        bucket="media",
        prefix="foley/",
        endpoint_url="http://127.0.0.1:9",  # nothing is contacted while building
        region="auto",
        access_key_id="id",
        secret_access_key="secret",
        force_path_style=True,
        presign_expires_s=300,
    )

    assert isinstance(storage, S3Storage)
    assert (storage.bucket, storage.prefix, storage.presign_expires_s) == ("media", "foley", 300)


def test_build_storage_refuses_an_unknown_kind_or_option(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown storage backend"):
        build_storage("ftp", root=tmp_path)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        build_storage("local", root=tmp_path, bucket="media")
    with pytest.raises(TypeError):
        build_storage("s3")


# --- storage_from_settings ------------------------------------------------------------------------


def test_settings_choose_the_local_storage_under_the_data_directory(settings: Settings) -> None:
    storage = storage_from_settings(settings)

    assert isinstance(storage, LocalStorage)
    assert storage.root == (settings.data_dir / "files").resolve()


def test_settings_choose_an_s3_storage(settings: Settings) -> None:
    s3 = settings.model_copy(
        update={
            "storage_backend": "s3",
            "s3_bucket": "media",
            "s3_prefix": "foley/",
            "s3_endpoint_url": "http://127.0.0.1:9",  # nothing is contacted while building
            "s3_region": "auto",
            "s3_access_key_id": SecretStr("id"),
            "s3_secret_access_key": SecretStr("secret"),
            "s3_force_path_style": True,
            "signed_url_ttl": timedelta(minutes=5),
        }
    )

    storage = storage_from_settings(s3)

    assert isinstance(storage, S3Storage)
    assert (storage.bucket, storage.prefix, storage.presign_expires_s) == ("media", "foley", 300)


def test_s3_without_a_bucket_is_refused(settings: Settings) -> None:
    with pytest.raises(ValueError, match="FOLEY_S3_BUCKET"):
        storage_from_settings(settings.model_copy(update={"storage_backend": "s3"}))
