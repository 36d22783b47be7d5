"""Media: measure files with PyAV, copy audio out of video, fit a video's audio to its length.

Imports no other domain of the app; configuration comes in as arguments.
"""

from app.media.errors import AudioCopyError, MediaError, MediaUnreadableError, NoAudioStreamError
from app.media.extract import extract_audio
from app.media.normalize import FitResult, fit_audio_to_video
from app.media.probe import AudioInfo, MediaInfo, VideoInfo, probe
from app.media.samples import ensure_sample_video

__all__ = [
    "AudioCopyError",
    "AudioInfo",
    "FitResult",
    "MediaError",
    "MediaInfo",
    "MediaUnreadableError",
    "NoAudioStreamError",
    "VideoInfo",
    "ensure_sample_video",
    "extract_audio",
    "fit_audio_to_video",
    "probe",
]
