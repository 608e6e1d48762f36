"""Finding the tagged input videos: a `<class>/<video file>` folder (AVE layout) or a CSV manifest.

A manifest has the columns `path,label` (and optionally `id`); relative paths resolve against the
manifest's folder. The video id is the `id` column, else derived from the file name without its
extension (`stores.records.safe_video_id`: the name itself when it is a safe id, else an ASCII form of it
plus a hash of the name); the file's name is kept on the record as `source_name`.
Where tags are not needed (`require_labels=False`, e.g. predicting saliency for new videos), a single
video file, a flat folder of videos and a manifest without `label` are accepted too.
Problems with single inputs (not a video, unreadable, duplicate or unsafe ids) are returned, not
raised, so the other videos go on; only inputs that are usable claim their id, so a bad file never
blocks a good one of the same name. A manifest that cannot be read at all raises `InputError`.
"""

from __future__ import annotations

import csv
import errno
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.common.errors import BadInput
from stores.records import VideoRecord, safe_video_id, video_id_problem

VIDEO_SUFFIXES = {
    ".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".mpg", ".mpeg", ".ts", ".m2ts", ".mts",
    ".flv", ".wmv", ".3gp", ".ogv",
}  # fmt: skip
# Extensions that by convention hold sound only (.ogg is left out: it may carry Theora video).
AUDIO_SUFFIXES = {".wav", ".m4a", ".mp3", ".aac", ".flac", ".opus", ".oga", ".mka", ".wma", ".aif", ".aiff"}
_ID_ADVICE = "use letters, digits, '_', '-', '.' in the id column, or leave it empty to derive one from the file name"


class InputError(BadInput):
    """The input as a whole cannot be used (missing folder, unreadable manifest, missing column)."""


@dataclass(frozen=True)
class InputProblem:
    video_id: str
    path: str
    reason: str


@dataclass
class InputSet:
    records: list[VideoRecord] = field(default_factory=list)
    problems: list[InputProblem] = field(default_factory=list)

    @property
    def classes(self) -> list[str]:
        return sorted({r.label for r in self.records if r.label})


@dataclass(frozen=True)
class _Row:
    """One listed input before its id is settled; `problem` is what its listing alone shows is wrong."""

    path: Path
    label: str
    explicit_id: str | None = None
    problem: str | None = None


def discover(source: str | Path, require_labels: bool = True) -> InputSet:
    """The videos of `source`. Without `require_labels`, records may carry an empty label."""
    source = Path(source)
    if not source.exists():
        raise InputError(f"{source}: no such folder or manifest")
    if source.is_dir():
        rows = _folder_rows(source, require_labels)
    elif source.suffix.lower() in {".csv", ".tsv"}:
        rows = _manifest_rows(source, require_labels)
    elif not require_labels and source.suffix.lower() in VIDEO_SUFFIXES:
        rows = [_Row(source, "", problem=file_problem(source))]
    elif not require_labels:
        raise InputError(f"{source}: expected a video file, a folder of videos or a CSV manifest (path[,label])")
    else:
        raise InputError(f"{source}: expected a folder of <class>/<video> or a CSV manifest (path,label)")
    return _records_from_rows(rows, require_labels)


def file_problem(path: Path, videos_only: bool = True) -> str | None:
    """Why `path` cannot be an input video, as far as its name and file metadata tell; None if it may be.

    `videos_only=False` (manifest rows) leaves unknown extensions to the decoder: a manifest names its
    files on purpose, and videos do come with odd extensions. Known audio-only extensions are refused
    either way, so such a file never claims a video id.
    """
    try:
        info = path.stat()
    except OSError as exc:
        reason = _stat_failure(path, exc)
        if reason is None:
            raise
        return reason
    if stat.S_ISDIR(info.st_mode):
        return "is a folder, not a video file"
    if not stat.S_ISREG(info.st_mode):
        return "not a regular file (a device, pipe or socket)"  # reading a pipe could block forever
    suffix = path.suffix.lower()
    if suffix in AUDIO_SUFFIXES:
        return f"audio-only file ({suffix}): no video stream"
    if videos_only and suffix not in VIDEO_SUFFIXES:
        return f"not a video file (extension {suffix})" if suffix else "not a video file (no extension)"
    if not os.access(path, os.R_OK):
        return "cannot read the file (permission denied)"
    if info.st_size == 0:
        return "empty file (0 bytes)"
    return None


