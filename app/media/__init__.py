"""Media: measure files with PyAV, copy audio out of video, fit a video's audio to its length;
for long videos and finished sound: plan segments, cut them out, stitch their audio, mix it with
the original, normalize loudness and encode.

Imports no other domain of the app; configuration comes in as arguments.
"""

from app.media.cutting import SegmentCut, cut_segment
from app.media.encode import AudioFormat, file_suffix
from app.media.errors import (
    AudioCopyError,
    MediaError,
    MediaUnreadableError,
    NoAudioStreamError,
    SegmentPlanError,
    VideoTooLongError,
)
from app.media.extract import FittedVideo, extract_audio, fit_measure_extract
from app.media.loudness import LoudnessTarget
from app.media.mixing import MixSettings
from app.media.normalize import FitResult, fit_audio_to_video
from app.media.pcm import PcmFormat
from app.media.probe import AudioInfo, MediaInfo, VideoInfo, probe
from app.media.samples import ensure_sample_video
from app.media.segments import Segment, plan_segments
from app.media.soundtrack import AudioMode, SoundtrackResult, build_soundtrack
from app.media.stitch import SegmentAudio

__all__ = [
    "AudioCopyError",
    "AudioFormat",
    "AudioInfo",
    "AudioMode",
    "FitResult",
    "FittedVideo",
    "LoudnessTarget",
    "MediaError",
    "MediaInfo",
    "MediaUnreadableError",
    "MixSettings",
    "NoAudioStreamError",
    "PcmFormat",
    "Segment",
    "SegmentAudio",
    "SegmentCut",
    "SegmentPlanError",
    "SoundtrackResult",
    "VideoInfo",
    "VideoTooLongError",
    "build_soundtrack",
    "cut_segment",
    "ensure_sample_video",
    "extract_audio",
    "file_suffix",
    "fit_audio_to_video",
    "fit_measure_extract",
    "plan_segments",
    "probe",
]
