"""Scoring one batch of the evaluate stage: the ground truth as tensors, every row's maps (map sources
and baselines) post-processed and resized to the truth's size (SPEC §5.2 steps 2-3), and their scores
(`models/metrics.py`), plus the settings and state a run shares between batches."""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from models import metrics
from pipeline.common.progress import Progress
from pipeline.evaluate import baselines as base
from pipeline.evaluate import fixations as fx
from pipeline.evaluate.cache import ScoreCache
from pipeline.evaluate.config import EvaluateConfig, EvaluateSummary
from pipeline.evaluate.maps import ModelMaps

# --- ground truth batches ------------------------------------------------------------------------------


@dataclass
class TruthBatch:
    items: list[fx.Item]
    size: tuple[int, int]
    points: list[np.ndarray]  # per item, (K, 2) x, y inside the frame
    fixations: Tensor  # (B, H, W) bool
    density: Tensor  # (B, H, W) float64
    other: Tensor  # (B, H, W) bool: negatives of the shuffled AUC
    rgb: list[np.ndarray] | None = None  # images layout, when a CAM baseline needs them


def _pad_points(points: list[np.ndarray], device: torch.device) -> tuple[Tensor, Tensor]:
    longest = max([len(p) for p in points] + [1])
    packed = torch.zeros(len(points), longest, 2, dtype=torch.float64)
    valid = torch.zeros(len(points), longest, dtype=torch.bool)
    for row, xy in enumerate(points):
        if len(xy):
            packed[row, : len(xy)] = torch.from_numpy(np.ascontiguousarray(xy, dtype=np.float64))
            valid[row, : len(xy)] = True
    return packed.to(device), valid.to(device)


def fixation_tensors(points: list[np.ndarray], size: tuple[int, int], device: torch.device) -> Tensor:
    packed, valid = _pad_points(points, device)
    return metrics.fixation_map(packed, valid, size)


def density_from_points(points: list[np.ndarray], size: tuple[int, int], sigma_px: float,
                        device: torch.device) -> Tensor:
    packed, valid = _pad_points(points, device)
    return metrics.fixation_density(packed, valid, size, sigma_px)


# --- scoring ---------------------------------------------------------------------------------------------


@dataclass
class ProcessedMaps:
    maps: Tensor  # (B, H, W) float64 at the truth's size; rows of absent maps are NaN
    status: list[str]  # per item: "ok", "missing" or "empty-map"
    resized: int  # maps whose size differed from the ground truth's


def process_maps(raw: list[np.ndarray | None] | Tensor, size: tuple[int, int], post_sigma: float,
                 device: torch.device) -> ProcessedMaps:
    """postprocessMap at each map's own size, then resize to the truth's size (SPEC §5.2 steps 2-3)."""
    if isinstance(raw, Tensor):
        groups = {tuple(raw.shape[-2:]): (list(range(raw.shape[0])), raw.to(device))}
        batch = raw.shape[0]
    else:
        batch = len(raw)
        by_shape: dict[tuple[int, int], list[int]] = defaultdict(list)
        for index, array in enumerate(raw):
            if array is not None:
                by_shape[tuple(array.shape[:2])].append(index)
        groups = {shape: (rows, torch.from_numpy(np.stack([raw[r] for r in rows])).to(device))
                  for shape, rows in by_shape.items()}
    out: Tensor | None = None
    status = ["missing"] * batch
    resized = 0
    for shape, (rows, stack) in groups.items():
        empty = metrics.empty_maps(stack).tolist()
        processed = metrics.resize_maps(metrics.postprocess_map(stack, post_sigma), size)
        if len(rows) == batch:  # every map present and of one size: no scatter copy
            out = processed
        else:
            if out is None:
                out = torch.full((batch, *size), torch.nan, dtype=torch.float64, device=device)
            out[torch.tensor(rows, device=device)] = processed
        for row, is_empty in zip(rows, empty):
            status[row] = "empty-map" if is_empty else "ok"
        resized += len(rows) if tuple(shape) != tuple(size) else 0
    if out is None:
        out = torch.full((batch, *size), torch.nan, dtype=torch.float64, device=device)
    return ProcessedMaps(out, status, resized)


