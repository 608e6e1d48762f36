"""The network half of predict as independent pieces: a video's frames split into segments, each
predicted and written by whichever process runs it (this one, a dask worker, or a torchrun rank).

A segment starts on a multiple of the batch size and of the store's chunk length, so every process
writes whole chunks of its own, and the batches are the ones a single process would run: the maps are
the same bit for bit however the segments are spread. Workers write only their segments' map chunks;
the coordinating process creates the video groups, writes the other arrays and the attributes, and
marks a video complete once every segment of it is back.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from models.device import resolve_device
from models.sta import STANet
from pipeline.common.allocator import release_free_memory, tune_allocator
from pipeline.common import media
from pipeline.predict.config import PredictConfig
from stores import features as fstore
from stores import predictions as pred_store
from stores.chunks import ChunkError
from stores.fencing import Fence, fenced
from stores.integrity import mark_damaged

@dataclass(frozen=True)
class Segment:
    """Frames [start, stop) of one video, with what a process needs to predict them on its own."""

    video_id: str
    start: int
    stop: int
    has_audio: bool
    source_hw: tuple[int, int]
    checkpoint: str
    checkpoint_sha: str
    features_path: str
    store: str
    config: PredictConfig
    fence: Fence | None = None  # the coordinator's hold of predictions.zarr's lock: writes stop once it is lost


@dataclass(frozen=True)
class SegmentOutcome:
    segment: Segment
    empty_maps: int = 0  # frames whose map is all zero
    failure: str | None = None  # why this segment's video failed (bad input or damaged features)
    input_changed: bool = False  # the failure is of the input file (else of the decoded features)


def segment_bounds(n_frames: int, batch_size: int, frames: int) -> list[tuple[int, int]]:
    """[start, stop) of each segment of a video of `n_frames` frames, about `frames` long."""
    step = math.lcm(batch_size, pred_store.CHUNK_T)
    length = max(step, math.ceil(frames / step) * step)
    return [(start, min(start + length, n_frames)) for start in range(0, n_frames, length)]


_models: dict[tuple[str, str, str], tuple[STANet, dict[str, Any]]] = {}
_models_lock = threading.Lock()


def _model(segment: Segment, device: torch.device) -> tuple[STANet, dict[str, Any]]:
    """The checkpoint's network, loaded once per process (and per device) and shared by its threads."""
    from pipeline.predict.run import load_model

    key = (segment.checkpoint, segment.checkpoint_sha, str(device))
    with _models_lock:
        if key not in _models:
            _models.clear()  # another checkpoint: the old one is not needed any more
            _models[key] = load_model(Path(segment.checkpoint), device)
        return _models[key]


def remember_model(checkpoint: Path, checkpoint_sha: str, device: torch.device, model: STANet,
                   saved: dict[str, Any]) -> None:
    """The coordinator's loaded network, so that segments run in this process do not load it again."""
    with _models_lock:
        _models.clear()
        _models[(str(checkpoint), checkpoint_sha, str(device))] = (model, saved)


def predict_segment(segment: Segment, device: str | None = None) -> SegmentOutcome:
    """Predict and write one segment's maps (run in any process that sees the workspace)."""
    tune_allocator()  # a worker of a cluster avfix did not start
    config = segment.config
    where = resolve_device(device or config.device)
    model, saved = _model(segment, where)
    try:
        with fenced(segment.fence):
            return _predict_segment(segment, config, where, model, saved)
    finally:
        release_free_memory()


def _predict_segment(segment: Segment, config: PredictConfig, where: torch.device, model: STANet,
                     saved: dict[str, Any]) -> SegmentOutcome:  # fmt: skip
    from pipeline.predict.run import predict_frames

    try:
        reader = fstore.VideoReader(Path(segment.features_path), segment.video_id)
        group = pred_store.open_video(segment.store, segment.video_id)
        empty = 0
        for start in range(segment.start, segment.stop, config.batch_size):
            stop = min(start + config.batch_size, segment.stop)
            maps = predict_frames(model, reader, start, stop, segment.has_audio, saved, segment.source_hw, config,
                                  where)  # fmt: skip
            pred_store.write_saliency(group, start, maps)
            empty += int((maps.reshape(maps.shape[0], -1).max(axis=1) == 0).sum())
    except ChunkError as exc:  # its decoded frames are damaged: decoded again on the next run
        return SegmentOutcome(segment, failure=f"{exc}; {mark_damaged(exc)}")
    except media.MediaError as exc:
        return SegmentOutcome(segment, failure=str(exc), input_changed=True)
    except OSError as exc:  # this video's input or output; any other exception is a bug
        return SegmentOutcome(segment, failure=f"{type(exc).__name__}: {exc}", input_changed=True)
    return SegmentOutcome(segment, empty_maps=empty)


def predict_segments(segments: list[Segment], device: str | None = None) -> list[SegmentOutcome]:
    """Several segments in this process, in order (a torchrun rank's share)."""
    return [predict_segment(segment, device) for segment in segments]


def no_missing_maps(n_frames: int) -> np.ndarray:
    return np.ones(n_frames, dtype=bool)
