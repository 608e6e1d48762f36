"""The record of one input video that flows from stage to stage."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

# A video id becomes a Zarr group name, so it must not be able to name a path outside `videos/`.
_VIDEO_ID = re.compile(r"^[A-Za-z0-9_\-][A-Za-z0-9_.\-]*$")


def video_id_problem(video_id: str) -> str | None:
    """Why `video_id` cannot be a group name, or None when it can."""
    if not video_id:
        return "empty video id"
    if "/" in video_id or "\\" in video_id or ".." in video_id:
        return f"video id {video_id!r} would escape the store (contains a path separator or '..')"
    if not _VIDEO_ID.match(video_id):
        return f"video id {video_id!r} has characters other than letters, digits, '_', '-', '.'"
    return None


@dataclass(frozen=True)
class VideoRecord:
    """One tagged input video. `fps`, `n_frames`, `has_audio` are filled in once it is decoded."""

    video_id: str
    path: Path
    label: str
    fps: float | None = None
    n_frames: int | None = None
    has_audio: bool | None = None
    extra: dict = field(default_factory=dict, compare=False)