@contextlib.contextmanager
def cpu_threads(count: int) -> Iterator[None]:
    """Torch intra-op CPU threads set to `count` inside the block (0: leave as is)."""
    previous = torch.get_num_threads()
    if count > 0:
        torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def score_maps(truth: TruthBatch, processed: ProcessedMaps, generator: torch.Generator, n_splits: int,
               no_fixation: np.ndarray, no_density: np.ndarray) -> list[dict[str, float | None]]:
    """Per item {metric: score or None}; None for absent maps, undefined scores (NaN), and metrics whose
    ground truth is empty (`no_fixation`: NSS, AUC-J, s-AUC; `no_density`: CC, SIM, KLD)."""
    batch = len(truth.items)
    present = [i for i, s in enumerate(processed.status) if s == "ok"]
    values = {name: np.full(batch, np.nan) for name in metrics.METRICS}
    if present:
        def pick(tensor: Tensor) -> Tensor:
            return tensor if len(present) == batch else tensor[torch.tensor(present, device=tensor.device)]

        # Cache-sized slices on the CPU; a GPU takes the whole batch in one go.
        chunk = metrics.CHUNK_PIXELS if processed.maps.device.type == "cpu" else processed.maps[0].numel() * batch
        scores = metrics.all_metrics(
            pick(processed.maps), pick(truth.density), pick(truth.fixations), pick(truth.other),
            generator=generator, n_splits=n_splits, chunk_pixels=chunk,
        )  # fmt: skip
        for name, tensor in scores.items():
            values[name][present] = tensor.cpu().numpy()
    for name in metrics.FIXATION_METRICS:
        values[name][no_fixation] = np.nan
    for name in metrics.DENSITY_METRICS:
        values[name][no_density] = np.nan
    return [{name: _finite_or_none(values[name][i]) for name in metrics.METRICS} for i in range(batch)]


def _finite_or_none(value: float) -> float | None:
    return float(value) if np.isfinite(value) else None


def _generator(*parts: Any) -> torch.Generator:
    digest = hashlib.sha256(json.dumps(parts, default=str).encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") & ((1 << 63) - 1))


# --- one batch of every row ----------------------------------------------------------------------------


@dataclass
class EvaluateContext:
    """The settings and state one run shares between its units and batches."""

    config: EvaluateConfig
    device: torch.device
    sources: list[ModelMaps]
    baselines: tuple[str, ...]
    cam: base.CamBaseline | None
    problems: fx.Problems
    cache: ScoreCache
    progress: Progress
    summary: EvaluateSummary
    settings_key: str
    used_keys: set[str] = field(default_factory=set)

    @property
    def rows(self) -> list[str]:
        return [s.name for s in self.sources] + list(self.baselines)


def method_maps(context: EvaluateContext, truth: TruthBatch,
                load: Any) -> tuple[dict[str, ProcessedMaps], dict[str, list]]:
    """Processed maps of every row for one truth batch (`load(source)` gives a source's raw maps), and
    the CAM baseline's top-1 class and probability per item."""
    config = context.config
    batch, size = len(truth.items), truth.size
    raw: dict[str, Any] = {source.name: load(source) for source in context.sources}
    cam_top: dict[str, list] = {}
    if context.baselines:
        center = base.center_maps(batch, size, config.baseline, context.device)
        raw[base.CENTER] = center
        if context.cam is not None:
            assert truth.rgb is not None
            cams = context.cam.maps(truth.rgb, size)
            raw[base.CAM] = cams.maps
            raw[base.CENTER_CAM] = cams.maps * center
            cam_top = {item.item_id: [c, p] for item, c, p in zip(truth.items, cams.top_class, cams.top_probability)}
    out = {name: process_maps(raw[name], size, config.post_sigma, context.device) for name in context.rows}
    return out, cam_top


def score_batch(context: EvaluateContext, truth: TruthBatch, load: Any, generator_parts: tuple,
                unit: dict[str, Any]) -> None:
    """Score every row on one batch; append the per-item records and counts to `unit`."""
    processed, cam_top = method_maps(context, truth, load)
    truth.rgb = None  # frees the decoded images before scoring
    unit.setdefault("cam_top", {}).update(cam_top)
    resized = unit["resized"]
    records = unit["records"]
    n_fixations = truth.fixations.flatten(1).sum(dim=1).tolist()
    empty_density = (~(truth.density > 0).flatten(1).any(dim=1)).cpu().numpy()
    no_fixation = np.asarray(n_fixations) == 0
    per_row = {}
    for name, maps in processed.items():
        per_row[name] = score_maps(truth, maps, _generator(*generator_parts, name),
                                   context.config.shuffle_splits, no_fixation, empty_density)
        resized[name] = resized.get(name, 0) + maps.resized
    for index, item in enumerate(truth.items):
        records.append({
            "id": item.item_id, "video": item.video, "frame": item.frame, "image": item.image,
            "n_fixations": int(n_fixations[index]), "empty_density": bool(empty_density[index]),
            "scores": {name: per_row[name][index] for name in processed},
            "status": {name: processed[name].status[index] for name in processed},
        })  # fmt: skip
