"""Media: measure files with PyAV, copy audio out of video, fit a video's audio to its length,
serve stored files by range.

Imports no other domain of the app; configuration comes in as arguments.
"""

from app.media.errors import AudioCopyError, MediaError, MediaUnreadableError, NoAudioStreamError
from app.media.extract import extract_audio
from app.media.normalize import FitResult, fit_audio_to_video
from app.media.probe import AudioInfo, MediaInfo, VideoInfo, probe
from app.media.ranges import ByteRange, RangeNotSatisfiableError, parse_range, stream_stored_object
from app.media.samples import ensure_sample_video

__all__ = [
    "AudioCopyError",
    "AudioInfo",
    "ByteRange",
    "FitResult",
    "MediaError",
    "MediaInfo",
    "MediaUnreadableError",
    "NoAudioStreamError",
    "RangeNotSatisfiableError",
    "VideoInfo",
    "ensure_sample_video",
    "extract_audio",
    "fit_audio_to_video",
    "parse_range",
    "probe",
    "stream_stored_object",
]
