"""features.zarr: per video the stored frames, optical flow and per-frame audio windows (the extract stage's
output; its schema is declared here, its layout shown by `python -m stores.schema`).

The 1-D arrays `t`, `freq`, `time` become coordinates under `xarray.open_zarr(path, group=...)`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import zarr
from zarr.codecs import Crc32cCodec

from stores import codecs, zarr_io
from stores.chunks import DirectChunks, ZarrRows, rows_of
from stores.schema import StoreAttrs, StoreSchema, VideoAttrs, doc
from stores.zarr_io import ArraySpec

CHUNK_T = 16
PREDICT_FILE_NAME = "predict-features.zarr"  # the same kind of store, for the videos predict decodes

# zstd level 1: compressing was the largest cost of extract at level 3, for a few % fewer bytes
# (356 px photos: ratio 1.40 vs 1.48, 0.7 vs 1.5 ms per frame; 178 px flow: 1.23 vs 1.31, 0.26 vs 0.65 ms).
FRAMES = ArraySpec("frames", ("t", "y", "x", "c"), "uint8", CHUNK_T, zstd_level=1,
                   doc="RGB frames at the stored size (one JPEG per frame, codec avfix.jpeg; or lossless)")
FLOW = ArraySpec("flow", ("t", "flow_component", "flow_y", "flow_x"), "float16", CHUNK_T, zstd_level=1,
                 doc="flow from frame t-1 to t (zeros at t = 0), component 0 = dx, 1 = dy, in stored-frame pixels, "
                     "in fixed steps (avfix.fixed_step)")
AUDIO = ArraySpec("audio", ("t", "freq", "time"), "float16", CHUNK_T, zstd_level=1,
                  doc="log spectrogram window of frame t (all zeros without audio)")
TIMES = ArraySpec("t", ("t",), "float64", 4096, doc="frame time (s) from the first stored frame")
FREQS = ArraySpec("freq", ("freq",), "float32", 4096, doc="spectrogram bin frequency (Hz)")
SEGMENT_TIMES = ArraySpec("time", ("time",), "float32", 4096, doc="spectrogram segment centre (s) within the window")


def encodings(frame_codec: str = "jpeg", quality: int = 95, subsampling: str = "444",
              flow_step: float = 0.0) -> dict[str, zarr_io.Encoding]:  # fmt: skip
    """The frames' and flow's codecs where they are not the default (uint8 / float16 + zstd): frames as
    JPEG unless `frame_codec` is "lossless", flow in `flow_step` pixel steps unless it is 0."""
    chosen = {}
    if frame_codec == "jpeg":
        chosen[FRAMES.name] = zarr_io.Encoding(serializer=codecs.JpegFramesCodec(quality, subsampling),
                                               compressors=(Crc32cCodec(),))  # fmt: skip
    elif frame_codec != "lossless":
        raise ValueError(f"unknown frame codec {frame_codec!r} (jpeg or lossless)")
    if flow_step > 0:
        chosen[FLOW.name] = zarr_io.Encoding(filters=(codecs.FixedStepCodec(flow_step),),
                                             compressors=zarr_io.codecs(FLOW.zstd_level))  # fmt: skip
    return chosen


@dataclass(kw_only=True)
class FeaturesStoreAttrs(StoreAttrs):
    classes: list[str] = doc("the sorted labels of every input seen (class index = position)", default_factory=list)


@dataclass(kw_only=True)
class FeaturesVideo(VideoAttrs):
    label: str | None = doc("the video's tag (none for videos to predict)")
    source_path: str = doc("the input file, resolved", "")
    source_name: str = doc("the input file's name as given (the id is derived from it)", "")
    source_size: int = doc("its size in bytes when extracted", 0)
    source_mtime_ns: int = doc("its modification time when extracted", 0)
    source_sha256: str = doc("its content hash", "")
    source_codec: str = doc("its video codec", "")
    source_width: int = doc("its frame width", 0)
    source_height: int = doc("its frame height", 0)
    source_fps: float = doc("its native frame rate", 0.0)
    source_frames: int = doc("its frame count", 0)
    source_audio_rate: int | None = doc("its audio sample rate")
    source_audio_channels: int | None = doc("its audio channels")
    fps: float = doc("the stored frame rate", 0.0)
    n_frames: int = doc("stored frames", 0)
    width: int = doc("stored frame width", 0)
    height: int = doc("stored frame height", 0)
    has_audio: bool = doc("whether the file has an audio stream", False)
    settings: dict[str, Any] = doc("the extract settings it was made with", default_factory=dict)
    pending_fingerprint: str | None = doc("while in progress: the fingerprint its finished segments belong to")
    segments_done: list[list[int]] = doc("while in progress: [start, stop] of the finished segments", default_factory=list)


SCHEMA: StoreSchema[FeaturesStoreAttrs, FeaturesVideo] = StoreSchema(
    kind="features", file_name="features.zarr", made_by="avfix extract",
    description="frames, optical flow and per-frame audio windows",
    arrays=(FRAMES, FLOW, AUDIO, TIMES, FREQS, SEGMENT_TIMES),
    store_type=FeaturesStoreAttrs, video_type=FeaturesVideo,
    reuse_attrs=("segments_done", "pending_fingerprint"), coords={"flow_component": ("dx", "dy")},
)  # fmt: skip


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

    def array_shapes(self) -> dict[str, tuple[int, ...]]:
        t = self.n_frames
        return {
            FRAMES.name: (t, self.height, self.width, 3), FLOW.name: (t, 2, self.flow_height, self.flow_width),
            AUDIO.name: (t, self.n_freq, self.n_time), TIMES.name: (t,), FREQS.name: (self.n_freq,),
            SEGMENT_TIMES.name: (self.n_time,),
        }  # fmt: skip


def write_axes(group: zarr.Group, frame_times: np.ndarray, freqs: np.ndarray, segment_times: np.ndarray) -> None:
    for spec, values in ((TIMES, frame_times), (FREQS, freqs), (SEGMENT_TIMES, segment_times)):
        rows_of(group[spec.name]).write(0, values)  # checks the fence, then a fault point per chunk


def open_video_arrays(path: str | Path, video_id: str) -> dict[str, DirectChunks | ZarrRows]:
    """A worker's writers of one video's arrays (opened by path: workers share no objects)."""
    group = zarr.open_group(
        str(path), mode="r+", path=f"{zarr_io.VIDEOS}/{video_id}", zarr_format=3, use_consolidated=False
    )
    return {spec.name: rows_of(group[spec.name]) for spec in (FRAMES, FLOW, AUDIO)}  # type: ignore[arg-type]


def write_segment(arrays: dict[str, DirectChunks | ZarrRows], start: int, frames: np.ndarray,
                  flow: np.ndarray, audio: np.ndarray | None) -> None:  # fmt: skip
    """Write frames [start, start + len) of one video. Segments start on chunk boundaries."""
    arrays[FRAMES.name].write(start, frames)
    arrays[FLOW.name].write(start, to_float16(flow))
    if audio is None:  # no audio: all-zero windows, written like any other chunk (a missing one is damage)
        audio = np.zeros((frames.shape[0], *arrays[AUDIO.name].row_shape), dtype=np.float16)
    arrays[AUDIO.name].write(start, to_float16(audio))


def to_float16(values: np.ndarray) -> np.ndarray:
    """C-ordered float16, rounded as numpy rounds; torch converts with the CPU's F16C, 5x numpy's speed."""
    import torch  # here: reading a store (`avfix status`) needs no torch

    return torch.from_numpy(np.ascontiguousarray(values)).to(torch.float16).numpy()


class VideoReader:
    """Read-only block access to one video's arrays (inference reads a few chunks at a time)."""

    def __init__(self, path: str | Path, video_id: str) -> None:
        self.video_id = video_id
        self.group = zarr.open_group(
            str(path), mode="r", path=f"{zarr_io.VIDEOS}/{video_id}", zarr_format=3, use_consolidated=False
        )
        self.n_frames = int(self.group[FRAMES.name].shape[0])
        self._rows: dict[str, DirectChunks | ZarrRows] = {}

    def read(self, name: str, start: int, stop: int) -> np.ndarray:
        """Frames [start, stop) of array `name`, the range clamped to the video; every chunk is checked
        (a missing or damaged one raises `ChunkError`)."""
        if name not in self._rows:
            self._rows[name] = rows_of(self.group[name])  # type: ignore[arg-type]
        return self._rows[name].read_rows(start, min(stop, self.n_frames))

    def shape(self, name: str) -> tuple[int, ...]:
        return tuple(self.group[name].shape)
