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
    root = zarr_io.open_root(path, mode="a")
    if "store_kind" in root.attrs:
        zarr_io.check_schema(root, STORE_KIND, path)
    return root


def open_for_reading(path: str | Path) -> zarr.Group:
    if not Path(path).exists():
        raise FileNotFoundError(f"{path}: no pseudo-label store (run `avfix pseudolabel` first)")
    root = zarr_io.open_root(path, mode="r")
    zarr_io.check_schema(root, STORE_KIND, path)
    return root


def write_store_attrs(root: zarr.Group, attrs: dict[str, Any]) -> None:
    zarr_io.init_store_attrs(root, STORE_KIND, {"branches": list(BRANCHES), **attrs})


def write_video(root: zarr.Group, video_id: str, maps: VideoMaps, attrs: dict[str, Any], fingerprint: str) -> None:
    """Write one video's maps whole, then mark it complete (one writer per video)."""
    group = zarr_io.new_video_group(root, video_id, attrs)
    for spec in ALL_ARRAYS:
        data = np.asarray(getattr(maps, spec.name))
        array = zarr_io.create_array(group, spec, data.shape)
        array[...] = data.astype(spec.dtype)
    zarr_io.mark_complete(group, fingerprint)


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
