"""The per-video passes of pseudolabel (coarse maps; fine maps and fusion; smoothing and threshold; with
a frozen backbone, its cached maps of the frames and of the crops) as independent jobs that any process
seeing the workspace can run: this one, a dask worker, or a torchrun rank. A long video is cut into
segments (`segment_bounds`), one job each, so that it is spread over the processes too.

A job names the classifiers it uses by checkpoint (name and SHA-256); the process that runs it builds
them from those files once and keeps them, so every process computes with the same weights and writes
the same bytes. A job writes only its own segment's map chunks and returns its rows of the per-frame
arrays (`pstore.FrameRows`); the coordinating process creates the groups, writes those rows and the
attributes, and marks a video complete once all of its segments are back (`pipeline.pseudolabel.run`).
Segments are whole blocks of every pass and whole chunks of every map, so the bytes do not depend on
where the segments start.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from models.classifiers import Branch, Stage
from models.device import resolve_device
from pipeline.common.allocator import release_free_memory, tune_allocator
from pipeline.common.feature_cache import block_step
from pipeline.common.files import sha256_file
from pipeline.common.progress import Progress
from pipeline.pseudolabel.config import PseudolabelConfig, VideoInfo
from pipeline.pseudolabel.frozen import COARSE as CACHED_COARSE
from pipeline.pseudolabel.frozen import FINE as CACHED_FINE
from pipeline.pseudolabel.frozen import ScamCache
from pipeline.pseudolabel.maps import SMOOTH_BLOCK, SCAMModels, coarse_pass, fine_pass, smoothing_pass
from pipeline.pseudolabel.stage import COARSE, FINE, checkpoint_folder
from pipeline.pseudolabel.training import build_classifier
from stores import cache as cstore
from stores import features as fstore
from stores import pseudo as pstore
from stores.chunks import ChunkError
from stores.fencing import Fence, fenced
from stores.integrity import mark_damaged

# The final maps take two passes: smoothing a segment reads the fused maps of its neighbours' frames.
COARSE_PASS, FINE_PASS, SMOOTH_PASS = "coarse maps", "fine maps", "pseudo-GT"
# The frozen backbone's cached maps: of every frame at the coarse size, of every selection box's crop.
CACHED_FRAMES, CACHED_CROPS = "cached backbone maps", "cached crop maps"
CACHE_PASSES = {CACHED_FRAMES: CACHED_COARSE, CACHED_CROPS: CACHED_FINE}  # job kind -> the cache's array
DAMAGED = "damaged"  # the input stamp of a failure on damaged features: retried once extract remade them


@dataclass(frozen=True)
class PassJob:
    """One video's (or one segment's) coarse pass, fine pass or smoothing, or part of the frozen
    backbone's cache (a key of `CACHE_PASSES`)."""

    kind: str
    workspace: str
    config: PseudolabelConfig
    info: VideoInfo
    n_classes: int
    classifiers: tuple[tuple[str, str], ...]  # (name, SHA-256) of every classifier checkpoint the pass uses
    embedding_dim: int  # of the cached audio embeddings (frozen backbone)
    event_prob: np.ndarray | None = None  # coarse pass: the video's per-frame event probability
    boxes: tuple[np.ndarray, np.ndarray] | None = None  # cached crop maps: the video's boxes (T, 4), (T,)
    frames: tuple[int, int] | None = None  # the segment [start, stop) of the video; None: all of it
    fence: Fence | None = None  # the coordinator's hold of pseudo.zarr's lock: writes stop once it is lost

    @property
    def segment(self) -> slice:
        return slice(*self.frames) if self.frames is not None else slice(0, self.info.n_frames)


@dataclass(frozen=True)
class PassOutcome:
    job: PassJob
    failure: str | None = None
    input_stamp: str = ""  # of a failure: the features' fingerprint, or DAMAGED
    rows: pstore.FrameRows | None = None  # the segment's per-frame rows, for the coordinator to write


def segment_step(config: PseudolabelConfig) -> int:
    """Frames a segment's start is a multiple of: whole blocks of every pass (so a segment computes
    what the whole video's run computes, bit for bit) and whole chunks of every map written."""
    cache_blocks = block_step([cstore.CHUNK_T], config.infer_batch)
    return math.lcm(config.infer_batch, SMOOTH_BLOCK, pstore.CHUNK_T, cstore.CHUNK_T, cache_blocks)


def segment_bounds(n_frames: int, config: PseudolabelConfig) -> list[tuple[int, int]]:
    """[start, stop) of each segment of a video: about `segment_frames` long, at least one step."""
    step = segment_step(config)
    length = max(step, math.ceil(config.segment_frames / step) * step)
    return [(start, min(start + length, n_frames)) for start in range(0, n_frames, length)]


