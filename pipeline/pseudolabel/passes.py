"""The per-video passes of pseudolabel (coarse maps; fine maps, fusion and smoothing; with a frozen
backbone, its cached maps of the frames and of the crops) as independent jobs that any process seeing
the workspace can run: this one, a dask worker, or a torchrun rank.

A job names the classifiers it uses by checkpoint (name and SHA-256); the process that runs it builds
them from those files once and keeps them, so every process computes with the same weights and writes
the same bytes. A job writes only its own video's arrays; the coordinating process creates the groups,
writes the attributes and marks videos complete (`pipeline.pseudolabel.run`).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from models.classifiers import Branch, Stage
from models.device import resolve_device
from pipeline.common.files import sha256_file
from pipeline.common.progress import Progress
from pipeline.pseudolabel.config import PseudolabelConfig, VideoInfo
from pipeline.pseudolabel.frozen import COARSE as CACHED_COARSE
from pipeline.pseudolabel.frozen import FINE as CACHED_FINE
from pipeline.pseudolabel.frozen import ScamCache
from pipeline.pseudolabel.maps import SCAMModels, coarse_pass, fine_pass, smoothing_pass
from pipeline.pseudolabel.stage import COARSE, FINE, checkpoint_folder
from pipeline.pseudolabel.training import build_classifier
from stores import features as fstore
from stores import pseudo as pstore
from stores.chunks import ChunkError
from stores.integrity import mark_damaged

COARSE_PASS, FINAL_PASS = "coarse maps", "pseudo-GT"
# The frozen backbone's cached maps: of every frame at the coarse size, of every selection box's crop.
CACHED_FRAMES, CACHED_CROPS = "cached backbone maps", "cached crop maps"
CACHE_PASSES = {CACHED_FRAMES: CACHED_COARSE, CACHED_CROPS: CACHED_FINE}  # job kind -> the cache's array
DAMAGED = "damaged"  # the input stamp of a failure on damaged features: retried once extract remade them


@dataclass(frozen=True)
class PassJob:
    """One video's coarse pass (`COARSE_PASS`), fine pass and smoothing (`FINAL_PASS`), or part of the
    frozen backbone's cache (a key of `CACHE_PASSES`)."""

    kind: str
    workspace: str
    config: PseudolabelConfig
    info: VideoInfo
    n_classes: int
    classifiers: tuple[tuple[str, str], ...]  # (name, SHA-256) of every classifier checkpoint the pass uses
    embedding_dim: int  # of the cached audio embeddings (frozen backbone)
    event_prob: np.ndarray | None = None  # coarse pass: the video's per-frame event probability
    boxes: tuple[np.ndarray, np.ndarray] | None = None  # cached crop maps: the video's boxes (T, 4), (T,)


@dataclass(frozen=True)
class PassOutcome:
    job: PassJob
    failure: str | None = None
    input_stamp: str = ""  # of a failure: the features' fingerprint, or DAMAGED


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
    """The classifiers a pass uses: the coarse ones for the coarse pass, the fine ones for the final pass,
    none for the cache's."""
    if kind in CACHE_PASSES:
        return []
    suffix = COARSE if kind == COARSE_PASS else FINE
    return [name for name in names if name.endswith(suffix)]


def run_pass(job: PassJob, device: str | None = None) -> PassOutcome:
    """Run one video's pass and write its arrays (not its attributes); bad input becomes the outcome's
    failure, any other exception is a bug and propagates."""
    where = resolve_device(device or job.config.device)
    models, cache = _models_and_cache(job, where)
    info = job.info
    features_path = fstore.SCHEMA.path(Path(job.workspace))
    try:
        if job.kind in CACHE_PASSES:
            assert cache is not None
            with torch.no_grad():
                cache.fill(CACHE_PASSES[job.kind], info, job.boxes)
            return PassOutcome(job)
        reader = fstore.VideoReader(features_path, info.video_id)
        group = pstore.open_video(pstore.SCHEMA.path(Path(job.workspace)), info.video_id)
        with torch.no_grad():
            if job.kind == COARSE_PASS:
                assert job.event_prob is not None
                coarse_pass(info, reader, group, models, job.event_prob, job.config, where, cache)
            else:
                fine_pass(info, reader, group, models, job.config, where, cache)
                smoothing_pass(info, reader, group, job.config, where)
    except ChunkError as exc:  # its features are damaged: extract makes them again
        return PassOutcome(job, f"{job.kind}: {exc}; {mark_damaged(exc)}", DAMAGED)
    except OSError as exc:  # one unreadable video must not stop the others
        return PassOutcome(job, f"{job.kind}: {type(exc).__name__}: {exc}", info.fingerprint)
    return PassOutcome(job)


def run_passes(jobs: list[PassJob], device: str | None = None) -> list[PassOutcome]:
    """Several jobs in this process, in order (a torchrun rank's share)."""
    return [run_pass(job, device) for job in jobs]
