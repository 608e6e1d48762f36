"""features.zarr: per video, the stored frames, optical flow and per-frame audio windows.

Layout (Zarr v3, zstd, chunked along t, consolidated once a stage finishes):

    features.zarr/                 attrs: store_kind="features", schema_version, classes, failures, ...
      videos/<video_id>/           attrs: label, source_path, source_size, source_hash, fps, n_frames,
                                          width, height, has_audio, settings, status, fingerprint, ...
        frames  uint8   (t, y, x, c)
        flow    float16 (t, flow_component, flow_y, flow_x)  flow from frame t−1 to t (zeros at t = 0),
                                          component 0 = dx, 1 = dy, in pixels of the stored frame
        audio   float16 (t, freq, time)   log spectrogram window of frame t (all zeros without audio)
        t       float64 (t,)              frame time in seconds from the first stored frame
        freq    float32 (freq,)           spectrogram bin frequency (Hz)
        time    float32 (time,)           spectrogram segment centre (s) from the window start

The 1-D arrays `t`, `freq`, `time` become coordinates under `xarray.open_zarr(path, group=...)`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import xarray as xr
import zarr

from stores import zarr_io
from stores.zarr_io import ArraySpec

STORE_KIND = "features"
STORE_NAME = "features.zarr"
CHUNK_T = 16

# zstd level 1: compressing was the largest cost of extract at level 3, for a few % fewer bytes
# (356 px photos: ratio 1.40 vs 1.48, 0.7 vs 1.5 ms per frame; 178 px flow: 1.23 vs 1.31, 0.26 vs 0.65 ms).
FRAMES = ArraySpec("frames", ("t", "y", "x", "c"), "uint8", CHUNK_T, zstd_level=1)
FLOW = ArraySpec("flow", ("t", "flow_component", "flow_y", "flow_x"), "float16", CHUNK_T, zstd_level=1)
AUDIO = ArraySpec("audio", ("t", "freq", "time"), "float16", CHUNK_T, zstd_level=1)
TIMES = ArraySpec("t", ("t",), "float64", 4096)
FREQS = ArraySpec("freq", ("freq",), "float32", 4096)
SEGMENT_TIMES = ArraySpec("time", ("time",), "float32", 4096)


@dataclass(frozen=True)
class VideoShape:
    """Everything needed to preallocate one video's arrays."""

    n_frames: int
    height: int
    width: int
    flow_height: int
    flow_width: int
    n_freq: int
    n_time: int


def store_path(workspace: str | Path) -> Path:
    return Path(workspace) / STORE_NAME


def open_for_writing(path: str | Path) -> zarr.Group:
    return zarr_io.open_kind_for_writing(path, STORE_KIND)


def open_for_reading(path: str | Path) -> zarr.Group:
    """Open an existing features store, with a clear error when it is missing or of another schema."""
    return zarr_io.open_kind_for_reading(path, STORE_KIND, "avfix extract")


def write_store_attrs(root: zarr.Group, classes: list[str], settings: dict[str, Any]) -> None:
    zarr_io.init_store_attrs(root, STORE_KIND, {"classes": classes, "settings": settings})


def preallocate_video(
    root: zarr.Group, video_id: str, shape: VideoShape, attrs: dict[str, Any]
) -> zarr.Group:
    """(Re)create a video's group with all arrays at their final shape, marked in progress."""
    group = zarr_io.new_video_group(root, video_id, attrs)
    t = shape.n_frames
    zarr_io.create_array(group, FRAMES, (t, shape.height, shape.width, 3))
    zarr_io.create_array(group, FLOW, (t, 2, shape.flow_height, shape.flow_width))
    zarr_io.create_array(group, AUDIO, (t, shape.n_freq, shape.n_time))
    zarr_io.create_array(group, TIMES, (t,))
    zarr_io.create_array(group, FREQS, (shape.n_freq,))
    zarr_io.create_array(group, SEGMENT_TIMES, (shape.n_time,))
    return group


def write_axes(group: zarr.Group, frame_times: np.ndarray, freqs: np.ndarray, segment_times: np.ndarray) -> None:
    group[TIMES.name][:] = frame_times
    group[FREQS.name][:] = freqs
    group[SEGMENT_TIMES.name][:] = segment_times


def open_video_arrays(path: str | Path, video_id: str) -> dict[str, zarr_io.DirectChunks | zarr_io.ZarrRows]:
    """A worker's writers of one video's arrays (opened by path: workers share no objects)."""
    group = zarr.open_group(
        str(path), mode="r+", path=f"{zarr_io.VIDEOS}/{video_id}", zarr_format=3, use_consolidated=False
    )
    return {spec.name: zarr_io.row_writer(path, group[spec.name]) for spec in (FRAMES, FLOW, AUDIO)}  # type: ignore[arg-type]


def write_segment(arrays: dict[str, zarr_io.DirectChunks | zarr_io.ZarrRows], start: int, frames: np.ndarray,
                  flow: np.ndarray, audio: np.ndarray | None) -> None:  # fmt: skip
    """Write frames [start, start + len) of one video. Segments start on chunk boundaries."""
    arrays[FRAMES.name].write(start, frames)
    arrays[FLOW.name].write(start, to_float16(flow))
    if audio is not None:  # no audio: the array keeps its fill value 0 and no chunk is written
        arrays[AUDIO.name].write(start, to_float16(audio))


def to_float16(values: np.ndarray) -> np.ndarray:
    """C-ordered float16, rounded as numpy rounds; torch converts with the CPU's F16C, 5x numpy's speed."""
    return torch.from_numpy(np.ascontiguousarray(values)).to(torch.float16).numpy()


def video_attrs(root: zarr.Group, video_id: str) -> dict[str, Any] | None:
    group = zarr_io.video_group(root, video_id)
    return None if group is None else dict(group.attrs)


def complete_videos(root: zarr.Group) -> list[str]:
    return zarr_io.complete_video_ids(root)


def open_video_dataset(path: str | Path, video_id: str) -> xr.Dataset:
    """One video as an xarray Dataset (frames, flow, audio with named dimensions and coordinates)."""
    return xr.open_zarr(str(path), group=f"{zarr_io.VIDEOS}/{video_id}", consolidated=False)


class VideoReader:
    """Read-only block access to one video's arrays (inference reads a few chunks at a time)."""

    def __init__(self, path: str | Path, video_id: str) -> None:
        self.video_id = video_id
        self.group = zarr.open_group(
            str(path), mode="r", path=f"{zarr_io.VIDEOS}/{video_id}", zarr_format=3, use_consolidated=False
        )
        self.n_frames = int(self.group[FRAMES.name].shape[0])

    def read(self, name: str, start: int, stop: int) -> np.ndarray:
        """Frames [start, stop) of array `name`, the range clamped to the video."""
        start, stop = max(start, 0), min(stop, self.n_frames)
        return np.asarray(self.group[name][start:stop])

    def shape(self, name: str) -> tuple[int, ...]:
        return tuple(self.group[name].shape)