_state: dict[str, Any] = {}
_state_lock = threading.Lock()


def _models_and_cache(job: PassJob, device: torch.device) -> tuple[SCAMModels, ScamCache | None]:
    """The job's classifiers (and the frozen backbone's cache reader), built once per process and set."""
    key = (job.workspace, job.classifiers, str(device), job.config)
    with _state_lock:
        if _state.get("key") != key:
            _state.clear()
            cache = None
            if job.config.frozen:
                cache = ScamCache(Path(job.workspace), job.config, device, Progress(enabled=False), job.embedding_dim,
                                  writable=False)  # fmt: skip
            _state.update(key=key, cache=cache, models=_load_models(job, device, cache))
        return _state["models"], _state["cache"]


def _load_models(job: PassJob, device: torch.device, cache: ScamCache | None) -> SCAMModels:
    models = SCAMModels()
    folder = checkpoint_folder(Path(job.workspace))
    for name, sha in job.classifiers:
        path = folder / f"{name}.pt"
        if sha256_file(path) != sha:  # the coordinator's classifier, not one trained since
            raise RuntimeError(f"{path} changed while the maps were being made (expected SHA-256 {sha[:12]})")
        branch_name, stage_name = name.split("_", 1)
        model = build_classifier(job.config, Branch(branch_name), Stage(stage_name), job.n_classes, cache)
        model.load_state_dict(torch.load(path, map_location="cpu", weights_only=False)["model"])
        target = models.coarse if f"_{stage_name}" == COARSE else models.fine
        target[Branch(branch_name)] = model.to(device).eval()
    return models


def classifier_names(names: list[str], kind: str) -> list[str]:
    """The classifiers a pass uses: the coarse ones for the coarse pass, the fine ones for the fine pass,
    none for smoothing and the cache's."""
    if kind in CACHE_PASSES or kind == SMOOTH_PASS:
        return []
    suffix = COARSE if kind == COARSE_PASS else FINE
    return [name for name in names if name.endswith(suffix)]


def run_pass(job: PassJob, device: str | None = None) -> PassOutcome:
    """Run one video's pass and write its arrays (not its attributes); bad input becomes the outcome's
    failure, any other exception is a bug and propagates."""
    tune_allocator()  # a worker of a cluster avfix did not start
    where = resolve_device(device or job.config.device)
    # Smoothing needs no network: a process that only smooths does not build the classifiers.
    models, cache = _models_and_cache(job, where) if job.kind != SMOOTH_PASS else (SCAMModels(), None)
    try:
        with fenced(job.fence):
            return _run_pass(job, where, models, cache)
    finally:
        release_free_memory()


def _run_pass(job: PassJob, where: torch.device, models: SCAMModels, cache: ScamCache | None) -> PassOutcome:
    info, frames = job.info, job.segment
    features_path = fstore.SCHEMA.path(Path(job.workspace))
    try:
        if job.kind in CACHE_PASSES:
            assert cache is not None
            with torch.no_grad():
                cache.fill(CACHE_PASSES[job.kind], info, job.boxes, frames)
            return PassOutcome(job)
        reader = fstore.VideoReader(features_path, info.video_id)
        group = pstore.open_video(pstore.SCHEMA.path(Path(job.workspace)), info.video_id)
        with torch.no_grad():
            if job.kind == COARSE_PASS:
                assert job.event_prob is not None
                rows = coarse_pass(info, reader, group, models, job.event_prob, job.config, where, cache, frames)
            elif job.kind == FINE_PASS:
                rows = fine_pass(info, reader, group, models, job.config, where, cache, frames)
            elif job.kind == SMOOTH_PASS:
                rows = smoothing_pass(info, reader, group, job.config, where, frames)
            else:
                raise ValueError(f"unknown pass {job.kind!r}")
    except ChunkError as exc:  # its features are damaged: extract makes them again
        return PassOutcome(job, f"{job.kind}: {exc}; {mark_damaged(exc)}", DAMAGED)
    except OSError as exc:  # one unreadable video must not stop the others
        return PassOutcome(job, f"{job.kind}: {type(exc).__name__}: {exc}", info.fingerprint)
    return PassOutcome(job, rows=rows)


def run_passes(jobs: list[PassJob], device: str | None = None) -> list[PassOutcome]:
    """Several jobs in this process, in order (a torchrun rank's share)."""
    return [run_pass(job, device) for job in jobs]
