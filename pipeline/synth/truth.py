"""Ground truth of generated sets: `truth.csv` (the sounding object) and `distractors.csv` (the silent ones).

`truth.csv` starts with the columns of the evaluate stage's fixation CSV (`video,frame,x,y`), so it can be
scored as a fixation file; `label,audible,radius` follow. `frame` is the 0-based frame index at the
video's native rate; x is the column and y the row of the object's centre in pixels of the video as
written (0, 0 = centre of the top-left pixel).
`distractors.csv`: `video,frame,x,y,label,radius,distractor` (the distractor's 0-based index in its video).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.common.files import atomic_output

TRUTH_FILE = "truth.csv"
DISTRACTORS_FILE = "distractors.csv"
TRUTH_COLUMNS = ("video", "frame", "x", "y", "label", "audible", "radius")
DISTRACTOR_COLUMNS = ("video", "frame", "x", "y", "label", "radius", "distractor")


@dataclass(frozen=True)
class TruthTrack:
    """One object's centre in every frame of one video."""

    label: str
    frame: np.ndarray  # int64 (n,)
    x: np.ndarray  # float64 (n,)
    y: np.ndarray  # float64 (n,)
    radius: np.ndarray  # float64 (n,)
    audible: np.ndarray  # bool (n,); always False for distractors


def _write_atomically(path: Path, header: tuple[str, ...], rows: list[tuple]) -> None:
    with atomic_output(path) as partial, partial.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)


def write_truth(path: Path, tracks: dict[str, TruthTrack]) -> None:
    rows = []
    for video_id, track in tracks.items():
        for k in range(track.frame.size):
            rows.append((
                video_id, int(track.frame[k]), f"{track.x[k]:.3f}", f"{track.y[k]:.3f}", track.label,
                int(track.audible[k]), f"{track.radius[k]:.3f}",
            ))  # fmt: skip
    _write_atomically(path, TRUTH_COLUMNS, rows)


def write_distractors(path: Path, tracks: dict[str, list[TruthTrack]]) -> None:
    rows = []
    for video_id, distractors in tracks.items():
        for index, track in enumerate(distractors):
            for k in range(track.frame.size):
                rows.append((
                    video_id, int(track.frame[k]), f"{track.x[k]:.3f}", f"{track.y[k]:.3f}", track.label,
                    f"{track.radius[k]:.3f}", index,
                ))  # fmt: skip
    _write_atomically(path, DISTRACTOR_COLUMNS, rows)


def _read_rows(path: Path, needed: tuple[str, ...]) -> list[dict[str, str]]:
    try:
        with Path(path).open(newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            missing = [c for c in needed if c not in (reader.fieldnames or [])]
            if missing:
                raise ValueError(f"{path}: missing column(s) {', '.join(missing)}")
            return list(reader)
    except OSError as exc:
        raise ValueError(f"{path}: cannot read ({exc.strerror})") from exc


def _track(label: str, rows: list[dict[str, str]], audible: bool) -> TruthTrack:
    rows = sorted(rows, key=lambda r: int(r["frame"]))
    return TruthTrack(
        label=label,
        frame=np.array([int(r["frame"]) for r in rows], dtype=np.int64),
        x=np.array([float(r["x"]) for r in rows]),
        y=np.array([float(r["y"]) for r in rows]),
        radius=np.array([float(r["radius"]) for r in rows]),
        audible=np.array([r["audible"] == "1" for r in rows] if audible else [False] * len(rows)),
    )


def read_truth(path: str | Path) -> dict[str, TruthTrack]:
    """`truth.csv` (or the folder holding it) → {video id: the sounding object's track}."""
    path = Path(path)
    if path.is_dir():
        path = path / TRUTH_FILE
    by_video: dict[str, list[dict[str, str]]] = {}
    for row in _read_rows(path, TRUTH_COLUMNS):
        by_video.setdefault(row["video"], []).append(row)
    return {video: _track(rows[0]["label"], rows, audible=True) for video, rows in by_video.items()}


def read_distractors(path: str | Path) -> dict[str, list[TruthTrack]]:
    """`distractors.csv` (or its folder) → {video id: tracks of its silent distractors, by index}."""
    path = Path(path)
    if path.is_dir():
        path = path / DISTRACTORS_FILE
    grouped: dict[str, dict[int, list[dict[str, str]]]] = {}
    for row in _read_rows(path, DISTRACTOR_COLUMNS):
        grouped.setdefault(row["video"], {}).setdefault(int(row["distractor"]), []).append(row)
    return {
        video: [_track(rows[0]["label"], rows, audible=False) for _, rows in sorted(by_index.items())]
        for video, by_index in grouped.items()
    }