def _stat_failure(path: Path, exc: OSError) -> str | None:
    """The reason for the stat errors a path itself causes; None for any other (not the input's fault)."""
    if exc.errno == errno.ELOOP:
        return "symlink loop"
    if exc.errno in (errno.ENOENT, errno.ENOTDIR):
        if path.is_symlink():
            return f"broken symlink (its target {os.readlink(path)} does not exist)"
        return "no such file"
    if exc.errno in (errno.EACCES, errno.EPERM):
        return "cannot read the file (permission denied)"
    if exc.errno == errno.ENAMETOOLONG:
        return "file name too long"
    return None


def _visible(folder: Path) -> list[Path]:
    # Hidden entries are not inputs: `avfix synth` and other tools write `.name.partial` files there.
    return sorted(p for p in folder.iterdir() if not p.name.startswith("."))


def _folder_rows(root: Path, require_labels: bool = True) -> list[_Row]:
    # Besides the class folders the root may hold manifests and truth tables (`avfix synth` writes
    # some): only files with a video extension there are inputs (or, without tags, audio ones too).
    named_at_top = VIDEO_SUFFIXES if require_labels else VIDEO_SUFFIXES | AUDIO_SUFFIXES
    entries = _visible(root)
    class_dirs = [p for p in entries if p.is_dir()]  # False for a symlink loop: a looping `x.mp4` is a file here
    top = [p for p in entries if not p.is_dir() and p.suffix.lower() in named_at_top]
    # Files beside the class folders first, as before: on a clash of ids they keep theirs.
    rows = [_Row(path, "", problem=_top_level_problem(path, require_labels)) for path in top]
    for class_dir in class_dirs:
        rows += [_Row(path, class_dir.name, problem=file_problem(path)) for path in _visible(class_dir)]
    if not any(row.path.suffix.lower() in VIDEO_SUFFIXES for row in rows):
        expected = "<class>/<video file>" if require_labels else "video files or <class>/<video file>"
        raise InputError(f"{root}: no videos found (expected {expected} with a video extension)")
    return rows


def _top_level_problem(path: Path, require_labels: bool) -> str | None:
    problem = file_problem(path)
    if problem is None and require_labels:
        return "not in a class folder (expected <class>/<video file>: the folder's name is the tag)"
    return problem


def _manifest_rows(manifest: Path, require_labels: bool = True) -> list[_Row]:
    try:
        text = manifest.read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise InputError(f"{manifest}: cannot read the manifest ({exc.strerror})") from exc
    except UnicodeDecodeError as exc:
        raise InputError(f"{manifest}: not UTF-8 text (byte {exc.start}); save the manifest as UTF-8") from exc
    delimiter = "\t" if manifest.suffix.lower() == ".tsv" else ","
    reader = csv.DictReader(text.splitlines(), delimiter=delimiter)
    columns = [c.strip() for c in (reader.fieldnames or [])]
    for needed in ("path", "label") if require_labels else ("path",):
        if needed not in columns:
            raise InputError(
                f"{manifest}: no {needed!r} column (columns: {', '.join(columns) or 'none'}; "
                "expected path,label[,id])"
            )
    rows = []
    for row in reader:
        row = {k.strip(): (v or "").strip() for k, v in row.items() if k is not None}
        if not row.get("path"):
            continue
        path = Path(row["path"])
        if not path.is_absolute():
            path = manifest.parent / path
        rows.append(_Row(path, row.get("label", ""), row.get("id") or None, file_problem(path, videos_only=False)))
    if not rows:
        raise InputError(f"{manifest}: the manifest lists no videos")
    return rows


def _records_from_rows(rows: list[_Row], require_labels: bool = True) -> InputSet:
    found = InputSet()
    # Only usable inputs claim an id: a missing or audio-only file must not make a later good one a duplicate.
    claimed: dict[str, Path] = {}
    for row in rows:
        video_id, problem = _row_id(row)
        problem = problem or row.problem
        if problem is None and not row.label and require_labels:
            problem = "empty label"
        if problem is None and video_id in claimed:
            problem = f"duplicate video id {video_id!r} (already used by {claimed[video_id]})"
        if problem is not None:
            found.problems.append(InputProblem(video_id, str(row.path), problem))
            continue
        claimed[video_id] = row.path
        found.records.append(VideoRecord(video_id=video_id, path=row.path, label=row.label, source_name=row.path.name))
    return found


def _row_id(row: _Row) -> tuple[str, str | None]:
    """The row's video id, and why it is unusable. An `id` given in a manifest is the user's choice:
    it is checked, never rewritten."""
    if row.explicit_id is None:
        return safe_video_id(row.path.stem), None
    problem = video_id_problem(row.explicit_id)
    return row.explicit_id, (f"{problem}: {_ID_ADVICE}" if problem else None)
