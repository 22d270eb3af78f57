"""The video errors: every expected failure to read a video is one of these, with a one-line
`<file>: <reason>` message, so callers report it and go on with the next file."""

from __future__ import annotations

from pathlib import Path

from videomini.errors import VideominiError


class VideoError(VideominiError):  # exit 1, HTTP 400
    """A video could not be read. The message is one line: `<file>: <reason>`."""

    def __init__(self, path: str | Path, reason: str) -> None:
        self.path = str(path)
        self.reason = " ".join(str(reason).split())  # one line, whatever the library said
        super().__init__(f"{self.path}: {self.reason}")


class VideoNotFound(VideoError, FileNotFoundError):
    """The path does not exist."""
    http_status = 404


class NotAVideo(VideoError):
    """The file is empty, not a media container, or unreadable."""


class NoVideoStream(VideoError):
    """The container holds no video stream (e.g. audio only)."""


class DecodeError(VideoError):
    """The container opened but no frame could be decoded (or the decoder failed)."""


class BackendUnavailable(VideoError):
    """The requested backend is not installed or cannot read this file."""
