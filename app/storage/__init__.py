"""Storage: where the gateway keeps files (uploads, job outputs), behind one async interface.

`Storage` is the interface (base.py); `LocalStorage` (local.py, the default) and `S3Storage`
(s3.py, any S3-compatible store) implement it; `storage_from_settings` (factory.py) builds the
one the settings choose. Callers depend on `Storage` only.

Imports no domain of the app; the factory reads `app.config`.
"""

from app.storage.base import (
    InvalidKeyError,
    ObjectNotFoundError,
    ObjectTooLargeError,
    Storage,
    StorageError,
    StoredObject,
    validate_key,
)
from app.storage.factory import StorageKind, build_storage, storage_from_settings
from app.storage.local import LocalStorage
from app.storage.s3 import S3Storage, StorageBackendError

__all__ = [
    "InvalidKeyError",
    "LocalStorage",
    "ObjectNotFoundError",
    "ObjectTooLargeError",
    "S3Storage",
    "Storage",
    "StorageBackendError",
    "StorageError",
    "StorageKind",
    "StoredObject",
    "build_storage",
    "storage_from_settings",
    "validate_key",
]
