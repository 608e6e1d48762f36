"""pseudo.zarr: per video and frame the SCAM maps, selection boxes, probabilities and the pseudo-GT (the
pseudolabel stage's output; its schema is declared here, its layout shown by `python -m stores.schema`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from stores import faults, fencing, zarr_io
from stores.chunks import read_rows
from stores.schema import StoreAttrs, StoreSchema, VideoAttrs, doc
from stores.zarr_io import ArraySpec

CHUNK_T = 16
BRANCHES = ("S", "ST", "SA")

COARSE_CAM = ArraySpec("coarse_cam", ("t", "branch", "y", "x"), "float16", CHUNK_T,
                       doc="coarse CAM of the tag's class per branch, in [0, 1]")
FINE_CAM = ArraySpec("fine_cam", ("t", "branch", "y", "x"), "float16", CHUNK_T,
                     doc="fine CAM pasted back into the box, in [0, 1]")
BRANCH_PROB = ArraySpec("branch_prob", ("t", "stage", "branch"), "float32", 1024, fill_value=float("nan"),
                        doc="P(tag) per branch, stage 0 coarse, 1 fine")
BRANCH_VALID = ArraySpec("branch_valid", ("t", "branch"), "bool", 1024, fill_value=False,
                         doc="False: the branch gave no map (SA without event audio)")
EVENT_PROB = ArraySpec("event_prob", ("t",), "float32", 1024, fill_value=float("nan"),
                       doc="P(the frame's audio is event-related)")
BOX = ArraySpec("box", ("t", "box_coord"), "int32", 1024, fill_value=-1,
                doc="selection box [y0, y1, x0, x1], inclusive, map pixels")
HAS_BOX = ArraySpec("has_box", ("t",), "bool", 1024, fill_value=False, doc="False: nothing selected, hence no pseudo-GT")
FUSED = ArraySpec("fused", ("t", "y", "x"), "float16", CHUNK_T, doc="fused map before smoothing")
PSEUDO_GT = ArraySpec("pseudo_gt", ("t", "y", "x"), "float16", CHUNK_T, doc="the pseudo fixation map, in [0, 1]")
HAS_PSEUDO_GT = ArraySpec("has_pseudo_gt", ("t",), "bool", 1024, fill_value=False,
                          doc="False: no pseudo-GT for this frame (never read it as zeros)")

ALL_ARRAYS = (COARSE_CAM, FINE_CAM, BRANCH_PROB, BRANCH_VALID, EVENT_PROB, BOX, HAS_BOX, FUSED, PSEUDO_GT, HAS_PSEUDO_GT)
_SPECS = {spec.name: spec for spec in ALL_ARRAYS}


@dataclass(kw_only=True)
class PseudoStoreAttrs(StoreAttrs):
    classes: list[str] = doc("class names (class index = position)", default_factory=list)
    branches: list[str] = doc("the branch axis: S, ST, SA", default_factory=lambda: list(BRANCHES))
    checkpoints: dict[str, str] = doc("classifier name -> SHA-256 of the checkpoint the maps were made with",
                                      default_factory=dict)
    accuracy: dict[str, dict[str, float]] = doc("classifier name -> {train, val} accuracy", default_factory=dict)
    train_videos: list[str] = doc("videos the classifiers were trained on", default_factory=list)
    val_videos: list[str] = doc("videos held out to validate them", default_factory=list)
    features_store: str = doc("the features store the maps were made from", "")


@dataclass(kw_only=True)
class PseudoVideo(VideoAttrs):
    label: str = doc("the video's tag", "")
    class_index: int = doc("its position in classes", -1)
    has_audio: bool = doc("whether the video has audio", False)
    n_frames: int = doc("frames", 0)
    map_size: int = doc("side of the stored maps", 0)
    split: str = doc("train or val: which side of the classifiers' split the video was on", "")
    features_fingerprint: str = doc("the fingerprint of the features the maps were made from", "")
    sa_skipped_reason: str | None = doc("why the SA branch gave no map (no audio stream)")
    final_settings: dict[str, Any] = doc("fusion, smoothing and threshold settings of the pseudo-GT", default_factory=dict)
    coarse_fingerprint: str | None = doc("the fingerprint of the coarse maps and boxes (reused when only later settings change)")


SCHEMA: StoreSchema[PseudoStoreAttrs, PseudoVideo] = StoreSchema(
    kind="pseudo", file_name="pseudo.zarr", made_by="avfix pseudolabel",
    description="SCAM maps, selection boxes, probabilities and the pseudo-GT per frame",
    arrays=ALL_ARRAYS, store_type=PseudoStoreAttrs, video_type=PseudoVideo, reuse_attrs=("coarse_fingerprint",),
    coords={"branch": BRANCHES, "stage": ("coarse", "fine"), "box_coord": ("y0", "y1", "x0", "x1")},
)  # fmt: skip


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


def array_shapes(n_frames: int, map_size: int) -> dict[str, tuple[int, ...]]:
    n_branches = len(BRANCHES)
    return {
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


def write_video(root: zarr.Group, video_id: str, maps: VideoMaps, attrs: PseudoVideo, fingerprint: str,
                algorithm_version: int) -> None:  # fmt: skip
    """Write one video's maps whole, then mark it complete (one writer per video)."""
    n_frames, map_size = maps.pseudo_gt.shape[0], maps.pseudo_gt.shape[-1]
    group = SCHEMA.create_video(root, video_id, attrs, array_shapes(n_frames, map_size))
    write_block(group, 0, {spec.name: getattr(maps, spec.name) for spec in ALL_ARRAYS})
    SCHEMA.mark_complete(group, fingerprint, algorithm_version)


