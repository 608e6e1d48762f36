"""The record of one input video that flows from stage to stage."""

from __future__ import annotations

import hashlib
import re
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path

# A video id becomes a Zarr group name, so it must not be able to name a path outside `videos/`.
_VIDEO_ID = re.compile(r"[A-Za-z0-9_\-][A-Za-z0-9_.\-]*")
_UNSAFE_RUN = re.compile(r"[^A-Za-z0-9_.\-]+")
_DOTS = re.compile(r"\.{2,}")
# A derived id must stay a valid file name (255 bytes on common file systems) once the hash is added.
_MAX_DERIVED = 255 - len("-12345678")


def video_id_problem(video_id: str) -> str | None:
    """Why `video_id` cannot be a group name, or None when it can."""
    if not video_id:
        return "empty video id"
    if "/" in video_id or "\\" in video_id or ".." in video_id:
        return f"video id {video_id!r} would escape the store (contains a path separator or '..')"
    if not _VIDEO_ID.fullmatch(video_id):  # fullmatch: `$` would let a trailing newline through
        return f"video id {video_id!r} has characters other than letters, digits, '_', '-', '.'"
    return None


def safe_video_id(name: str) -> str:
    """The video id of a file whose name without extension is `name`: `name` itself when it is safe,
    else a readable ASCII form of it plus 8 hex digits of its SHA-1 (`my clip ünï` -> `my_clip_uni-<hash>`).

    The hash keeps names that read the same in ASCII apart, and depends on nothing but the name, so the
    id is the same on every run and machine. Names are hashed in NFC, so a copy whose file system
    stores names decomposed (NFD, e.g. macOS HFS+) keeps its ids.
    """
    if video_id_problem(name) is None:
        return name  # ids of existing workspaces stay as they were
    decomposed = unicodedata.normalize("NFKD", name)
    ascii_ish = "".join(c for c in decomposed if not unicodedata.combining(c))
    readable = _DOTS.sub(".", _UNSAFE_RUN.sub("_", ascii_ish)).strip("_.")
    readable = readable[:_MAX_DERIVED].rstrip("_.")
    # surrogatepass: names with undecodable bytes arrive as lone surrogates and must hash too.
    digest = hashlib.sha1(unicodedata.normalize("NFC", name).encode("utf-8", "surrogatepass")).hexdigest()
    return f"{readable}-{digest[:8]}"


@dataclass(frozen=True)
class VideoRecord:
    """One tagged input video. `fps`, `n_frames`, `has_audio` are filled in once it is decoded.

    `source_name` is the file's name as given, kept because `video_id` may be derived from it.
    """

    video_id: str
    path: Path
    label: str
    fps: float | None = None
    n_frames: int | None = None
    has_audio: bool | None = None
    source_name: str = ""
    extra: dict = field(default_factory=dict, compare=False)
