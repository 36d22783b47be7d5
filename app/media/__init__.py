"""Media: measure files with PyAV, copy audio out of video, fit a video's audio to its length,
store files and serve them by range.

Imports no other domain of the app; configuration comes in as arguments.
"""

from app.media.errors import AudioCopyError, MediaError, MediaUnreadableError, NoAudioStreamError
from app.media.extract import extract_audio
from app.media.factory import StorageKind, build_storage
from app.media.normalize import FitResult, fit_audio_to_video
from app.media.probe import AudioInfo, MediaInfo, VideoInfo, probe
from app.media.ranges import ByteRange, RangeNotSatisfiableError, parse_range, stream_stored_object
from app.media.s3 import S3Storage, StorageBackendError
from app.media.samples import ensure_sample_video
from app.media.storage import (
    InvalidKeyError,
    LocalStorage,
    ObjectNotFoundError,
    ObjectTooLargeError,
    Storage,
    StorageError,
    StoredObject,
    validate_key,
)

__all__ = [
    "AudioCopyError",
    "AudioInfo",
    "ByteRange",
    "FitResult",
    "InvalidKeyError",
    "LocalStorage",
    "MediaError",
    "MediaInfo",
    "MediaUnreadableError",
    "NoAudioStreamError",
    "ObjectNotFoundError",
    "ObjectTooLargeError",
    "RangeNotSatisfiableError",
    "S3Storage",
    "Storage",
    "StorageBackendError",
    "StorageError",
    "StorageKind",
    "StoredObject",
    "VideoInfo",
    "build_storage",
    "ensure_sample_video",
    "extract_audio",
    "fit_audio_to_video",
    "parse_range",
    "probe",
    "stream_stored_object",
    "validate_key",
]
