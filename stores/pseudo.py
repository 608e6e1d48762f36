"""pseudo.zarr: per video and frame the SCAM maps, selection boxes, probabilities and the pseudo-GT.

Layout (Zarr v3, zstd, chunked along t):

    pseudo.zarr/                   attrs: store_kind="pseudo", schema_version, classes, branches,
                                          settings, checkpoints {name: sha256}, accuracy {name: {...}},
                                          features_store, failures
      videos/<video_id>/           attrs: label, class_index, has_audio, n_frames, map_size, status,
                                          fingerprint, features_fingerprint, sa_skipped_reason
        coarse_cam     float16 (t, branch, y, x)   coarse CAM of the GT class per branch, in [0, 1]
        fine_cam       float16 (t, branch, y, x)   fine CAM pasted back into the frame, in [0, 1]
        branch_prob    float32 (t, stage, branch)  softmax probability of the GT class (stage 0 coarse, 1 fine)
        branch_valid   bool    (t, branch)         False where a branch gave no map (SA without event audio)
        event_prob     float32 (t,)                P(event-related audio) of frame t
        box            int32   (t, box_coord)      selection box [y0, y1, x0, x1] (inclusive) at map size
        has_box        bool    (t,)                False: the coarse map selected nothing (no pseudo-GT)
        fused          float16 (t, y, x)           fused fine map before temporal smoothing
        pseudo_gt      float16 (t, y, x)           the pseudo fixation map, in [0, 1]
        has_pseudo_gt  bool    (t,)                False: no pseudo-GT for that frame (never read as zeros)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr
import zarr

from stores import zarr_io
from stores.zarr_io import ArraySpec

STORE_KIND = "pseudo"
STORE_NAME = "pseudo.zarr"
CHUNK_T = 16
BRANCHES = ("S", "ST", "SA")

COARSE_CAM = ArraySpec("coarse_cam", ("t", "branch", "y", "x"), "float16", CHUNK_T)
FINE_CAM = ArraySpec("fine_cam", ("t", "branch", "y", "x"), "float16", CHUNK_T)
BRANCH_PROB = ArraySpec("branch_prob", ("t", "stage", "branch"), "float32", 1024, fill_value=float("nan"))
BRANCH_VALID = ArraySpec("branch_valid", ("t", "branch"), "bool", 1024, fill_value=False)
EVENT_PROB = ArraySpec("event_prob", ("t",), "float32", 1024, fill_value=float("nan"))
BOX = ArraySpec("box", ("t", "box_coord"), "int32", 1024, fill_value=-1)
HAS_BOX = ArraySpec("has_box", ("t",), "bool", 1024, fill_value=False)
FUSED = ArraySpec("fused", ("t", "y", "x"), "float16", CHUNK_T)
PSEUDO_GT = ArraySpec("pseudo_gt", ("t", "y", "x"), "float16", CHUNK_T)
HAS_PSEUDO_GT = ArraySpec("has_pseudo_gt", ("t",), "bool", 1024, fill_value=False)

ALL_ARRAYS = (COARSE_CAM, FINE_CAM, BRANCH_PROB, BRANCH_VALID, EVENT_PROB, BOX, HAS_BOX, FUSED, PSEUDO_GT, HAS_PSEUDO_GT)
_SPECS = {spec.name: spec for spec in ALL_ARRAYS}


@dataclass
class VideoMaps:
    """Everything pseudolabel computes for one video, as numpy arrays (t first)."""

    coarse_cam: np.ndarray
    fine_cam: np.ndarray
    branch_prob: np.ndarray
    branch_valid: np.ndarray
    event_prob: np.ndarray
    box: np.ndarray
    has_box: np.ndarray
    fused: np.ndarray
    pseudo_gt: np.ndarray
    has_pseudo_gt: np.ndarray


def store_path(workspace: str | Path) -> Path:
    return Path(workspace) / STORE_NAME


def open_for_writing(path: str | Path) -> zarr.Group:
    return zarr_io.open_kind_for_writing(path, STORE_KIND)


def open_for_reading(path: str | Path) -> zarr.Group:
    """Open an existing pseudo-label store, with a clear error when it is missing or of another schema."""
    return zarr_io.open_kind_for_reading(path, STORE_KIND, "avfix pseudolabel")


def write_store_attrs(root: zarr.Group, attrs: dict[str, Any]) -> None:
    zarr_io.init_store_attrs(root, STORE_KIND, {"branches": list(BRANCHES), **attrs})


def write_video(root: zarr.Group, video_id: str, maps: VideoMaps, attrs: dict[str, Any], fingerprint: str) -> None:
    """Write one video's maps whole, then mark it complete (one writer per video)."""
    n_frames, map_size = maps.pseudo_gt.shape[0], maps.pseudo_gt.shape[-1]
    group = preallocate_video(root, video_id, n_frames, map_size, attrs)
    write_block(group, 0, {spec.name: getattr(maps, spec.name) for spec in ALL_ARRAYS})
    zarr_io.mark_complete(group, fingerprint)


