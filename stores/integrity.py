"""Checking the stores' data: every chunk of every video re-read against its checksum (`avfix verify`),
and a video whose chunk is missing or damaged marked not complete, so the stage that made it makes it
again on the next run."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import zarr

from stores import zarr_io
from stores.chunks import ChunkError, DirectChunks, local_root
from stores.lock import StoreLock, StoreLocked
from stores.schema import StoreSchema, schemas


def schema_of(path: Path) -> StoreSchema | None:
    kind = zarr_io.open_root(path, mode="r").attrs.get("store_kind")
    return next((schema for schema in schemas() if schema.kind == kind), None)


def mark_damaged(error: ChunkError) -> str:
    """Mark the video of `error` not complete in its store (under the store's lock); returns what
    happened, for the user's one line."""
    try:
        schema = schema_of(error.store)
        with StoreLock(error.store):
            root = zarr_io.open_root(error.store, mode="r+")
            if schema is None or zarr_io.video_group(root, error.video_id) is None:
                return "not marked (no such video group)"
            schema.forget_video(root, error.video_id, damage=str(error))
    except StoreLocked as exc:
        return f"not marked ({exc})"
    return f"marked not complete: the stage that wrote {error.store.name} makes it again on the next run"


@dataclass
class StoreCheck:
    """What `verify` found in one store."""

    store: str
    videos: int = 0
    chunks: int = 0
    bytes: int = 0
    damaged: dict[str, str] = field(default_factory=dict)  # video id -> the first problem found
    # arrays without checksums (an earlier avfix) or in a layout only zarr reads
    unchecked: list[str] = field(default_factory=list)


def verify_store(path: Path, mark: bool = True) -> StoreCheck:
    """Re-read every chunk of every complete video of the store at `path`; with `mark`, damaged videos
    are marked not complete (under the store's lock)."""
    check = StoreCheck(str(path))
    schema = schema_of(path)
    if schema is None:
        raise zarr_io.StoreError(f"{path}: not an avfix store")
    root = zarr_io.open_root(path, mode="r")
    for video_id in schema.complete_videos(root):
        group = zarr_io.video_group(root, video_id)
        assert group is not None
        check.videos += 1
        problem = _check_video(group, check)
        if problem is not None:
            check.damaged[video_id] = problem
    if mark and check.damaged:
        with StoreLock(path):
            writable = zarr_io.open_root(path, mode="r+")
            for video_id, problem in check.damaged.items():
                schema.forget_video(writable, video_id, damage=problem)
    return check


def _check_video(group: zarr.Group, check: StoreCheck) -> str | None:
    for name, array in sorted(group.arrays()):
        root = local_root(array)
        direct = DirectChunks.for_array(root, array) if root is not None else None
        if direct is None:  # another layout (logged once): zarr reads it, without avfix's checks
            check.unchecked.append(f"{group.path}/{name}")
            continue
        if not direct.checksum:
            check.unchecked.append(f"{group.path}/{name}")
        try:
            for index in range(direct.n_chunks):
                check.bytes += direct.raw(index).nbytes if direct.checksum else direct.read(index).nbytes
                check.chunks += 1
        except ChunkError as exc:
            return str(exc)
    return None


def verify_workspace(paths: list[Path], mark: bool = True) -> tuple[list[StoreCheck], float]:
    """Every store of `paths` checked; returns the checks and the seconds it took."""
    began = time.perf_counter()
    checks = [verify_store(path, mark) for path in paths if path.exists()]
    return checks, time.perf_counter() - began
