"""The errors a user should see: a readable message naming a file or a key."""

from __future__ import annotations

from pathlib import Path


class VideoLMError(Exception):
    """Bad input (file, folder, parameter): the message says which and what is expected."""


class VideoError(VideoLMError):
    """A video or folder of videos cannot be used; the message names it."""


class UnusableVideo(VideoError):
    """One listed video cannot be used: `reason` says why; the message names the file too."""

    def __init__(self, path: str | Path, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason

    def __reduce__(self):  # rebuilt from (path, reason) when a worker process sends it back
        return type(self), (self.path, self.reason)
