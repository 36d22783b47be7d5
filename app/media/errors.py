"""Errors raised by the media domain.

They are plain exceptions: `app/media/` imports no other domain, so the caller (a worker task or
an endpoint) translates them into job errors or problem responses. Each is a `ValueError`
because each says "this input is not what we can work with", never "we are broken".
"""


class MediaError(ValueError):
    """Base class for every media error."""


class MediaUnreadableError(MediaError):
    """The file cannot be opened as media, or it holds no audio or video stream."""


class NoAudioStreamError(MediaError):
    """An operation needs an audio stream and the file has none."""


class AudioCopyError(MediaError):
    """The audio stream cannot be stream-copied into the requested container."""


class VideoTooLongError(MediaError):
    """The video is longer than the gateway splits into segments."""


class SegmentPlanError(MediaError):
    """The video cannot be split into segments within the model's limits (e.g. it is shorter
    than the model's minimum)."""