def preallocate_video(root: zarr.Group, video_id: str, n_frames: int, map_size: int, attrs: dict[str, Any]) -> zarr.Group:
    """(Re)create a video's group with every array at its final shape, marked in progress.

    Arrays are then filled block by block (`write_block`), so memory does not grow with video length.
    """
    group = zarr_io.new_video_group(root, video_id, attrs)
    n_branches = len(BRANCHES)
    shapes = {
        COARSE_CAM.name: (n_frames, n_branches, map_size, map_size),
        FINE_CAM.name: (n_frames, n_branches, map_size, map_size),
        BRANCH_PROB.name: (n_frames, 2, n_branches),
        BRANCH_VALID.name: (n_frames, n_branches),
        EVENT_PROB.name: (n_frames,),
        BOX.name: (n_frames, 4),
        HAS_BOX.name: (n_frames,),
        FUSED.name: (n_frames, map_size, map_size),
        PSEUDO_GT.name: (n_frames, map_size, map_size),
        HAS_PSEUDO_GT.name: (n_frames,),
    }
    for spec in ALL_ARRAYS:
        zarr_io.create_array(group, spec, shapes[spec.name])
    return group


def open_video_group(root: zarr.Group, video_id: str) -> zarr.Group | None:
    return zarr_io.video_group(root, video_id)


def write_block(group: zarr.Group, start: int, arrays: dict[str, np.ndarray]) -> None:
    """Write frames [start, start + n) of the named arrays (blocks start on chunk boundaries or are whole)."""
    for name, data in arrays.items():
        spec = _SPECS[name]
        data = np.asarray(data)
        group[name][start : start + data.shape[0]] = data.astype(spec.dtype, copy=False)


def write_branch_prob(group: zarr.Group, start: int, stage: int, probs: np.ndarray) -> None:
    """Probabilities (n, branch) of one stage (0 coarse, 1 fine) for frames [start, start + n)."""
    group[BRANCH_PROB.name][start : start + probs.shape[0], stage] = probs.astype(np.float32, copy=False)


def read_block(group: zarr.Group, names: tuple[str, ...], start: int = 0, stop: int | None = None) -> dict[str, np.ndarray]:
    return {name: np.asarray(group[name][start:stop]) for name in names}


def mark_coarse_done(group: zarr.Group, coarse_fingerprint: str) -> None:
    """The coarse arrays (coarse_cam, probabilities, boxes, event_prob) are written and may be reused."""
    group.attrs["coarse_fingerprint"] = coarse_fingerprint


def coarse_is_done(group: zarr.Group | None, coarse_fingerprint: str) -> bool:
    return group is not None and group.attrs.get("coarse_fingerprint") == coarse_fingerprint


def mark_in_progress(group: zarr.Group) -> None:
    zarr_io.mark_in_progress(group)


def mark_complete(group: zarr.Group, fingerprint: str, extra: dict[str, Any] | None = None) -> None:
    zarr_io.mark_complete(group, fingerprint, extra)


def video_attrs(root: zarr.Group, video_id: str) -> dict[str, Any] | None:
    group = zarr_io.video_group(root, video_id)
    return None if group is None else dict(group.attrs)


def complete_videos(root: zarr.Group) -> list[str]:
    return zarr_io.complete_video_ids(root)


def is_up_to_date(root: zarr.Group, video_id: str, fingerprint: str) -> bool:
    return zarr_io.is_complete(zarr_io.video_group(root, video_id), fingerprint)


def read_video(root: zarr.Group, video_id: str, names: tuple[str, ...] = ("pseudo_gt", "has_pseudo_gt")) -> dict[str, np.ndarray]:
    group = zarr_io.video_group(root, video_id)
    if group is None or not zarr_io.is_complete(group):
        raise KeyError(f"video {video_id!r} has no complete pseudo-labels")
    return {name: np.asarray(group[name][...]) for name in names}


def open_video_dataset(path: str | Path, video_id: str) -> xr.Dataset:
    ds = xr.open_zarr(str(path), group=f"{zarr_io.VIDEOS}/{video_id}", consolidated=False)
    return ds.assign_coords(branch=list(BRANCHES), stage=["coarse", "fine"])