def write_block(group: zarr.Group, start: int, arrays: dict[str, np.ndarray]) -> None:
    """Write frames [start, start + n) of the named arrays (blocks start on chunk boundaries or are whole)."""
    for name, data in arrays.items():
        spec = _SPECS[name]
        data = np.asarray(data)
        fencing.check()
        group[name][start : start + data.shape[0]] = data.astype(spec.dtype, copy=False)
        faults.reached("chunk")


# The per-frame arrays (one value or a few per frame) are chunked by 1024 frames, so one chunk spans
# several segments of a long video: jobs return these rows and the coordinating process writes them, one
# writer per chunk. The maps (chunks of CHUNK_T frames) are written by the jobs themselves.
FRAME_ROWS = (BRANCH_VALID.name, EVENT_PROB.name, BOX.name, HAS_BOX.name, HAS_PSEUDO_GT.name)


@dataclass
class FrameRows:
    """Frames [start, start + n) of the per-frame arrays of one video, gathered block by block."""

    start: int
    arrays: dict[str, list[np.ndarray]] = field(default_factory=dict)  # name in FRAME_ROWS -> blocks
    probs: dict[int, list[np.ndarray]] = field(default_factory=dict)  # branch_prob's stage -> blocks

    def add(self, arrays: dict[str, np.ndarray], stage: int | None = None, probs: np.ndarray | None = None) -> None:
        """The next block's rows (of the named per-frame arrays, and of `stage`'s branch probabilities)."""
        for name, rows in arrays.items():
            if name not in FRAME_ROWS:
                raise ValueError(f"{name} is not a per-frame array of pseudo.zarr")
            self.arrays.setdefault(name, []).append(np.asarray(rows))
        if stage is not None and probs is not None:
            self.probs.setdefault(stage, []).append(np.asarray(probs))

    def write(self, group: zarr.Group) -> None:
        write_block(group, self.start, {name: np.concatenate(rows) for name, rows in self.arrays.items()})
        for stage, rows in self.probs.items():
            write_branch_prob(group, self.start, stage, np.concatenate(rows))


def write_branch_prob(group: zarr.Group, start: int, stage: int, probs: np.ndarray) -> None:
    """Probabilities (n, branch) of one stage (0 coarse, 1 fine) for frames [start, start + n)."""
    fencing.check()
    group[BRANCH_PROB.name][start : start + probs.shape[0], stage] = probs.astype(np.float32, copy=False)
    faults.reached("chunk")


def read_block(group: zarr.Group, names: tuple[str, ...], start: int = 0, stop: int | None = None) -> dict[str, np.ndarray]:
    """Frames [start, stop) of the named arrays, every chunk checked (`stores.chunks`)."""
    return {name: read_rows(group[name], start, stop) for name in names}  # type: ignore[arg-type]


def read_video(root: zarr.Group, video_id: str, names: tuple[str, ...] = ("pseudo_gt", "has_pseudo_gt")) -> dict[str, np.ndarray]:
    group = zarr_io.video_group(root, video_id)
    if group is None or not zarr_io.is_complete(group):
        raise KeyError(f"video {video_id!r} has no complete pseudo-labels")
    return read_block(group, names)


def open_video(store: Path | str, video_id: str) -> zarr.Group:
    """A video's group for a worker filling its arrays (the coordinating process created it)."""
    return zarr_io.open_video_for_rows(store, video_id)
