"""Finding the tagged input videos: a `<class>/<video file>` folder (AVE layout) or a CSV manifest.

A manifest has the columns `path,label` (and optionally `id`); relative paths resolve against the
manifest's folder. The video id is the `id` column or the file name without its extension.
Where tags are not needed (`require_labels=False`, e.g. predicting saliency for new videos), a single
video file, a flat folder of videos and a manifest without `label` are accepted too.
Problems with single inputs (duplicate ids, ids that would escape the store) are returned, not
raised, so the other videos go on; a manifest that cannot be read at all raises `InputError`.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.common.errors import BadInput
from stores.records import VideoRecord, video_id_problem

VIDEO_SUFFIXES = {
    ".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".mpg", ".mpeg", ".ts", ".m2ts", ".mts",
    ".flv", ".wmv", ".3gp", ".ogv",
}  # fmt: skip


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
        rows = [(None, source, "")]
    elif not require_labels:
        raise InputError(f"{source}: expected a video file, a folder of videos or a CSV manifest (path[,label])")
    else:
        raise InputError(f"{source}: expected a folder of <class>/<video> or a CSV manifest (path,label)")
    return _records_from_rows(rows, require_labels)


def _is_video(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in VIDEO_SUFFIXES


def _folder_rows(root: Path, require_labels: bool = True) -> list[tuple[str | None, Path, str]]:
    rows = []
    if not require_labels:  # videos directly in the folder have no tag
        rows += [(None, path, "") for path in sorted(root.iterdir()) if _is_video(path)]
    for class_dir in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        for path in sorted(class_dir.iterdir()):
            if _is_video(path):
                rows.append((None, path, class_dir.name))
    if not rows:
        expected = "<class>/<video file>" if require_labels else "video files or <class>/<video file>"
        raise InputError(f"{root}: no videos found (expected {expected} with a video extension)")
    return rows


def _manifest_rows(manifest: Path, require_labels: bool = True) -> list[tuple[str | None, Path, str]]:
    try:
        text = manifest.read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise InputError(f"{manifest}: cannot read the manifest ({exc.strerror})") from exc
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
        rows.append((row.get("id") or None, path, row.get("label", "")))
    if not rows:
        raise InputError(f"{manifest}: the manifest lists no videos")
    return rows


def _records_from_rows(rows: list[tuple[str | None, Path, str]], require_labels: bool = True) -> InputSet:
    found = InputSet()
    seen: dict[str, Path] = {}
    for explicit_id, path, label in rows:
        video_id = explicit_id if explicit_id is not None else path.stem
        problem = video_id_problem(video_id)
        if problem is None and not label and require_labels:
            problem = "empty label"
        if problem is None and video_id in seen:
            problem = f"duplicate video id {video_id!r} (already used by {seen[video_id]})"
        if problem is not None:
            found.problems.append(InputProblem(video_id, str(path), problem))
            continue
        seen[video_id] = path
        found.records.append(VideoRecord(video_id=video_id, path=path, label=label))
    return found
