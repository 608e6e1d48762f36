"""predictions.zarr: per video the predicted saliency map of every frame, at the source video's size.

Layout (Zarr v3, zstd, chunked along t, consolidated once a stage finishes):

    predictions.zarr/              attrs: store_kind="predictions", schema_version, checkpoint,
                                          checkpoint_sha256, settings, failures, avfix_version
      videos/<video_id>/           attrs: source_path, source_sha256, fps, n_frames, width, height,
                                          features_settings, status, fingerprint, ...
        saliency      uint8   (t, y, x)   the post-processed map (SPEC §4.6: σ = 7 blur, max-normalised
                                          to 255, resized to the source size)
        has_saliency  bool    (t,)        False for frames that got no prediction (never read as zeros)
        t             float64 (t,)        frame time (s) from the first frame

Maps are stored as 8-bit like the original JPEG outputs, but losslessly. Writes stream: a video's
arrays are preallocated, filled chunk by chunk, and marked complete last.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr
import zarr

from stores import zarr_io
from stores.zarr_io import ArraySpec

STORE_KIND = "predictions"
STORE_NAME = "predictions.zarr"
CHUNK_T = 16

SALIENCY = ArraySpec("saliency", ("t", "y", "x"), "uint8", CHUNK_T)
HAS_SALIENCY = ArraySpec("has_saliency", ("t",), "bool", 4096, fill_value=False)
TIMES = ArraySpec("t", ("t",), "float64", 4096)


def store_path(workspace: str | Path) -> Path:
    return Path(workspace) / STORE_NAME


def open_for_writing(path: str | Path) -> zarr.Group:
    return zarr_io.open_kind_for_writing(path, STORE_KIND)


def open_for_reading(path: str | Path) -> zarr.Group:
    """Open an existing predictions store, with a clear error when it is missing or of another schema."""
    return zarr_io.open_kind_for_reading(path, STORE_KIND, "avfix predict")


def write_store_attrs(root: zarr.Group, attrs: dict[str, Any]) -> None:
    zarr_io.init_store_attrs(root, STORE_KIND, attrs)


def preallocate_video(
    root: zarr.Group, video_id: str, n_frames: int, height: int, width: int, attrs: dict[str, Any]
) -> zarr.Group:
    """(Re)create a video's group with its arrays at their final shape, marked in progress."""
    group = zarr_io.new_video_group(root, video_id, {**attrs, "n_frames": n_frames, "height": height, "width": width})
    zarr_io.create_array(group, SALIENCY, (n_frames, height, width))
    zarr_io.create_array(group, HAS_SALIENCY, (n_frames,))
    zarr_io.create_array(group, TIMES, (n_frames,))
    return group


def write_times(group: zarr.Group, times: np.ndarray) -> None:
    group[TIMES.name][:] = times


def write_frames(group: zarr.Group, start: int, saliency: np.ndarray, has_saliency: np.ndarray) -> None:
    """Frames [start, start + len) of one video; saliency uint8 (n, y, x), has_saliency bool (n,)."""
    stop = start + saliency.shape[0]
    group[SALIENCY.name][start:stop] = saliency.astype(np.uint8, copy=False)
    group[HAS_SALIENCY.name][start:stop] = has_saliency.astype(bool, copy=False)


def mark_complete(group: zarr.Group, fingerprint: str, extra: dict[str, Any] | None = None) -> None:
    zarr_io.mark_complete(group, fingerprint, extra)


def is_up_to_date(root: zarr.Group, video_id: str, fingerprint: str) -> bool:
    return zarr_io.is_complete(zarr_io.video_group(root, video_id), fingerprint)


def complete_videos(root: zarr.Group) -> list[str]:
    return zarr_io.complete_video_ids(root)


def video_attrs(root: zarr.Group, video_id: str) -> dict[str, Any] | None:
    group = zarr_io.video_group(root, video_id)
    return None if group is None else dict(group.attrs)


def read_saliency(root: zarr.Group, video_id: str, start: int = 0, stop: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(saliency uint8 (n, y, x), has_saliency bool (n,)) of frames [start, stop) of a complete video."""
    group = zarr_io.video_group(root, video_id)
    if group is None or not zarr_io.is_complete(group):
        raise KeyError(f"video {video_id!r} has no complete predictions")
    return np.asarray(group[SALIENCY.name][start:stop]), np.asarray(group[HAS_SALIENCY.name][start:stop])


def open_video_dataset(path: str | Path, video_id: str) -> xr.Dataset:
    return xr.open_zarr(str(path), group=f"{zarr_io.VIDEOS}/{video_id}", consolidated=False)
