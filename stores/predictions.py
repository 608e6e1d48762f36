"""predictions.zarr: per video the predicted saliency map of every frame, at the source video's size (the
predict stage's output; its schema is declared here, its layout shown by `python -m stores.schema`).

Maps are stored as 8-bit like the original JPEG outputs, but losslessly. Writes stream: a video's
arrays are preallocated, filled chunk by chunk, and marked complete last.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from stores import faults, fencing, zarr_io
from stores.chunks import read_rows
from stores.schema import StoreAttrs, StoreSchema, VideoAttrs, doc
from stores.zarr_io import ArraySpec

CHUNK_T = 16

SALIENCY = ArraySpec("saliency", ("t", "y", "x"), "uint8", CHUNK_T,
                     doc="the post-processed map at the source size (SPEC §4.6)")
HAS_SALIENCY = ArraySpec("has_saliency", ("t",), "bool", 4096, fill_value=False,
                         doc="False: no prediction for this frame (never read it as zeros)")
TIMES = ArraySpec("t", ("t",), "float64", 4096, doc="frame time (s) from the first frame")


@dataclass(kw_only=True)
class PredictionsStoreAttrs(StoreAttrs):
    checkpoint: str = doc("the STA checkpoint of the last run", "")
    checkpoint_sha256: str = doc("its SHA-256", "")
    features_store: str = doc("the features store of the decoded inputs", "")


@dataclass(kw_only=True)
class PredictionsVideo(VideoAttrs):
    source_path: str = doc("the input file", "")
    source_sha256: str = doc("its content hash", "")
    fps: float = doc("the stored frame rate", 0.0)
    n_frames: int = doc("frames", 0)
    height: int = doc("map height (the source's)", 0)
    width: int = doc("map width (the source's)", 0)
    features_settings: dict[str, Any] = doc("the extract settings of the decoded frames", default_factory=dict)
    checkpoint_sha256: str = doc("the checkpoint the maps came from", "")
    short_video: bool = doc("fewer than 3 frames: t-1 and t+1 were clamped", False)
    empty_maps: int = doc("frames whose map is all zero", 0)
    overlay_fingerprint: str | None = doc("the fingerprint of the overlay video made from these maps, if any")


SCHEMA: StoreSchema[PredictionsStoreAttrs, PredictionsVideo] = StoreSchema(
    kind="predictions", file_name="predictions.zarr", made_by="avfix predict",
    description="saliency maps of new videos", arrays=(SALIENCY, HAS_SALIENCY, TIMES),
    store_type=PredictionsStoreAttrs, video_type=PredictionsVideo,
)  # fmt: skip


def array_shapes(n_frames: int, height: int, width: int) -> dict[str, tuple[int, ...]]:
    return {SALIENCY.name: (n_frames, height, width), HAS_SALIENCY.name: (n_frames,), TIMES.name: (n_frames,)}


def write_frames(group: zarr.Group, start: int, saliency: np.ndarray, has_saliency: np.ndarray) -> None:
    """Frames [start, start + len) of one video; saliency uint8 (n, y, x), has_saliency bool (n,)."""
    write_saliency(group, start, saliency)
    stop = start + saliency.shape[0]
    group[HAS_SALIENCY.name][start:stop] = has_saliency.astype(bool, copy=False)


def write_saliency(group: zarr.Group, start: int, saliency: np.ndarray) -> None:
    """Maps of frames [start, start + len) (uint8 (n, y, x)). Several processes may fill one video at once
    when each writes whole chunks: `start` a multiple of CHUNK_T, the length too unless it ends the video."""
    stop = start + saliency.shape[0]
    fencing.check()
    group[SALIENCY.name][start:stop] = saliency.astype(np.uint8, copy=False)
    faults.reached("chunk")


def write_has_saliency(group: zarr.Group, has_saliency: np.ndarray) -> None:
    """The whole video's has_saliency flags, by the coordinating process once every map is written."""
    group[HAS_SALIENCY.name][:] = has_saliency.astype(bool, copy=False)


def open_video(store: Path | str, video_id: str) -> zarr.Group:
    """A video's group for a worker filling its maps (the coordinating process created it)."""
    return zarr_io.open_video_for_rows(store, video_id)


def read_saliency(root: zarr.Group, video_id: str, start: int = 0, stop: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(saliency uint8 (n, y, x), has_saliency bool (n,)) of frames [start, stop) of a complete video."""
    group = zarr_io.video_group(root, video_id)
    if group is None or not zarr_io.is_complete(group):
        raise KeyError(f"video {video_id!r} has no complete predictions")
    return read_rows(group[SALIENCY.name], start, stop), read_rows(group[HAS_SALIENCY.name], start, stop)  # type: ignore[arg-type]
