"""The evaluate stage's resume cache: each finished unit's per-item scores, one JSON line in
`WS/evaluate_cache.jsonl` under a key built from the settings and the unit's inputs, and the
fingerprints of those inputs (a changed input gives a new key, so the unit is scored again)."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.common.files import write_text_atomic
from pipeline.evaluate import fixations as fx

CACHE_NAME = "evaluate_cache.jsonl"


class ScoreCache:
    """Finished units' results, one JSON line each; a torn last line (killed mid-write) is ignored."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.entries: dict[str, dict[str, Any]] = {}
        if path.is_file():
            for line in path.read_text(encoding="utf-8").splitlines():
                try:
                    entry = json.loads(line)
                    self.entries[entry["key"]] = entry
                except (json.JSONDecodeError, KeyError, TypeError):
                    continue

    def get(self, key: str) -> dict[str, Any] | None:
        return self.entries.get(key)

    def put(self, entry: dict[str, Any]) -> None:
        self.entries[entry["key"]] = entry
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(entry) + "\n")
            handle.flush()
            os.fsync(handle.fileno())

    def keep_only(self, keys: set[str]) -> None:
        """Drop entries of other settings or inputs (atomic rewrite)."""
        write_text_atomic(self.path, "".join(json.dumps(self.entries[key]) + "\n" for key in keys if key in self.entries))


def cache_key(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:32]


def points_digest(points: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(points, dtype=np.float64).tobytes()).hexdigest()[:16]


def truth_stamp(video: fx.VideoFixations) -> str:
    """Changes whenever the video's ground truth does (a rerun then scores the video again)."""
    if video.points is not None:
        text = "".join(f"{frame}:{points_digest(p)}" for frame, p in sorted(video.points.items()))
        return hashlib.sha256(text.encode()).hexdigest()[:16]
    assert video.annotation_dir is not None
    files = [p for folder in (video.annotation_dir, video.annotation_dir / "maps") if folder.is_dir()
             for p in sorted(folder.iterdir()) if p.is_file()]
    stats = [(p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in files]
    return hashlib.sha256(json.dumps(stats).encode()).hexdigest()[:16]
